"""Data filtering: drop the pairs whose preference the blocked concept explains.

A pair is dropped when the blocked concept's standardized chosen - rejected difference (in its
hypothesis's direction, see `plan.concept_difference`) exceeds `threshold`, unless an amplified
concept also favours chosen by more than `threshold` in that pair (amplified concepts keep theirs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anatomy.errors import AnatomyError
from anatomy.interventions.plan import Plan, concept_difference, weight_report


@dataclass
class DataFiltering:
    """Drop pairs the blocked concept explains."""

    threshold: float = 0.5  # drop where the blocked concept's standardized difference exceeds this

    def plan(self, selection, features, sae) -> Plan:
        if not selection.block:
            raise AnatomyError("intervention=data_filtering needs blocked features: set select.block=[...]")
        blocked = concept_difference(features, selection.block, selection.directions)
        explained = blocked > self.threshold
        if selection.amplify:  # amplified concepts keep the pairs they favour
            explained &= ~(concept_difference(features, selection.amplify, selection.directions) > self.threshold)
        keep = ~explained
        if not keep.any():
            raise AnatomyError(f"data_filtering at threshold {self.threshold} drops every pair")
        weights = keep.astype(np.float64)
        return Plan(weights=weights, report=weight_report("intervention", weights))
