"""Multiple-testing control over a family of per-feature p-values.

    q = adjust(p, "bh")   # q <= alpha  <=>  rejected at false discovery rate alpha

Methods (`METHODS`): "bh" Benjamini-Hochberg (FDR, independent or positively
dependent tests), "by" Benjamini-Yekutieli (FDR under any dependence),
"bonferroni" (family-wise error rate), "none" (q = p).
"""

from __future__ import annotations

import numpy as np

METHODS = ("bh", "by", "bonferroni", "none")


def adjust(p: np.ndarray, method: str) -> np.ndarray:
    """Adjusted p-values (q-values) of `p` under `method`, clipped to 1, same shape as `p`."""
    if method not in METHODS:
        raise ValueError(f"unknown correction {method!r}; allowed: {', '.join(METHODS)}")
    p = np.asarray(p, dtype=np.float64)
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1] (no NaN)")
    m = p.size
    if method == "none" or m == 0:
        return p.copy()
    if method == "bonferroni":
        return np.minimum(1.0, p * m)
    flat = p.ravel()
    order = np.argsort(flat, kind="stable")
    scale = m / np.arange(1, m + 1)
    if method == "by":
        scale *= np.sum(1.0 / np.arange(1, m + 1))
    # step-up: q_(i) = min over j >= i of scale_j * p_(j)
    q_sorted = np.minimum.accumulate((scale * flat[order])[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(1.0, q_sorted)
    return q.reshape(p.shape)
