"""Any Hugging Face causal LM, by hub name (`EleutherAI/pythia-70m`, `gpt2`) or local folder."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anatomy.errors import AnatomyError
from anatomy.models.base import LoadedModel, ModelSpec


def model_spec(name: str, revision: str | None = None) -> ModelSpec:
    """Read only the model's config (no weights): width and depth."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as err:
        raise AnatomyError(f"model {name!r}: cannot read its config ({err.__class__.__name__}: {err})") from err
    config = getattr(config, "text_config", config)
    return ModelSpec(name, int(config.hidden_size), int(config.num_hidden_layers))


def load_pretrained(name: str, revision: str | None = None, dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=getattr(torch, dtype))
    model.to(device).eval()
    return LoadedModel(model, tokenizer, model_spec(name, revision), name)


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

    def spec(self) -> ModelSpec:
        return model_spec(self.name, self.revision)

    def load(self, texts: list[tuple[str, str]]) -> tuple[LoadedModel, bool]:
        """The model (texts unused: a pretrained model is not fitted to the study). Never cached."""
        return load_pretrained(self.name, self.revision, self.dtype, self.device), False
