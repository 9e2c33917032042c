"""Data filtering: drop the pairs whose preference the blocked concept explains.

A pair is dropped when the blocked concept's standardized chosen - rejected difference d (in its
hypothesis's direction, see `plan.concept_difference`) exceeds `threshold`, unless an amplified
concept also favours chosen by more than `threshold` in that pair (amplified concepts keep theirs).
With `two_sided` (the default) the pairs where the concept favours *rejected* by more than
`threshold` go too: what remains carries the concept on both sides or on neither, so it says
nothing about the preference. Dropping only d > threshold would leave the pairs where the concept
sits in the rejected response, and DPO would learn to *disprefer* it.

With `drop="present"` every pair that carries the concept in either response goes, so the model
never trains on it: a response carries it when its presence score (`plan.concept_presence`, the
mean standardized activation of the blocked features) exceeds `presence_threshold`, by default the
cut Otsu's method finds between the absent and present modes of all responses' scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anatomy.errors import AnatomyError
from anatomy.interventions.plan import Intervention, Plan, concept_difference, concept_presence, otsu_threshold, weight_report


@dataclass
class DataFiltering(Intervention):
    """Drop pairs the blocked concept explains."""

    threshold: float = 0.5  # drop where the blocked concept's standardized difference exceeds this
    two_sided: bool = True  # also drop where it favours rejected by more than threshold (independence)
    drop: str = "differ"  # "differ": the pairs the concept explains (above); "present": every pair carrying it
    presence_threshold: float | None = None  # drop="present": presence score above which a response carries it; null = Otsu

    def __post_init__(self):
        if self.threshold < 0:
            raise AnatomyError(f"data_filtering: threshold must be >= 0, got {self.threshold}")
        if self.drop not in ("differ", "present"):
            raise AnatomyError(f"data_filtering: drop must be 'differ' or 'present', got {self.drop!r}")

    def plan(self, selection, features, sae) -> Plan:
        if not selection.block:
            raise AnatomyError("intervention=data_filtering needs blocked features: set select.block=[...]")
        report = {}
        if self.drop == "present":
            chosen, rejected = concept_presence(features, selection.block)
            cut = self.presence_threshold
            if cut is None:
                cut = otsu_threshold(np.concatenate([chosen, rejected]))
            explained = (chosen > cut) | (rejected > cut)
            report = {"intervention/presence_threshold": cut,
                      "intervention/n_responses_present": float((chosen > cut).sum() + (rejected > cut).sum())}
        else:
            blocked = concept_difference(features, selection.block, selection.directions)
            explained = (np.abs(blocked) if self.two_sided else blocked) > self.threshold
        if selection.amplify:  # amplified concepts keep the pairs they favour
            explained &= ~(concept_difference(features, selection.amplify, selection.directions) > self.threshold)
        keep = ~explained
        if not keep.any():
            at = "drop=present" if self.drop == "present" else f"threshold {self.threshold}"
            raise AnatomyError(f"data_filtering at {at} drops every pair")
        weights = keep.astype(np.float64)
        return Plan(weights=weights, report={**weight_report("intervention", weights), **report})
