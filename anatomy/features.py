"""Featurize: prompt + response through the model, the response tokens through the SAE, pooled.

For every pair, both responses are run after their prompt (batched, no grad); the activations of
the response tokens at the SAE's hook are encoded by the SAE and pooled per response (max or mean),
giving sparse (n_pairs, d_sae) matrices for chosen and rejected. Along the way it keeps, per
feature, its top-activating token occurrences: the raw material of the evidence. Responses are
batched in order of length, so a batch pads little (real responses vary widely in length), and
every result is stored at its response's own place.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from anatomy.cache import cached_dir, stage_code, versions
from anatomy.data.schema import PreferencePair
from anatomy.errors import AnatomyError
from anatomy.models.base import LoadedModel, encode_pair, pad_batch
from anatomy.models.hooks import capture
from anatomy.saes.base import LoadedSAE

log = logging.getLogger(__name__)

POOLINGS = ("max", "mean")
ARRAYS = ("chosen_length", "rejected_length", "tokens", "offsets", "top_values", "top_where")


@dataclass
class Featurize:
    """How responses become feature vectors."""

    pooling: str = "max"  # pool a response's token activations: max | mean
    batch_size: int = 32  # pairs per forward pass (two sequences each)
    max_length: int = 256  # tokens per prompt + response (the prompt is cut first)
    top_examples: int = 32  # top-activating token occurrences kept per feature (for evidence)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise AnatomyError(f"featurize.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        for name in ("batch_size", "max_length", "top_examples"):
            if int(getattr(self, name)) <= 0:
                raise AnatomyError(f"featurize.{name} must be positive, got {getattr(self, name)}")

    def run(self, model: LoadedModel, sae: LoadedSAE, pairs: list[PreferencePair]) -> Features:
        return featurize(model, sae, pairs, self)

    def cached(self, model: LoadedModel, sae: LoadedSAE, pairs: list[PreferencePair]) -> tuple[Features, bool, str]:
        """`run` through the stage cache, keyed by this config, the model, the SAE and the pairs.
        -> (features, cache hit, key for downstream stages)"""
        texts = hashlib.sha256("\0".join(p.prompt + "\1" + p.chosen + "\1" + p.rejected for p in pairs).encode())
        key = {"featurize": asdict(self), "model": model.key, "sae": sae.key, "hook": sae.hook,
               "pairs": texts.hexdigest(), "code": stage_code(__name__),
               "versions": versions("torch", "transformers", "sae-lens"),
               "device": next(model.model.parameters()).device.type}  # (activations differ across them)
        folder, hit = cached_dir("features", key, lambda d: self.run(model, sae, pairs).save(d))
        return Features.load(folder), hit, folder.name

    def count_full(self, feats: Features) -> dict[str, float]:
        """`featurize/responses_at_max_length`: responses that fill all `max_length` tokens but the one
        prompt token always kept, so were cut unless exactly that long (warned about)."""
        fills = self.max_length - 1
        full = int((feats.chosen_length >= fills).sum() + (feats.rejected_length >= fills).sum())
        if full:
            log.warning("featurize: %d of %d responses fill all featurize.max_length=%d tokens: whatever is longer "
                        "is not read; raise featurize.max_length", full, 2 * len(feats.chosen_length), self.max_length)
        return {"featurize/responses_at_max_length": float(full)}


@dataclass
class Features:
    """Pooled activations plus what the evidence needs. Response r = 2*pair (+1 if rejected)."""

    chosen: sp.csr_matrix  # (n_pairs, d_sae)
    rejected: sp.csr_matrix  # (n_pairs, d_sae)
    chosen_length: np.ndarray  # response tokens per chosen response
    rejected_length: np.ndarray
    tokens: np.ndarray  # every response's token ids, concatenated
    offsets: np.ndarray  # response r's tokens are tokens[offsets[r]:offsets[r+1]]
    top_values: np.ndarray  # (top_examples, d_sae) strongest token activations, descending
    top_where: np.ndarray  # (top_examples, d_sae) index into `tokens` of each (-1: none)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def length_diff(self) -> np.ndarray:
        """Per pair, chosen's tokens minus rejected's (float64: what the length-controlled test fits)."""
        return self.chosen_length.astype(np.float64) - self.rejected_length

    def of_pairs(self, keep: np.ndarray) -> "Features":
        """The pairs a boolean mask keeps: their activations, lengths and tokens, in order. The top
        examples, which point into every pair's tokens, are left out (none): planning does not read them."""
        idx = np.flatnonzero(keep)
        responses = np.stack([2 * idx, 2 * idx + 1], axis=1).ravel()
        starts, ends = self.offsets[responses], self.offsets[responses + 1]
        tokens = np.concatenate([self.tokens[a:b] for a, b in zip(starts, ends)] or [self.tokens[:0]])
        offsets = np.concatenate([[0], np.cumsum(ends - starts)]).astype(self.offsets.dtype)
        return Features(self.chosen[idx], self.rejected[idx], self.chosen_length[idx], self.rejected_length[idx],
                        tokens, offsets, self.top_values[:0], self.top_where[:0])

    def save(self, folder: Path) -> None:
        sp.save_npz(folder / "chosen.npz", self.chosen)
        sp.save_npz(folder / "rejected.npz", self.rejected)
        np.savez(folder / "arrays.npz", **{k: getattr(self, k) for k in ARRAYS})

    @classmethod
    def load(cls, folder: Path) -> "Features":
        arrays = np.load(folder / "arrays.npz")
        return cls(sp.load_npz(folder / "chosen.npz").tocsr(), sp.load_npz(folder / "rejected.npz").tocsr(),
                   **{k: arrays[k] for k in ARRAYS})


