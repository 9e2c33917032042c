"""Weights & Biases: one run per Hydra job, grouped by sweep, offline unless configured otherwise.

The run holds the resolved config, the metrics (as its summary), the hypotheses as a table, and the
run folder's key files as an artifact. `WANDB_MODE` in the environment overrides `mode`; offline
runs land in `<run folder>/wandb/offline-run-*` and can be uploaded later with `wandb sync`, or read
back with `wandb leet inspect --summary --json <that folder>`. No login is needed offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from anatomy.errors import AnatomyError

MODES = ("offline", "online", "disabled")
FILES = ("hypotheses.csv", "hypotheses.md", "metrics.json", "selection.json", "verdicts.yaml", "heldout.csv",
         "validation.csv", "environment.json", ".hydra/config.yaml", ".hydra/overrides.yaml")


@dataclass
class WandbLogger:
    """Log each job to W&B."""

    project: str = "anatomy"  # W&B project
    entity: str | None = None  # W&B entity (team or user); None = your default
    group: str | None = None  # run group; None = the sweep folder's name in a multirun, else no group
    mode: str = "offline"  # offline | online | disabled; the WANDB_MODE environment variable wins
    tags: list[str] = field(default_factory=list)  # tags on every run
    log_model: bool = False  # also upload the trained model folder (large) as an artifact

    def __post_init__(self):
        if self.mode not in MODES:
            raise AnatomyError(f"logger.mode must be one of {MODES}, got {self.mode!r}")
        self._run = None

    def start(self, config: dict, out_dir: Path) -> None:
        import wandb

        from hydra.core.hydra_config import HydraConfig

        group, name = self.group, out_dir.name
        if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
            group = group or Path(HydraConfig.get().sweep.dir).name
            name = f"{Path(HydraConfig.get().sweep.dir).name}/{HydraConfig.get().job.num}"
        mode = os.environ.get("WANDB_MODE", self.mode)
        try:
            self._run = wandb.init(
                project=self.project, entity=self.entity, group=group, name=name, tags=list(self.tags),
                config=config, dir=str(out_dir), mode=mode, reinit="finish_previous",
            )
        except Exception as err:  # not logged in, no network, an entity that does not exist
            where = "WANDB_MODE" if "WANDB_MODE" in os.environ else "logger.mode"
            raise AnatomyError(f"logger=wandb: cannot start a W&B run in {where}={mode} ({type(err).__name__}: "
                               f"{err}); log in with `wandb login` (or set WANDB_API_KEY), or run offline "
                               f"with {where}=offline and upload later with `wandb sync`") from err

    def finish(self, metrics: dict, out_dir: Path, error: BaseException | None = None) -> None:
        if self._run is None:
            return
        import wandb

        run, self._run = self._run, None
        try:
            numbers = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
            if numbers:
                run.log(numbers)
                run.summary.update(numbers)
            if (out_dir / "hypotheses.csv").exists():
                import pandas as pd

                run.log({"hypotheses": wandb.Table(dataframe=pd.read_csv(out_dir / "hypotheses.csv"))})
            files = [out_dir / f for f in FILES if (out_dir / f).exists()]
            if files or (self.log_model and (out_dir / "model").is_dir()):
                artifact = wandb.Artifact(f"run-{run.id}", type="anatomy-run")
                for f in files:
                    artifact.add_file(str(f), name=str(f.relative_to(out_dir)))
                if self.log_model and (out_dir / "model").is_dir():
                    artifact.add_dir(str(out_dir / "model"), name="model")
                run.log_artifact(artifact)
            if error is not None:
                run.summary["error"] = f"{type(error).__name__}: {error}"
        finally:
            run.finish(exit_code=1 if error is not None else 0)
