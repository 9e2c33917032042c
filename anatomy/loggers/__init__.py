"""Experiment loggers. Every run always writes its results to its Hydra run folder; a logger adds a
copy elsewhere. `none`: nothing more. `wandb`: one W&B run per job (offline unless configured).

A logger has `start(config, out_dir)`, `finish(metrics, out_dir, error)`; the CLI calls
`finish` in a `finally`, so a failing job's run is closed too (and marked failed)."""

from dataclasses import dataclass


@dataclass
class NoLogger:
    """Results stay in the run folder only."""

    def start(self, config: dict, out_dir) -> None:
        return None

    def finish(self, metrics: dict, out_dir, error: BaseException | None = None) -> None:
        return None
