"""What every SAE option hands the pipeline, and the checks shared by all of them."""

from __future__ import annotations

from dataclasses import dataclass

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
