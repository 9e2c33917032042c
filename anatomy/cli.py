"""The `anatomy` command: compose the config, run the pipeline, print a one-screen summary.

    anatomy                                        # the default study: audit, block markdown, reweighted DPO, eval
    anatomy data=local data.path=pairs.jsonl       # your own preference file
    anatomy experiment=audit_hh_rlhf               # a study from experiments/
    anatomy -m hypothesis.alpha=0.01,0.05          # a sweep (one run folder per job)
    anatomy --cfg job                              # print the composed config and exit

Every run writes hypotheses.csv, hypotheses.md, verdicts.yaml, metrics.json, environment.json and .hydra/
into its own folder (a run that trains also selection.json and model/, and one that evaluates
heldout.csv, and validation.csv with validation pairs).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("anatomy")
# configs/ sits beside the package in the repository (the README installs it editable).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Terminated(KeyboardInterrupt):
    """The job was told to stop by SIGTERM (`kill`, a cluster's time limit or preemption)."""


@contextmanager
def sigterm_as_interrupt():
    """While the job runs, SIGTERM raises `Terminated`, so the job is stopped as by Ctrl-C: its
    error.txt says so and its W&B run is closed as failed (Python's default would end the process
    at once, with neither). The previous handler is restored afterwards. Left alone where SIGTERM
    is ignored, or outside the main thread (where no handler can be set)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return

    def stop(signum, frame):
        raise Terminated(f"stopped by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Run:
    """The config's top-level keys (configs/config.yaml), checked like every node's."""

    seed: int = 0  # seeds the data, the model, the SAE and every sampler
    threads: int = 0  # torch CPU threads; 0 = all cores, shared among a parallel launcher's jobs
    objective: str | None = None  # a metric the job returns to a sweeper


def main() -> None:
    """The `anatomy` command. A job stopped by SIGTERM exits with status 143 (128 + SIGTERM), as a
    process that SIGTERM ends does, after its cleanup, so a shell or a scheduler sees what stopped it;
    one stopped by Ctrl-C ends as Python's KeyboardInterrupt does (130)."""
    sys.argv[1:] = sys.argv[1:] + rerun_settings(sys.argv[1:])
    try:
        job()
    except Terminated as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None


def rerun_settings(argv: list[str]) -> list[str]:
    """Re-running a run's record (`--config-path RUN/.hydra --config-name config`): Hydra keeps its own
    settings out of the saved config.yaml, so the re-run would lose anatomy's (the log's name, the
    microsecond folders, the `fresh_folder` guard that keeps it out of an earlier run's folder, the
    `failed_jobs` report). -> those settings of configs/config.yaml as overrides, for the keys that
    `argv` does not set itself; none when `argv` does not point at a run's record."""
    folder = None
    for i, arg in enumerate(argv):
        for flag in ("--config-path", "-cp", "--config-dir", "-cd"):
            if arg == flag and i + 1 < len(argv):
                folder = argv[i + 1]
            elif arg.startswith(flag + "="):
                folder = arg.split("=", 1)[1]
    if folder is None or not (Path(folder) / "hydra.yaml").is_file():
        return []
    groups = sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and p.name not in ("hydra", "experiment"))
    switched = [a for a in argv if "=" in a and a.lstrip("+~").split("=", 1)[0] in groups]
    if switched:  # the record holds each group's resolved values, not the option's name: `trainer=dpo` would be a string
        overrides, keys = Path(folder) / "overrides.yaml", {a.lstrip("+~").split("=", 1)[0] for a in switched}
        recorded = " ".join(o for o in (OmegaConf.load(overrides) if overrides.is_file() else [])
                            if o.lstrip("+~").split("=", 1)[0] not in keys | {"hydra.run.dir"})
        raise SystemExit(f"anatomy: {' '.join(switched)}: a run's record cannot switch a config group ("
                         f"{', '.join(groups)}); it holds the values the run resolved, not the option's name. "
                         f"Set its keys instead (e.g. trainer.max_steps=...), or run the run's own command line "
                         f"with the new option: anatomy {recorded} {' '.join(switched)}".rstrip())
    settings = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "config.yaml").hydra, resolve=False)

    def flat(node: dict, prefix: str):  # {"job": {"name": "anatomy"}} -> ("hydra.job.name", "anatomy")
        for key, value in node.items():
            yield from flat(value, f"{prefix}.{key}") if isinstance(value, dict) else [(f"{prefix}.{key}", value)]

    given = {a.lstrip("+~").split("=", 1)[0] for a in argv if "=" in a}
    return [f"++{key}={value}" for key, value in flat(settings, "hydra") if key not in given]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
