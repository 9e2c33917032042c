"""Feature ablation: during training, remove the blocked concept from the residual stream.

The blocked features' SAE decoder directions are orthonormalized (QR) into Q, and at the SAE's hook,
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
        q, _ = torch.linalg.qr(directions.T)  # (d_model, n), orthonormal columns

        def ablate(act: torch.Tensor) -> torch.Tensor:
            basis = q.to(act.device, act.dtype)
            return act - (act @ basis) @ basis.T

        return Plan(edits={sae.hook: ablate}, report={
            "intervention/n_edits": 1.0, "intervention/n_directions": float(q.shape[1]),
        })
