"""Feature ablation: during training, remove the blocked concept from the residual stream.

The blocked features' SAE decoder directions are orthonormalized (an SVD basis of their span) into Q, and at the SAE's hook,
on every token, the activation x becomes x - (x Q) Q^T. Nothing is added; amplified features are
not used (ablation can only take a concept away). `extra_hooks` applies the same projection at more
hook points (for instance every later layer's `blocks.L.hook_resid_post`): the residual stream
carries a direction on from layer to layer, and ablating at one layer leaves the later layers free
to write the concept back. The hooks are removed after training.

A selection of tens of features spans tens of dimensions, a large share of a small model's residual
stream, and projecting them all out also removes what shares those dimensions. `mixed: true`
ablates one direction instead: the blocked features' decoder directions weighted by their typical
activations, unit(sum_f a_f u_f) (the direction `feature_steering` adds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from anatomy.errors import AnatomyError
from anatomy.models.hooks import canonical_hook_name
from anatomy.interventions.plan import Intervention, Plan, mixed_direction


@dataclass
class FeatureAblation(Intervention):
    """Project the blocked features' directions out of the activations during training."""

    extra_hooks: list[str] = field(default_factory=list)  # more hook points for the same projection
    mixed: bool = False  # one direction (the features' strength-weighted mix) instead of their whole span

    def hook_points(self) -> list[str]:
        return list(self.extra_hooks)

    def plan(self, selection, features, sae) -> Plan:
        if not selection.block:
            raise AnatomyError("intervention=feature_ablation needs blocked features: set select.block=[...]")
        w_dec = sae.sae.W_dec.detach().float()
        if self.mixed:
            try:
                direction, _ = mixed_direction(selection.block, [1.0] * len(selection.block), features, w_dec)
            except AnatomyError as err:
                raise AnatomyError(f"feature_ablation: {err}") from None
            q = direction[:, None]  # (d_model, 1)
        else:  # an orthonormal basis of their span (SVD, so dependent directions add no spurious column)
            u, s, _ = torch.linalg.svd(w_dec[torch.tensor(selection.block)].T, full_matrices=False)
            q = u[:, s > s.max() * 1e-5]  # (d_model, rank)

        def ablate(act: torch.Tensor) -> torch.Tensor:
            basis = q.to(act.device, act.dtype)
            return act - (act @ basis) @ basis.T

        points = dict.fromkeys([sae.hook, *map(canonical_hook_name, self.extra_hooks)])
        return Plan(edits={hook: ablate for hook in points}, report={
            "intervention/n_edits": float(len(points)), "intervention/n_directions": float(q.shape[1]),
        })