@sigterm_as_interrupt()  # `kill`, a cluster's time limit: the job is recorded and closed as after Ctrl-C
def job(cfg: DictConfig) -> float | None:
    """One run, or one job of a sweep: build and run the pipeline, record what happened."""
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from anatomy.errors import AnatomyError, check_types
    from anatomy.loggers import NoLogger
    from anatomy.outputs import summary, write_environment, write_failure
    from anatomy.pipeline import instantiate_node, run

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    out_dir = Path(hydra_cfg.runtime.output_dir)
    logger, metrics, error = NoLogger(), {}, None
    try:
        # inside the try: a bad logger value, or a W&B run that cannot start, is recorded like any failure
        logger = instantiate_node(cfg, "logger")
        logger.start(OmegaConf.to_container(cfg, resolve=True), out_dir)
        check_types("", Run, {key: cfg.get(key) for key in ("seed", "threads", "objective")})
        threads = int(cfg.threads) or _threads_per_job(hydra_cfg)
        if threads:
            torch.set_num_threads(threads)
        seed_everything(int(cfg.seed))
        write_environment(out_dir, OmegaConf.select(cfg, "model.device", default="cpu"))  # versions, kernels, commit
        metrics = run(cfg, out_dir)
        if cfg.objective and cfg.objective not in metrics:  # (the run's results are written by now)
            raise AnatomyError(f"objective {cfg.objective!r} is not among this job's metrics")
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: recorded as such, not as a finished run; a sweep stops
        error = err
        write_failure(out_dir, err)
        raise
    except Exception as err:  # recorded in the run folder; a sweep goes on with its next job
        error = err
        write_failure(out_dir, err)
        if not multirun and isinstance(err, AnatomyError):  # bad input: the message, not a traceback
            log.error("%s (recorded in %s/error.txt)", err, out_dir)
            raise SystemExit(1) from None
        if not multirun:
            raise
        log.error("job failed (%s: %s); recorded in %s/error.txt", type(err).__name__, err, out_dir)
    finally:
        logger.finish(metrics, out_dir, error)
    if error is None:
        print(summary(metrics, out_dir / "hypotheses.csv"))
    if cfg.objective:
        if error is not None:
            raise error  # a sweeper cannot go on without the job's objective
        return float(metrics[cfg.objective])
    return None


class FailedJobs(Callback):
    """At the end of a sweep: how many of its jobs failed (each left its error.txt), and exit status 1
    if any did. The sweep itself goes on past a failed job (`job`)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.start = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        def now(path: Path) -> bool:  # written by this sweep, not by an earlier one into the same folder
            return path.exists() and path.stat().st_mtime >= self.start

        mine = [p.parent for p in sweep.rglob(".hydra") if now(p)]
        failed = sorted(str(job) for job in mine if now(job / "error.txt"))
        if failed:
            log.error("%d of %d jobs failed, each with its error.txt: %s", len(failed), len(mine), ", ".join(failed))
            raise SystemExit(1)


class FreshFolder(Callback):
    """Before a run or a sweep: refuse a folder that already holds an earlier one's record, before
    Hydra writes anything there. Hydra would overwrite its `.hydra/` (the record of that run) and the
    new results would mix with the old ones. The default folders are unique to the microsecond, so
    only a folder named by hand (`hydra.run.dir=`, `hydra.sweep.dir=`) can meet this."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._refuse("hydra.run.dir", config.hydra.run.dir, (".hydra", "metrics.json", "error.txt"), "run")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._refuse("hydra.sweep.dir", config.hydra.sweep.dir, ("multirun.yaml",), "sweep")

    @staticmethod
    def _refuse(key: str, folder: str, records: tuple[str, ...], what: str) -> None:
        found = [name for name in records if (Path(folder) / name).exists()]
        if found:
            record = found[0]
            print(f"{key}={folder} already holds an earlier {what} (its {record}); a new one there would "
                  f"overwrite that record and mix its results with the new ones. Set {key} to a new "
                  "folder, or move the earlier one away.", file=sys.stderr)
            raise SystemExit(1)


def _threads_per_job(hydra_cfg) -> int:
    """With a parallel launcher (joblib), share the cores among the jobs; otherwise torch's default."""
    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=None)
    if not n_jobs:
        return 0
    n_jobs = os.cpu_count() if int(n_jobs) < 0 else int(n_jobs)
    return max(1, (os.cpu_count() or 1) // max(1, n_jobs))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
