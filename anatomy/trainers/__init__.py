"""Trainers (TRL DPO, reward models). `none`: stop after the audit."""

from dataclasses import dataclass


@dataclass
class NoTrainer:
    """Audit only: the run ends after the hypotheses are written."""

    enabled: bool = False  # a trainer option that trains sets this to true
