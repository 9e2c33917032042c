"""Score (prompt, response) texts with a model: summed response log-probs (causal LM) or the scalar
reward (reward model). Batched, no grad; the same tokenization as the audit (`encode_batch`).

With `eos` (the default) each response is ended by the end-of-sequence token, as TRL's DPO and
reward trainers end every completion: it is scored as the complete answer the model was trained to
prefer. `eos=False` scores it as a continuation of the prompt that may go on. `score_with_stop`
gives both from one pass: the complete score and, of it, the end token's log-prob (how likely the
model is to stop there), so the continuation's score is their difference.
"""

from __future__ import annotations

import numpy as np
import torch

from anatomy.models.base import encode_batch


def _token_logps(model, tokenizer, texts, max_length: int, batch_size: int, eos: bool):
    """Per batch: each response token's log-prob (0 elsewhere) and the input ids, aligned."""
    device = next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        ids, mask, response, _ = encode_batch(tokenizer, texts[start:start + batch_size], max_length, eos)
        ids, mask, response = ids.to(device), mask.to(device), response.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        yield logps * response[:, 1:], ids[:, 1:], mask[:, 1:]


@torch.no_grad()
def score(model, tokenizer, texts: list[tuple[str, str]], kind: str, max_length: int = 256, batch_size: int = 64,
          eos: bool = True) -> np.ndarray:
    """One number per text: sum of the response tokens' log-probs ("dpo") or the reward ("reward_model")."""
    if kind == "reward_model":
        out = []
        device = next(model.parameters()).device
        for start in range(0, len(texts), batch_size):
            ids, mask, _, _ = encode_batch(tokenizer, texts[start:start + batch_size], max_length, eos)
            out.append(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.squeeze(-1).float().cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
    out = [logps.sum(dim=1).cpu() for logps, _, _ in _token_logps(model, tokenizer, texts, max_length, batch_size, eos)]
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


@torch.no_grad()
def score_with_stop(model, tokenizer, texts: list[tuple[str, str]], max_length: int = 256,
                    batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Causal LM, one pass: (complete-response log-probs, the end token's log-prob in each).

    `complete - stop` is the response scored as a continuation (`score(..., eos=False)`), except
    where a text is longer than `max_length`: there the end token costs one more prompt token (and
    where it is cut off itself, stop is 0)."""
    complete, stop = [], []
    for logps, ids, mask in _token_logps(model, tokenizer, texts, max_length, batch_size, eos=True):
        last = mask.sum(dim=1) - 1  # the last real position of each row (right padding)
        rows = torch.arange(len(ids), device=ids.device)
        is_eos = ids[rows, last] == tokenizer.eos_token_id
        complete.append(logps.sum(dim=1).cpu())
        stop.append(torch.where(is_eos, logps[rows, last], torch.zeros_like(last, dtype=logps.dtype)).cpu())
    if not complete:
        return np.zeros(0), np.zeros(0)
    return torch.cat(complete).numpy().astype(np.float64), torch.cat(stop).numpy().astype(np.float64)