def _sae_encode(sae, x: torch.Tensor) -> torch.Tensor:
    out = sae.encode(x)
    return out.to_dense() if out.is_sparse else out


def encode_responses(tok, pairs: list[PreferencePair], max_length: int
                     ) -> tuple[list[tuple[np.ndarray, int]], np.ndarray]:
    """Every response after its prompt (`encode_pair`; response r = 2 * pair, +1 if rejected), as
    int32 arrays (a tenth of a list's memory), and the order that batches similar lengths together.
    -> ([(ids, response start)], order)"""
    texts = [(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]
    encoded = [(np.asarray(ids, dtype=np.int32), start) for ids, start in (
        encode_pair(tok, prompt, response, max_length)
        for prompt, response in tqdm(texts, desc="Tokenizing", unit="response"))]
    return encoded, np.argsort([len(ids) for ids, _ in encoded], kind="stable")


@torch.no_grad()
def featurize(model: LoadedModel, sae: LoadedSAE, pairs: list[PreferencePair], cfg: Featurize) -> Features:
    if not pairs:
        raise AnatomyError("no pairs to featurize")
    tok, device = model.tokenizer, model.model.device
    k, d_sae = cfg.top_examples, sae.d_sae
    encoded, order = encode_responses(tok, pairs, cfg.max_length)
    lengths = np.array([len(ids) - start for ids, start in encoded])
    offsets = np.concatenate([[0], np.cumsum(lengths)])  # response r's tokens: tokens[offsets[r]:offsets[r + 1]]
    tokens = np.concatenate([ids[start:] for ids, start in encoded])
    top_values = torch.zeros(k, d_sae)
    top_where = torch.full((k, d_sae), -1, dtype=torch.long)
    pooled_rows: list[sp.csr_matrix] = []
    per_batch = 2 * cfg.batch_size  # two responses per pair
    for start in tqdm(range(0, len(encoded), per_batch), desc="Featurizing", unit="batch"):
        rows = order[start:start + per_batch]
        input_ids, mask, response, _ = pad_batch(tok, [encoded[r] for r in rows])
        acts = capture(model.model, sae.hook, input_ids.to(device), mask.to(device))
        token_acts = _sae_encode(sae.sae, acts[response.to(acts.device)].to(sae.sae.dtype)).float().cpu()
        seq_of_token = torch.arange(len(rows)).unsqueeze(1).expand_as(response)[response]
        pooled = torch.zeros(len(rows), d_sae)
        if cfg.pooling == "max":
            pooled.scatter_reduce_(0, seq_of_token.unsqueeze(1).expand_as(token_acts), token_acts, "amax")
        else:
            pooled.index_add_(0, seq_of_token, token_acts)
            pooled /= torch.bincount(seq_of_token, minlength=len(rows)).clamp(min=1).unsqueeze(1)
        pooled_rows.append(sp.csr_matrix(pooled.numpy()))
        # Running top-k occurrences per feature; `where` indexes the response tokens in pair order.
        position = (response.cumsum(dim=1) - 1)[response]
        where = (torch.from_numpy(offsets[rows])[seq_of_token] + position).unsqueeze(1).expand_as(token_acts)
        values = torch.cat([top_values, token_acts])
        top_values, idx = values.topk(k, dim=0)
        top_where = torch.cat([top_where, where]).gather(0, idx)
    pooled_all = sp.vstack(pooled_rows).tocsr()[np.argsort(order)]  # back to response order
    top_where[top_values <= 0] = -1
    return Features(
        chosen=pooled_all[0::2].astype(np.float32), rejected=pooled_all[1::2].astype(np.float32),
        chosen_length=lengths[0::2], rejected_length=lengths[1::2], tokens=tokens, offsets=offsets,
        top_values=top_values.numpy(), top_where=top_where.numpy(),
    )
