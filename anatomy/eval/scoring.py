"""Score (prompt, response) texts with a model: summed response log-probs (causal LM) or the scalar
reward (reward model). Batched, no grad; the same tokenization as the audit (`encode_batch`).

With `eos` (the default) each response is ended by the end-of-sequence token, as TRL's DPO and
reward trainers end every completion: it is scored as the complete answer the model was trained to
prefer. `eos=False` scores it as a continuation of the prompt that may go on. `response_logps`
gives a causal LM's log-prob of each response token, end token included, from one pass: their sum
is the complete score, the end token's is how likely the model is to stop there (so the
continuation's score is their difference), and any single token can be read off (`first_difference`).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from anatomy.models.base import encode_batch


def _token_logps(model, tokenizer, texts, max_length: int, batch_size: int, eos: bool):
    """Per batch: each response token's log-prob (0 elsewhere), the input ids and the response mask,
    aligned (position t scores token t + 1)."""
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(texts), batch_size), desc="Scoring", unit="batch", leave=False):
        ids, mask, response, _ = encode_batch(tokenizer, texts[start:start + batch_size], max_length, eos)
        ids, mask, response = ids.to(device), mask.to(device), response.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        yield logps * response[:, 1:], ids[:, 1:], response[:, 1:]


@torch.no_grad()
def score(model, tokenizer, texts: list[tuple[str, str]], kind: str, max_length: int = 256, batch_size: int = 64,
          eos: bool = True) -> np.ndarray:
    """One number per text: sum of the response tokens' log-probs ("dpo") or the reward ("reward_model")."""
    if kind == "reward_model":
        out = []
        device = next(model.parameters()).device
        for start in tqdm(range(0, len(texts), batch_size), desc="Scoring", unit="batch", leave=False):
            ids, mask, _, _ = encode_batch(tokenizer, texts[start:start + batch_size], max_length, eos)
            out.append(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.squeeze(-1).float().cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
    out = [logps.sum(dim=1).cpu() for logps, _, _ in _token_logps(model, tokenizer, texts, max_length, batch_size, eos)]
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


@torch.no_grad()
def response_logps(model, tokenizer, texts: list[tuple[str, str]], max_length: int = 256,
                   batch_size: int = 64) -> list[tuple[np.ndarray, np.ndarray]]:
    """Causal LM, one pass: per text, its response's token ids, ended by the end token, and each
    token's log-prob. Over `max_length` the prompt is cut first (`encode_pair`), then the response
    from the right, end token first."""
    out = []
    for logps, ids, response in _token_logps(model, tokenizer, texts, max_length, batch_size, eos=True):
        for row_logps, row_ids, row_response in zip(logps.cpu(), ids.cpu(), response.cpu()):
            out.append((row_ids[row_response].numpy(), row_logps[row_response].double().numpy()))
    return out


def ends(ids: np.ndarray, eos_token_id: int) -> bool:
    """Whether a `response_logps` row still ends with its end token (over `max_length` it is cut first)."""
    return bool(len(ids)) and ids[-1] == eos_token_id


def stop_logp(ids: np.ndarray, logps: np.ndarray, eos_token_id: int) -> float:
    """The end token's log-prob in a `response_logps` row (0 where the end token was cut off)."""
    return float(logps[-1]) if ends(ids, eos_token_id) else 0.0


def first_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """The first position where two token id sequences differ (or where the shorter one ends), or
    None where they are the same."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    if len(diff):
        return int(diff[0])
    return None if len(a) == len(b) else n
