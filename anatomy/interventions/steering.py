"""Feature steering during training (preventative steering), removed at evaluation.

Sign convention: the steering vector is

    v = coefficient * a * unit(sum_f s_f * a_f * u_f)

added at the SAE's hook on every token during training, where u_f is feature f's unit decoder
direction, a_f its mean activation when active (its typical strength), a the mean of the a_f (a
typical feature activation), and s_f = +1 for blocked features, -1 for amplified ones. The
direction mixes the selected features by their strengths; the size is `coefficient` typical
feature activations, however many features a selection hits (a string can select 17 features on
one seed and 30 on another: summing them would make one coefficient mean different things).
So coefficient > 0 *supplies* a blocked concept while training (the gradient need not learn it,
and the trained model shows less of it once the vector is removed) and *withholds* an amplified
one (the gradient learns more of it). A negative coefficient pushes each the other way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anatomy.errors import AnatomyError
from anatomy.interventions.plan import Intervention, Plan, mixed_direction


@dataclass
class FeatureSteering(Intervention):
    """Add a multiple of the selected features' directions during training."""

    coefficient: float = 5.0  # size of the vector, in typical feature activations; > 0 supplies blocked concepts

    def plan(self, selection, features, sae) -> Plan:
        feats = selection.block + selection.amplify
        if not feats:
            raise AnatomyError("intervention=feature_steering needs select.block or select.amplify")
        signs = [1.0 if f in selection.block else -1.0 for f in feats]
        try:
            direction, typical = mixed_direction(feats, signs, features, sae.sae.W_dec.detach().float())
        except AnatomyError as err:
            raise AnatomyError(f"feature_steering: {err}") from None
        vector = self.coefficient * typical * direction

        def steer(act: torch.Tensor) -> torch.Tensor:
            return act + vector.to(act.device, act.dtype)

        return Plan(edits={sae.hook: steer}, report={
            "intervention/n_edits": 1.0, "intervention/n_directions": float(len(feats)),
            "intervention/steering_norm": float(vector.norm()),
            "intervention/typical_activation": typical,
        })
