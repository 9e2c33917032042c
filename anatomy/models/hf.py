"""Any Hugging Face causal LM, by hub name (`EleutherAI/pythia-70m`, `gpt2`) or local folder."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from anatomy.cache import folder_digest, hub_commit
from anatomy.errors import AnatomyError
from anatomy.models.base import LoadedModel, ModelSpec, check_device, parse_device


def model_spec(name: str, revision: str | None = None) -> ModelSpec:
    """Read only the model's config (no weights): width and depth."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as err:
        raise AnatomyError(f"model {name!r}: cannot read its config ({err.__class__.__name__}: {err}); "
                           "check model.name (a hub id or a local folder) and model.revision") from err
    config = getattr(config, "text_config", config)
    return ModelSpec(name, int(config.hidden_size), int(config.num_hidden_layers))


def load_pretrained(name: str, revision: str | None = None, dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
        model = AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as err:  # its config was read (model_spec), but not its tokenizer or weights
        raise AnatomyError(f"model {name!r}: cannot load its tokenizer or weights ({err.__class__.__name__}: "
                           f"{err}); check model.name and model.revision") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    key = weights_key(name, revision, dtype)
    return LoadedModel(model, tokenizer, model_spec(name, revision), name, revision, key)


def weights_key(name: str, revision: str | None, dtype: str) -> str:
    """What the stage cache knows a pretrained model by: a local folder by its path and each file's
    size and modification time, a hub model by its name, revision and the commit its files came from;
    and the dtype. So a folder saved over with new weights, or another revision, never meets the SAE,
    features or baseline cached for the old ones."""
    if Path(name).is_dir():
        source: dict = {"folder": folder_digest(name)}
    else:
        source = {"hub": name, "revision": revision, "commit": hub_commit(name, revision)}
    digest = hashlib.sha256(json.dumps({**source, "dtype": dtype}, sort_keys=True).encode()).hexdigest()[:16]
    return f"{name}@{digest}"


@dataclass
class HFModel:
    """A pretrained causal LM from the hub or a folder written by `save_pretrained`."""

    name: str = "EleutherAI/pythia-70m"  # hub id or local folder
    revision: str | None = None  # hub revision (branch, tag or commit); None = default branch
    dtype: str = "float32"  # torch dtype of the weights: float32 | bfloat16 | float16
    device: str = "cpu"  # torch device for the audit, training (TRL) and evaluation, e.g. cuda

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise AnatomyError(f"model.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        parse_device(self.device)

    def check(self, trains: bool) -> None:
        """The device exists here and training can run on it (before any weight loads)."""
        check_device(self.device, trains)

    def spec(self) -> ModelSpec:
        return model_spec(self.name, self.revision)

    def load(self, texts: list[tuple[str, str]]) -> tuple[LoadedModel, bool]:
        """The model (texts unused: a pretrained model is not fitted to the study). Never cached."""
        return load_pretrained(self.name, self.revision, self.dtype, self.device), False
