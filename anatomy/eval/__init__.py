"""Evaluations of a trained model (held-out accuracy, per-concept learned shift). `none`: skip."""

from dataclasses import dataclass


@dataclass
class NoEval:
    """No evaluation of a trained model (nothing was trained)."""
