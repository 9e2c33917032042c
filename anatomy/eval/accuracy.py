"""Preference accuracy from margins (chosen - rejected), and its paired change between two models
scored on the same pairs. Numpy only, so `anatomy-report` can use it without importing torch."""

from __future__ import annotations

import numpy as np


def correct(margin) -> np.ndarray:
    """Per pair: 1 where the margin favours chosen, 0 where rejected, 0.5 for a tie."""
    margin = np.asarray(margin, dtype=np.float64)
    return (margin > 0) + 0.5 * (margin == 0)


def mean_change(after, before) -> tuple[float, float]:
    """The mean per-pair change from `before` to `after` (e.g. correctness) and its paired standard
    error; NaN for fewer than two pairs or unequal lengths."""
    after, before = np.asarray(after, dtype=np.float64), np.asarray(before, dtype=np.float64)
    if len(after) != len(before) or len(after) < 2:
        return float("nan"), float("nan")
    change = after - before
    return float(change.mean()), float(change.std(ddof=1) / np.sqrt(len(change)))
