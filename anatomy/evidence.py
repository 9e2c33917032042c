"""Evidence a person can read, for each hypothesis.

- `top_tokens`: the feature's strongest token occurrences over every audited response, decoded,
  distinct, strongest first (the `top_tokens` column of hypotheses.csv).
- `snippets`: a few of those occurrences in context, the token marked as [[token]], with the side
  (chosen / rejected) and pair they come from.
- `promoted`: the output tokens the feature's decoder direction most promotes, read through the
  model's unembedding (direct logit attribution; the final norm is ignored).
- `concept_groups`: the significant hypotheses gathered into groups whose chosen - rejected
  differences move together across pairs (one concept read by several features), so a person
  decides per group instead of per feature (the `group` column of hypotheses.csv).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from anatomy.errors import AnatomyError
from anatomy.features import Features
from anatomy.outputs import escape_unprintable

log = logging.getLogger(__name__)
MAX_GROUPED = 8000  # concept groups: the strongest hypotheses grouped at most (a 8000 x 8000 correlation)


@dataclass
class Evidence:
    """How much evidence to gather per hypothesis."""

    n_tokens: int = 5  # distinct top-activating tokens per feature (hypotheses.csv's top_tokens)
    n_snippets: int = 3  # top-activating snippets per significant hypothesis (from distinct responses)
    context: int = 8  # tokens of context before the marked token (2 after)
    n_promoted: int = 8  # most promoted output tokens of the decoder direction
    max_report: int = 50  # significant hypotheses written to hypotheses.md (strongest first)
    group_corr: float | None = 0.5  # concept groups: mean correlation of their differences at least this; null = none

    def __post_init__(self):
        for name in ("n_tokens", "n_snippets", "context", "n_promoted", "max_report"):
            if int(getattr(self, name)) < 0:
                raise AnatomyError(f"evidence.{name} must be >= 0, got {getattr(self, name)}")
        if self.group_corr is not None and not 0 < self.group_corr <= 1:
            raise AnatomyError(f"evidence.group_corr must be in (0, 1] (or null: no groups), got {self.group_corr}")


def show_token(text: str) -> str:
    """A token as a person reads it: stripped, with whitespace-only tokens escaped (\\n, ␣), and any
    other character that is not printable (U+2028, a control character) as its escape."""
    stripped = text.strip()
    if stripped:
        return escape_unprintable(stripped.replace("|", "/"))
    return escape_unprintable(text.replace("\n", "\\n").replace(" ", "␣").replace("\t", "\\t")) or "∅"


def top_tokens(features: Features, feature_ids: np.ndarray, tokenizer, n: int) -> list[list[str]]:
    """Distinct decoded top-activating tokens per feature, strongest first."""
    cache: dict[int, str] = {}
    out = []
    for f in feature_ids:
        where = features.top_where[:, f]
        names: list[str] = []
        for w in where[where >= 0]:
            tid = int(features.tokens[w])
            if tid not in cache:
                cache[tid] = show_token(tokenizer.decode([tid]))
            if len(names) == n:
                break
            if cache[tid] not in names:
                names.append(cache[tid])
        out.append(names)
    return out


def snippets(features: Features, feature: int, tokenizer, n: int, context: int) -> list[dict]:
    """Up to `n` top-activating occurrences from distinct responses, with the token marked."""
    out, responses = [], set()
    for value, where in zip(features.top_values[:, feature], features.top_where[:, feature]):
        if where < 0 or len(out) == n:
            break
        response = int(np.searchsorted(features.offsets, where, side="right") - 1)
        if response in responses:
            continue
        responses.add(response)
        start, end = features.offsets[response], features.offsets[response + 1]
        left = tokenizer.decode(features.tokens[max(start, where - context):where].tolist())
        token = tokenizer.decode([int(features.tokens[where])])
        right = tokenizer.decode(features.tokens[where + 1:min(end, where + 3)].tolist())
        out.append({
            "pair": response // 2, "side": "rejected" if response % 2 else "chosen", "activation": float(value),
            "text": (left + "[[" + token + "]]" + right).replace("\n", "\\n"),
        })
    return out


@torch.no_grad()
def promoted_tokens(sae, model, feature_ids: np.ndarray, tokenizer, n: int) -> list[list[str]]:
    """Tokens whose logits the decoder directions raise most (W_dec @ W_U^T)."""
    if len(feature_ids) == 0 or n == 0:
        return [[] for _ in feature_ids]
    unembed = model.get_output_embeddings().weight.float()  # (vocab, d_model)
    directions = sae.W_dec[torch.tensor(np.array(feature_ids), dtype=torch.long)].float().to(unembed.device)
    top = (directions @ unembed.T).topk(min(n, unembed.shape[0]), dim=1).indices.cpu()
    return [[show_token(tokenizer.decode([int(t)])) for t in row] for row in top]


def concept_groups(features: Features, feature_ids: np.ndarray, min_corr: float,
                   max_features: int = MAX_GROUPED) -> np.ndarray:
    """Group ids (1, 2, ...) for `feature_ids`, given strongest first: features whose per-pair
    chosen - rejected differences correlate across pairs. Average linkage joins two groups while
    the mean correlation between their members is at least `min_corr`. Groups are numbered by their
    strongest member, so group 1 holds the strongest hypothesis. A feature whose difference never
    varies correlates with nothing and stands alone. Only the `max_features` strongest are grouped
    (memory grows with their square; warned about), so the result may be shorter than the input."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    ids = np.asarray(feature_ids, dtype=np.int64)
    if len(ids) > max_features:
        log.warning("evidence: %d significant hypotheses; only the %d strongest are put into concept groups",
                    len(ids), max_features)
        ids = ids[:max_features]
    if len(ids) < 2:
        return np.ones(len(ids), dtype=np.int64)
    diff = (features.chosen[:, ids] - features.rejected[:, ids]).toarray().astype(np.float64)
    diff -= diff.mean(axis=0)
    norm = np.linalg.norm(diff, axis=0)
    diff /= np.where(norm > 0, norm, 1.0)
    corr = np.clip(diff.T @ diff, -1.0, 1.0)
    distance = 1.0 - corr
    np.fill_diagonal(distance, 0.0)
    labels = fcluster(linkage(squareform(distance, checks=False), method="average"),
                      t=1.0 - min_corr + 1e-9, criterion="distance")
    order: dict[int, int] = {}
    return np.array([order.setdefault(label, len(order) + 1) for label in labels], dtype=np.int64)
