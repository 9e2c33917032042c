"""Feature ablation: during training, remove the blocked concept from the residual stream.

The blocked features' SAE decoder directions are orthonormalized (an SVD basis of their span) into Q, and at the SAE's hook,
on every token, the activation x becomes x - (x Q) Q^T. Nothing is added; amplified features are
not used (ablation can only take a concept away). `extra_hooks` applies the same projection at more
hook points (for instance every later layer's `blocks.L.hook_resid_post`): the residual stream
carries a direction on from layer to layer, and ablating at one layer leaves the later layers free
to write the concept back. The hooks are removed after training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from anatomy.errors import AnatomyError
from anatomy.models.hooks import canonical_hook_name, parse_hook
from anatomy.interventions.plan import Intervention, Plan


@dataclass
class FeatureAblation(Intervention):
    """Project the blocked features' directions out of the activations during training."""

    extra_hooks: list[str] = field(default_factory=list)  # more hook points for the same projection

    def check(self, spec) -> None:
        """The extra hook points exist in the model (checked before any model is built)."""
        for hook in self.extra_hooks:
            parse_hook(hook, spec.n_layers)

    def plan(self, selection, features, sae) -> Plan:
        if not selection.block:
            raise AnatomyError("intervention=feature_ablation needs blocked features: set select.block=[...]")
        directions = sae.sae.W_dec[torch.tensor(selection.block)].detach().float()  # (n, d_model)
        # An orthonormal basis of their span (SVD, so dependent directions add no spurious column).
        u, s, _ = torch.linalg.svd(directions.T, full_matrices=False)
        q = u[:, s > s.max() * 1e-5]  # (d_model, rank)

        def ablate(act: torch.Tensor) -> torch.Tensor:
            basis = q.to(act.device, act.dtype)
            return act - (act @ basis) @ basis.T

        points = dict.fromkeys([sae.hook, *map(canonical_hook_name, self.extra_hooks)])
        return Plan(edits={hook: ablate for hook in points}, report={
            "intervention/n_edits": float(len(points)), "intervention/n_directions": float(q.shape[1]),
        })
