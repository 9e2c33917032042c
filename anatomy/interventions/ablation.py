"""Feature ablation: during training, remove the blocked concept from the residual stream.

The blocked features' SAE decoder directions are orthonormalized (an SVD basis of their span) into Q, and at the SAE's hook,
on every token, the activation x becomes x - (x Q) Q^T. Nothing is added; amplified features are
not used (ablation can only take a concept away). The hook is removed after training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anatomy.errors import AnatomyError
from anatomy.interventions.plan import Plan


@dataclass
class FeatureAblation:
    """Project the blocked features' directions out of the activations during training."""

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

        return Plan(edits={sae.hook: ablate}, report={
            "intervention/n_edits": 1.0, "intervention/n_directions": float(q.shape[1]),
        })
