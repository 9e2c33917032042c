"""A reward model with TRL's RewardTrainer, with per-pair weights.

The starting model's weights are loaded into a sequence-classification model (one scalar head);
`WeightedRewardTrainer` multiplies each pair's Bradley-Terry loss by the row's `weight`. The plan's
activation edits act on the reward model's layers during training only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from trl import RewardConfig, RewardTrainer

from anatomy.trainers.common import (Trained, WeightColumn, check_settings, fit, fitting, frozen_copy, say_float32,
                                     trl_args, weighted_rows, whole_ids)

TOO_LONG = "their chosen or rejected text being longer than"  # TRL's RewardTrainer drops those


class WeightedRewardTrainer(WeightColumn, RewardTrainer):
    """RewardTrainer whose loss weights each pair by the dataset's `weight` column."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weight = inputs.pop("weight", None)
        if weight is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        loss = (-F.logsigmoid(chosen - rejected) * weight.to(chosen.device)).mean()
        return (loss, outputs) if return_outputs else loss


def load_reward_model(lm):
    """A one-logit sequence-classification head on the LM's own weights (same revision and device), in
    float32 whatever `model.dtype` (see `float32_copy`)."""
    from transformers import AutoModelForSequenceClassification

    say_float32(lm.model.dtype)
    model = AutoModelForSequenceClassification.from_pretrained(lm.path, num_labels=1, revision=lm.revision,
                                                               dtype=torch.float32)
    model.config.pad_token_id = lm.tokenizer.pad_token_id
    return model.to(next(lm.model.parameters()).device)


@dataclass
class RewardModel:
    """A Bradley-Terry reward model (TRL), weighted by the intervention's plan."""

    lr: float = 5e-4  # AdamW learning rate (linear decay)
    epochs: float = 2.0  # passes over the (kept) training pairs
    max_steps: int = 0  # > 0: train exactly this many steps instead (the same budget for every intervention)
    batch_size: int = 16  # pairs per step
    max_length: int = 160  # tokens per prompt + response
    seed: int = 0  # seeds the score head's initialisation and the data order
    mixed_precision: str = "no"  # "bf16" (or "fp16", GPU only): forward passes in half precision, weights float32
    enabled: bool = True  # this option trains

    def __post_init__(self):
        check_settings(self)

    def fits(self, tokenizer, pairs) -> np.ndarray:
        """Which pairs TRL's RewardTrainer will train on, by its own rule: it drops a pair whose prompt +
        chosen or prompt + rejected (with EOS) is longer than `max_length` tokens."""
        longest = [max(len(c), len(r)) for c, r in zip(*whole_ids(tokenizer, pairs))]
        return fitting(np.asarray(longest) <= self.max_length, TOO_LONG, self.max_length)

    def train(self, model, pairs, plan) -> Trained:
        from datasets import Dataset

        torch.manual_seed(self.seed)
        policy = load_reward_model(model)
        reference = frozen_copy(policy)  # the untrained reward model, same head initialisation
        dataset = Dataset.from_list(weighted_rows(pairs, plan.weights, joined=True))
        report = fit(policy, plan, len(dataset), lambda tmp: WeightedRewardTrainer(
            model=policy, train_dataset=dataset, processing_class=model.tokenizer,
            args=trl_args(RewardConfig, tmp, self, policy)),
            TOO_LONG)
        return Trained("reward_model", policy, reference, model.tokenizer, report)
