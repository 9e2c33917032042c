"""Interventions turn the concepts a person blocked or amplified into a training `Plan`.

Only `none` exists so far; feature ablation / steering and data filtering / reweighting come next.
"""

from dataclasses import dataclass


@dataclass
class NoIntervention:
    """Train on the data as it is (and, with trainer=none, do not train at all)."""

    def plan(self, *args, **kwargs):
        return None
