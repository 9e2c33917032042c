"""What every model option hands the pipeline, and the one way a (prompt, response) is tokenized."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from anatomy.errors import AnatomyError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """Shape facts known before any weight is loaded: enough to validate hooks and SAE widths."""

    name: str
    d_model: int
    n_layers: int


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec
    path: str  # hub name or folder it was loaded from
    revision: str | None = None  # the hub revision it was loaded at (None: the default branch, or a folder)
    key: str = ""  # what the stage cache knows these weights by (SAE, features, baseline); default: path

    def __post_init__(self):
        self.key = self.key or self.path


def parse_device(device: str) -> torch.device:
    """`model.device` as a torch device, or an error naming the key (no device is touched)."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise AnatomyError(f"model.device={device!r} is not a torch device (cpu, cuda, cuda:1, mps): {err}") from None


def check_device(device: str, trains: bool) -> None:
    """Before any weight loads: the device exists here, and training can run on it.

    HF's Trainer (under TRL) trains in one process on `cuda:0` whatever the model was loaded on, and
    wraps the model in DataParallel when several GPUs are visible; so a GPU other than the first is
    an error (choose it with CUDA_VISIBLE_DEVICES) and several visible GPUs a warning."""
    dev = parse_device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AnatomyError(f"model.device={device!r}: CUDA is not available here (torch {torch.__version__}, "
                               f"CUDA build {torch.version.cuda}); use model.device=cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise AnatomyError(f"model.device={device!r}: only {count} CUDA device(s) are visible (cuda:0.."
                               f"cuda:{count - 1})")
        if trains and dev.index:
            raise AnatomyError(f"model.device={device!r}: HF's Trainer trains on cuda:0 in a single process, so "
                               f"training would move the model off cuda:{dev.index}; run with "
                               f"CUDA_VISIBLE_DEVICES={dev.index} and model.device=cuda instead")
        if trains and count > 1:
            log.warning("model.device=%s: %d GPUs are visible, and HF's Trainer trains with DataParallel over all "
                        "of them (a step is trainer.batch_size pairs per GPU); set CUDA_VISIBLE_DEVICES to one "
                        "GPU for the config's batch", device, count)
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise AnatomyError(f"model.device={device!r}: MPS is not available here; use model.device=cpu")


# Names of learned position-embedding tables (GPT-2 and GPT-Neo `wpe`, OPT and BioGPT `embed_positions`):
# a sequence longer than the model's positions indexes past the table and fails in the forward pass.
POSITION_TABLES = ("wpe", "embed_positions", "position_embeddings")


def position_limit(model: PreTrainedModel) -> int | None:
    """How many positions the model can read, where a learned table fixes it (rotary and ALiBi models: None)."""
    learned = any(isinstance(m, torch.nn.Embedding) and name.rsplit(".", 1)[-1] in POSITION_TABLES
                  for name, m in model.named_modules())
    if not learned:
        return None
    config = getattr(model.config, "text_config", model.config)
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return int(limit) if limit else None


def check_lengths(model: LoadedModel, lengths: dict[str, int | None]) -> None:
    """Every configured sequence length fits the model's learned positions, before any of them is used."""
    limit = position_limit(model.model)
    over = [f"{key}={value}" for key, value in lengths.items() if limit and value and value > limit]
    if over:
        raise AnatomyError(f"{', '.join(over)}: model {model.path!r} has learned position embeddings for "
                           f"{limit} tokens, and a longer input fails; set {'each' if len(over) > 1 else 'it'} "
                           f"to at most {limit}")


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, max_length: int,
                eos: bool = False) -> tuple[list[int], int]:
    """Token ids of prompt + response, and where the response starts.

    Prompt and response are tokenized separately (special tokens only on the prompt), so the
    response's tokens are the same whatever the prompt. With `eos`, the response ends with the
    tokenizer's end-of-sequence token, as TRL's trainers end every completion: a complete response.
    Over `max_length`, the prompt is cut from the left first, then the response from the right, but
    one token of the prompt (or the BOS token) always stays: the response's first token is read, and
    scored, in context.
    """
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else []
    (r,) = response_ids(tokenizer, [response], eos)
    if not p and tokenizer.bos_token_id is not None:
        p = [tokenizer.bos_token_id]
    r = r[:max_length - 1] if p else r[:max_length]
    p = p[max(0, len(p) + len(r) - max_length):]
    return p + r, len(p)


def response_ids(tokenizer: PreTrainedTokenizerBase, responses: list[str], eos: bool = False) -> list[list[int]]:
    """Each response's token ids as `encode_pair` reads it: no special tokens, then (with `eos`) the
    end-of-sequence token. One batched call."""
    ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"] if responses else []
    end = [tokenizer.eos_token_id] if eos and tokenizer.eos_token_id is not None else []
    return [list(r) + end for r in ids]


def responses_cut(tokenizer: PreTrainedTokenizerBase, texts: list[tuple[str, str]], max_length: int,
                  eos: bool = False) -> int:
    """How many (prompt, response) texts `encode_pair` cuts into the response itself (its prompt is
    cut first, down to the one token kept, so only responses of `max_length` tokens or more lose
    tokens of their own)."""
    return sum(len(r) >= max_length for r in response_ids(tokenizer, [r for _, r in texts], eos))


def encode_batch(tokenizer: PreTrainedTokenizerBase, texts: list[tuple[str, str]], max_length: int,
                 eos: bool = False):
    """(prompt, response) texts as one right-padded batch: input ids, attention mask, response mask
    (True on the response's tokens), and the response token ids of each row."""
    return pad_batch(tokenizer, [encode_pair(tokenizer, p, r, max_length, eos) for p, r in texts])


def pad_batch(tokenizer: PreTrainedTokenizerBase, encoded: list[tuple[list[int], int]]):
    """`encode_pair` outputs as one right-padded batch (see `encode_batch`)."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    response = torch.zeros_like(input_ids, dtype=torch.bool)
    for i, (ids, start) in enumerate(encoded):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        response[i, start: len(ids)] = True
    return input_ids, mask, response, [ids[start:] for ids, start in encoded]
