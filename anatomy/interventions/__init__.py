"""Interventions turn the selected (blocked / amplified) concepts into a training `Plan`.

- `none`: train on the data as it is.
- `feature_ablation`: project the blocked features' decoder directions out of the SAE's hook.
- `feature_steering`: add a multiple of the selected directions at the SAE's hook (preventative steering).
- `data_filtering`: drop the pairs whose preference the blocked concept explains.
- `data_reweighting`: weights under which the blocked concept is independent of the preference.

Each option is a dataclass deriving `Intervention`: `check(spec)` runs before any model is built,
and `plan(selection, features, sae)` returns a `Plan`.
"""

from dataclasses import dataclass

from anatomy.interventions.plan import Intervention, Plan


@dataclass
class NoIntervention(Intervention):
    """Train on the data as it is."""

    def plan(self, selection, features, sae) -> Plan:
        return Plan(report={"intervention/n_edits": 0.0})
