"""Data reweighting: weights under which the blocked concept is independent of the preference.

Pairs are stratified by the blocked concept's standardized difference d (`plan.concept_difference`):
by the size |d| (quantile bins) and its sign. Within each size bin the pairs where the concept
favours chosen (d > 0) and those where it favours rejected (d < 0) get equal total weight, so in
the weighted data the concept says nothing about which response is preferred; pairs with d = 0 keep
weight 1. A bin with only one sign is merged into its neighbour. Pairs where an amplified concept
favours chosen by more than `amplify_threshold` (its standardized difference, as data_filtering's
`threshold`) are then multiplied by `amplify_factor`: its features differ between almost any two
responses by a little noise, which favours chosen in most pairs that lack the concept (65-72% for
refusal on the default study's data), so every positive difference would spread the factor over
them. Weights are normalized to mean 1 and their effective sample size (sum w)^2 / sum w^2 is
reported, with `n_amplified`, the pairs multiplied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anatomy.errors import AnatomyError
from anatomy.interventions.plan import Intervention, Plan, concept_difference, weight_report


def balance(d: np.ndarray, n_bins: int) -> np.ndarray:
    """Weights equalizing the mass of d > 0 and d < 0 within bins of |d|."""
    weights = np.ones_like(d, dtype=np.float64)
    active = np.flatnonzero(np.abs(d) > 1e-12)
    if len(active) == 0:
        return weights
    edges = np.quantile(np.abs(d[active]), np.linspace(0, 1, n_bins + 1)[1:-1])
    bins = np.searchsorted(edges, np.abs(d[active]), side="right")
    groups = [active[bins == b] for b in range(n_bins) if (bins == b).any()]
    merged: list[np.ndarray] = []
    for group in groups:  # merge a bin lacking one sign into the previous one
        has_both = (d[group] > 0).any() and (d[group] < 0).any()
        if merged and not has_both:
            merged[-1] = np.concatenate([merged[-1], group])
        else:
            merged.append(group)
    if len(merged) > 1 and not ((d[merged[0]] > 0).any() and (d[merged[0]] < 0).any()):
        merged[1] = np.concatenate([merged[0], merged[1]])
        merged = merged[1:]
    for group in merged:
        pos, neg = group[d[group] > 0], group[d[group] < 0]
        if len(pos) == 0 or len(neg) == 0:
            never = "chosen" if len(pos) == 0 else "rejected"
            raise AnatomyError(f"data_reweighting: the blocked concept never favours {never}: cannot balance it")
        weights[pos] = len(group) / (2 * len(pos))
        weights[neg] = len(group) / (2 * len(neg))
    return weights


@dataclass
class DataReweighting(Intervention):
    """Reweight pairs so the blocked concept is independent of the preference."""

    n_bins: int = 4  # quantile bins of |d| within which the two signs are balanced
    amplify_factor: float = 2.0  # weight multiplier for pairs an amplified concept favours
    amplify_threshold: float = 0.5  # ... by more than this standardized difference (as data_filtering's threshold)

    def __post_init__(self):
        if self.n_bins < 1 or self.amplify_factor <= 0:
            raise AnatomyError("data_reweighting: n_bins must be >= 1 and amplify_factor > 0")
        if self.amplify_threshold < 0:
            raise AnatomyError(f"data_reweighting: amplify_threshold must be >= 0, got {self.amplify_threshold}")

    def plan(self, selection, features, sae) -> Plan:
        if not selection.block and not selection.amplify:
            raise AnatomyError("intervention=data_reweighting needs select.block or select.amplify")
        weights = balance(concept_difference(features, selection.block, selection.directions), self.n_bins)
        amplified = concept_difference(features, selection.amplify, selection.directions) > self.amplify_threshold
        if selection.amplify and not amplified.any():
            raise AnatomyError(f"data_reweighting: the amplified concept favours chosen by more than amplify_threshold "
                               f"{self.amplify_threshold} in no pair: nothing to upweight (lower the threshold)")
        weights[amplified] *= self.amplify_factor
        weights /= weights.mean()
        report = weight_report("intervention", weights)
        return Plan(weights=weights, report={**report, "intervention/n_amplified": float(amplified.sum())})
