"""Preference accuracy from margins (chosen - rejected), and its paired change between two models
scored on the same pairs; when a baseline's shift is clear enough of 0 to reduce. Numpy only, so
`anatomy-report` can use it without importing torch."""

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


def distinct_from_zero(value: float, se: float | None, z: float = 2.0) -> bool:
    """Whether a baseline's learned shift is at least `z` standard errors from 0 (without a standard
    error, merely nonzero): only then does a reduction, 1 - shift / baseline, mean anything; a
    baseline within noise of 0 turns any shift into a huge, meaningless percentage."""
    if value is None or not np.isfinite(value) or value == 0:
        return False
    return se is None or not np.isfinite(se) or abs(value) >= z * se
