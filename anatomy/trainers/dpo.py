"""DPO with TRL's DPOTrainer, per-pair weights, and an explicit reference model.

TRL's DPO has no per-example weights, so `WeightedDPOTrainer` adds them: rows carry a `weight`
column, and the sigmoid loss per pair is multiplied by it before the batch mean (with unit weights
this is TRL's own loss, computed through TRL's own log-prob path). Reference log-probs are
precomputed from the reference model, a frozen copy of the starting model made before any hook
exists, so interventions never touch the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from trl import DPOConfig, DPOTrainer

from anatomy.errors import AnatomyError
from anatomy.trainers.common import Trained, WeightColumn, fit, frozen_copy, trl_args, weighted_rows


class WeightedDPOTrainer(WeightColumn, DPOTrainer):
    """DPOTrainer whose sigmoid loss weights each pair by the dataset's `weight` column."""

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "weight"})

    def _compute_loss(self, model, inputs, return_outputs):
        weight = inputs.pop("weight", None)
        if weight is None:
            return super()._compute_loss(model, inputs, return_outputs)
        if self.loss_types != ["sigmoid"] or not self.precompute_ref_logps:
            raise AnatomyError("weighted DPO supports loss_type sigmoid with precomputed reference log-probs")
        keys = ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")
        model_kwargs = {k: v for k, v in inputs.items() if k not in keys}
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        chosen_logps, rejected_logps = outputs.log_probs[:, -seq_len:].sum(dim=1).chunk(2, dim=0)
        margin = (chosen_logps - inputs["ref_chosen_logps"]) - (rejected_logps - inputs["ref_rejected_logps"])
        per_pair = -F.logsigmoid(self.beta * margin)
        loss = (per_pair * weight.to(per_pair.device)).mean()
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["rewards/accuracies"].append((margin > 0).float().mean().item())
        self._metrics[mode]["rewards/margins"].append((self.beta * margin).mean().item())
        return (loss, outputs) if return_outputs else loss


@dataclass
class DPO:
    """Direct preference optimization (TRL), weighted by the intervention's plan."""

    beta: float = 0.1  # DPO temperature: strength of the implicit KL to the reference
    lr: float = 1e-4  # AdamW learning rate (linear decay)
    epochs: float = 2.0  # passes over the (kept) training pairs
    max_steps: int = 0  # > 0: train exactly this many steps instead (the same budget for every intervention)
    batch_size: int = 16  # pairs per step
    max_length: int = 160  # tokens per prompt + response
    seed: int = 0  # seeds TRL's data order and dropout
    enabled: bool = True  # this option trains

    def __post_init__(self):
        if self.beta <= 0 or self.lr <= 0 or self.epochs <= 0 or self.batch_size < 1 or self.max_steps < 0:
            raise AnatomyError("trainer: beta, lr and epochs must be positive, batch_size >= 1 and max_steps >= 0")

    def train(self, model, pairs, plan) -> Trained:
        from datasets import Dataset

        reference = frozen_copy(model.model)  # before any hook exists
        policy = frozen_copy(model.model).train()
        for p in policy.parameters():
            p.requires_grad_(True)
        dataset = Dataset.from_list(weighted_rows(pairs, plan.weights))
        report = fit(policy, plan, len(dataset), lambda tmp: WeightedDPOTrainer(
            model=policy, ref_model=reference, train_dataset=dataset, processing_class=model.tokenizer,
            args=trl_args(DPOConfig, tmp, self, beta=self.beta, precompute_ref_log_probs=True, loss_type=["sigmoid"])))
        return Trained("dpo", policy, reference, model.tokenizer, report)
