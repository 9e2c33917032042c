"""Trainers: `dpo` (TRL DPOTrainer with per-pair weights), `reward_model` (TRL RewardTrainer with
weights), `none` (audit only). Each training option's `fits(tokenizer, pairs)` says which pairs TRL will
keep (asked before the intervention is planned), and its `train(model, pairs, plan)` returns a `Trained`,
with the plan's activation edits active on the policy during training only (removed even if training raises)."""

from dataclasses import dataclass


@dataclass
class NoTrainer:
    """Audit only: the run ends after the hypotheses are written."""

    enabled: bool = False  # options that train set this to true
