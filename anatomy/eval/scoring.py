"""Score (prompt, response) texts with a model: summed response log-probs (causal LM) or the scalar
reward (reward model). Batched, no grad; the same tokenization as the audit (`encode_batch`).

With `eos` (the default) each response is ended by the end-of-sequence token, as TRL's DPO and
reward trainers end every completion: it is scored as the complete answer the model was trained to
prefer. `eos=False` scores it as a continuation of the prompt that may go on (how the evaluation
scores a concept's probe pairs for a causal LM; see `anatomy.eval.evaluate`).
"""

from __future__ import annotations

import numpy as np
import torch

from anatomy.models.base import encode_batch


@torch.no_grad()
def score(model, tokenizer, texts: list[tuple[str, str]], kind: str, max_length: int = 256, batch_size: int = 64,
          eos: bool = True) -> np.ndarray:
    """One number per text: sum of the response tokens' log-probs ("dpo") or the reward ("reward_model")."""
    out = []
    device = next(model.parameters()).device
    for start in range(0, len(texts), batch_size):
        ids, mask, response, _ = encode_batch(tokenizer, texts[start:start + batch_size], max_length, eos)
        ids, mask, response = ids.to(device), mask.to(device), response.to(device)
        if kind == "reward_model":
            out.append(model(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float().cpu())
            continue
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        out.append((logps * response[:, 1:]).sum(dim=1).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)
