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

import numpy as np
import torch

from anatomy.errors import AnatomyError
from anatomy.interventions.plan import Intervention, Plan


@dataclass
class FeatureSteering(Intervention):
    """Add a multiple of the selected features' directions during training."""

    coefficient: float = 5.0  # size of the vector, in typical feature activations; > 0 supplies blocked concepts

    def plan(self, selection, features, sae) -> Plan:
        feats = selection.block + selection.amplify
        if not feats:
            raise AnatomyError("intervention=feature_steering needs select.block or select.amplify")
        w_dec = sae.sae.W_dec.detach().float()
        chosen, rejected = features.chosen.tocsc(), features.rejected.tocsc()
        mix = torch.zeros(w_dec.shape[1])
        strengths = []
        for f in feats:  # typical strength: the mean pooled activation over responses where it is active
            active = np.concatenate([chosen[:, [f]].data, rejected[:, [f]].data])
            strength = float(active.mean()) if len(active) else 1.0
            strengths.append(strength)
            sign = 1.0 if f in selection.block else -1.0
            mix += sign * strength * w_dec[f] / w_dec[f].norm()
        if mix.norm() == 0:
            raise AnatomyError("feature_steering: the selected directions cancel out (zero steering vector)")
        typical = float(np.mean(strengths))
        vector = self.coefficient * typical * mix / mix.norm()

        def steer(act: torch.Tensor) -> torch.Tensor:
            return act + vector.to(act.device, act.dtype)

        return Plan(edits={sae.hook: steer}, report={
            "intervention/n_edits": 1.0, "intervention/n_directions": float(len(feats)),
            "intervention/steering_norm": float(vector.norm()),
            "intervention/typical_activation": typical,
        })
