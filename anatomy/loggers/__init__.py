"""Experiment loggers. Every run always writes its results to the Hydra run folder; `none` adds
nothing to that (W&B comes next)."""

from dataclasses import dataclass


@dataclass
class NoLogger:
    """Results stay in the run folder only."""

    def log(self, metrics: dict, files: dict | None = None) -> None:
        return None

    def close(self) -> None:
        return None
