"""What every SAE option hands the pipeline, and the checks shared by all of them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from anatomy.errors import AnatomyError
from anatomy.models.base import ModelSpec
from anatomy.models.hooks import canonical_hook_name, parse_hook


@dataclass
class LoadedSAE:
    sae: object  # a sae_lens.SAE (encode / W_dec)
    hook: str  # TransformerLens-style hook point it reads, e.g. blocks.2.hook_resid_post
    d_in: int
    d_sae: int
    source: str  # folder or release/id
    key: str = ""  # what the stage cache knows this SAE by (the features' key); default: source

    def __post_init__(self):
        self.key = self.key or self.source

    @cached_property
    def fingerprint(self) -> str:
        """Its decoder weights, hashed: the same for this SAE wherever it is loaded from, and different
        for another (another seed, model or config, or one trained on another kind of machine)."""
        import hashlib

        weights = self.sae.W_dec.detach().float().cpu().contiguous().numpy()
        return hashlib.sha256(weights.tobytes()).hexdigest()[:16]


def check_sae(spec: ModelSpec, hook: str, d_in: int, where: str) -> str:
    """The canonical hook name, or an error if the hook is missing or the widths differ."""
    hook = canonical_hook_name(hook)
    parse_hook(hook, spec.n_layers)
    if d_in != spec.d_model:
        raise AnatomyError(
            f"{where}: the SAE's input width d_in={d_in} differs from the model's width {spec.d_model} "
            f"at {hook} (model {spec.name!r}); pick an SAE trained on this model"
        )
    return hook
