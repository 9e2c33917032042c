"""Studies as sweeps: the stage cache across jobs, W&B read-back, reproduction from a run's saved
config, failures that do not stop a sweep, a run stopped by hand, an interrupted sweep resumed, and the sweep report
(the cache test and the report test share one two-job sweep).
These run the real `anatomy` command in subprocesses, on the small study (its model and SAE come
from the session's stage cache)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import AUDIT, SMALL

pytestmark = pytest.mark.slow

# Smaller still than SMALL, for a test that must build the model and SAE itself (about half the time).
TINY = ("data.n_pairs=200", "model.train_steps=60", "sae.training_tokens=50000")
STABLE = lambda m: {k: v for k, v in m.items() if not k.startswith(("timing/", "cache/"))}  # noqa: E731


def anatomy(cwd: Path, *args: str, cache: str | None = None, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "ANATOMY_CACHE": cache or os.environ["ANATOMY_CACHE"]}
    return subprocess.run([sys.executable, "-m", "anatomy.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900, **popen)


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A two-job sweep of the small study, none and data_filtering, trained briefly (one sweep for the
    cache test and the report test)."""
    tmp_path = tmp_path_factory.mktemp("two-jobs")
    sweep = tmp_path / "sweep"
    done = anatomy(tmp_path, "-m", *SMALL, "trainer=dpo", "trainer.epochs=0.5", "eval.compare_baseline=false",
                   "intervention=none,data_filtering", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep


def test_second_job_reuses_the_cached_stages(sweep):
    second = metrics(sweep / "1")
    for stage in ("model", "sae", "features", "hypotheses"):
        assert second[f"cache/{stage}"] == 1.0, stage
    assert second["intervention/n_dropped"] > 0 and "eval/heldout_accuracy" in second
    assert metrics(sweep / "0")["intervention/n_edits"] == 0.0
    _assert_keyed_by_code(sweep / "1")


def _assert_keyed_by_code(job: Path) -> None:
    """Each stage entry the job used is keyed by the code that built it (`stage_code`), so an entry
    built by other code is never served: model -> SAE -> features -> hypotheses, found through the
    upstream keys."""
    import re

    from anatomy.cache import stage_code

    header = (job / "hypotheses.md").read_text()
    model, sae = re.search(r"model `([^`]+)`, SAE `([^`]+)`", header).groups()
    key = lambda folder: json.loads((Path(folder) / "key.json").read_text())  # noqa: E731
    assert key(model)["code"] == stage_code("anatomy.models.tiny")
    assert key(sae)["code"] == stage_code("anatomy.saes.train") and key(sae)["model"] == model
    root = Path(os.environ["ANATOMY_CACHE"])
    features = [f.parent for f in (root / "features").glob("*/key.json") if key(f.parent)["sae"] == sae]
    assert features and all(key(f)["code"] == stage_code("anatomy.features") for f in features)
    names = {f.name for f in features}
    tables = [f.parent for f in (root / "hypotheses").glob("*/key.json") if key(f.parent)["features"] in names]
    assert tables and all(key(t)["code"] == stage_code("anatomy.hypotheses.test") for t in tables)


def test_wandb_offline_run_reads_back(tmp_path):
    done = anatomy(tmp_path, *SMALL, *AUDIT, "logger=wandb")
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/*/wandb/offline-run-*")
    wandb_cli = Path(sys.executable).with_name("wandb")
    read = subprocess.run([str(wandb_cli), "leet", "inspect", "--summary", "--json", str(run_dir)],
                          capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    record = json.loads(read.stdout)
    on_disk = metrics(run_dir.parents[1])
    assert record["summary"]["audit/n_tested"] == on_disk["audit/n_tested"]
    assert record["summary"]["audit/n_significant"] == on_disk["audit/n_significant"]
    assert record["config"]["data"]["n_pairs"] == 400
    assert record["state"] in ("finished", "completed", "FINISHED", "success") or record.get("exit_code") == 0


def test_a_wandb_run_that_cannot_start_is_a_message_recorded_in_the_run_folder(tmp_path):
    # Online without a login (no WANDB_API_KEY, no ~/.netrc): wandb raises before anything is computed.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env.update(HOME=str(tmp_path), WANDB_MODE="online", TQDM_DISABLE="1")
    done = subprocess.run([sys.executable, "-m", "anatomy.cli", *SMALL, *AUDIT, "logger=wandb",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said[-3000:]
    assert "logger=wandb: cannot start a W&B run in WANDB_MODE=online" in said
    assert "wandb login" in said and "Traceback" not in said
    assert "No API key" in (tmp_path / "run" / "error.txt").read_text()
    assert not (tmp_path / "run" / "hypotheses.csv").exists()


def test_rerun_from_saved_config_reproduces_exactly(tmp_path):
    first = anatomy(tmp_path, *SMALL, *AUDIT, "hydra.run.dir=first")
    assert first.returncode == 0, first.stderr[-3000:]
    # Everything recomputed from scratch (a fresh cache), from the run's own record of its config.
    fresh = str(tmp_path / "fresh-cache")
    again = anatomy(tmp_path, "--config-path", str(tmp_path / "first" / ".hydra"), "--config-name", "config",
                    "hydra.run.dir=again", cache=fresh)
    assert again.returncode == 0, again.stderr[-3000:]
    assert metrics(tmp_path / "again")["cache/model"] == 0.0
    assert (tmp_path / "again" / "hypotheses.csv").read_text() == (tmp_path / "first" / "hypotheses.csv").read_text()
    assert STABLE(metrics(tmp_path / "again")) == STABLE(metrics(tmp_path / "first"))
    # and each run says what it ran on: the same machine, versions and code, its own command line
    first_env, again_env = (json.loads((tmp_path / run / "environment.json").read_text()) for run in ("first", "again"))
    assert {k: v for k, v in first_env.items() if k != "command"} == {k: v for k, v in again_env.items() if k != "command"}
    assert "--config-name" in again_env["command"] and "hydra.run.dir=first" in first_env["command"]
    # anatomy's own Hydra settings come back with the re-run (Hydra keeps them out of config.yaml):
    # its log's name, and the guard that refuses an earlier run's folder, here the record's own
    assert (tmp_path / "again" / "anatomy.log").is_file() and not (tmp_path / "again" / "cli.log").exists()
    record = {p: p.read_bytes() for p in (tmp_path / "first").rglob("*") if p.is_file()}
    over = anatomy(tmp_path, "--config-path", str(tmp_path / "first" / ".hydra"), "--config-name", "config",
                   "hydra.run.dir=first", cache=fresh)
    assert over.returncode == 1 and "hydra.run.dir=first already holds an earlier run" in over.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "first").rglob("*") if p.is_file()} == record
    # a record holds each group's values, not its option: switching a group from it is refused, with the way
    switch = anatomy(tmp_path, "--config-path", str(tmp_path / "first" / ".hydra"), "--config-name", "config",
                     "trainer=dpo", "hydra.run.dir=switched", cache=fresh)
    assert switch.returncode == 1 and not (tmp_path / "switched").exists()
    assert "trainer=dpo: a run's record cannot switch a config group" in switch.stderr
    assert f"anatomy {' '.join(SMALL)} intervention=none eval=none trainer=dpo" in switch.stderr


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    done = anatomy(tmp_path, "-m", *SMALL, *AUDIT, "hypothesis.alpha=0.05,2.0", f"hydra.sweep.dir={sweep}")
    assert metrics(sweep / "0")["audit/n_tested"] > 0
    error = (sweep / "1" / "error.txt").read_text()
    assert "alpha" in error.splitlines()[0]
    assert not (sweep / "1" / "metrics.json").exists()
    # At the end the sweep names its failed job and exits 1, so a script cannot take it for a success.
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"1 of 2 jobs failed, each with its error.txt: {sweep / '1'}" in done.stdout + done.stderr


def test_interrupted_sweep_resumes_from_the_cache(tmp_path):
    args = ("-m", *TINY, *AUDIT, "hypothesis.min_effect=0.2,0.3,0.4,0.5")
    env_cache = str(tmp_path / "cache")  # its own cache: the first job builds the model and SAE
    env = {**os.environ, "TQDM_DISABLE": "1", "ANATOMY_CACHE": env_cache}
    proc = subprocess.Popen([sys.executable, "-m", "anatomy.cli", *args, f"hydra.sweep.dir={tmp_path / 'killed'}"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while not (tmp_path / "killed" / "0" / "metrics.json").exists():
        assert proc.poll() is None and time.time() < deadline, "the sweep ended before its first job finished"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "3" / "metrics.json").exists(), "killed too late to test anything"
    # The kill leaves no half-written cache entry: every entry is complete (a temporary folder may remain).
    entries = [p for p in Path(env_cache).glob("*/*") if p.is_dir() and not p.name.startswith(".tmp-")]
    assert entries and all((p / ".complete").exists() for p in entries)
    resumed = anatomy(tmp_path, *args, f"hydra.sweep.dir={tmp_path / 'resumed'}", cache=env_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for job in range(4):
        m = metrics(tmp_path / "resumed" / str(job))
        assert m["cache/model"] == 1.0 and m["cache/sae"] == 1.0 and m["cache/features"] == 1.0
    assert STABLE(metrics(tmp_path / "resumed" / "0")) == STABLE(metrics(tmp_path / "killed" / "0"))


@pytest.mark.parametrize("stop,recorded,status", [(signal.SIGINT, "KeyboardInterrupt", -signal.SIGINT),
                                                  (signal.SIGTERM, "Terminated", 128 + signal.SIGTERM)],
                         ids=["ctrl-c", "sigterm"])
def test_a_run_stopped_by_hand_is_recorded_as_interrupted(tmp_path, stop, recorded, status):
    # Ctrl-C, or `kill` (SIGTERM, as a cluster's time limit sends), while the model pretrains (its own
    # cache, so there is a model to build): the run folder says so in error.txt, and the W&B run is
    # closed as failed, not as a finished run.
    env = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "ANATOMY_CACHE": str(tmp_path / "cache")}
    run_dir = tmp_path / "run"
    # The child starts with Ctrl-C's default action, as a command typed at a terminal does. A test run
    # started in the background by a non-interactive shell (`bash .ci/run &`) inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler: the signal would be ignored, rightly.
    proc = subprocess.Popen([sys.executable, "-m", "anatomy.cli", *SMALL, *AUDIT, "logger=wandb",
                             "model.train_steps=100000", f"hydra.run.dir={run_dir}"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log, deadline = run_dir / "anatomy.log", time.time() + 300
    try:
        while not (log.exists() and "pretraining the tiny LM" in log.read_text()):
            assert proc.poll() is None and time.time() < deadline, "the run ended before its pretraining"
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(stop)
        # Ctrl-C ends the process as SIGINT does (Python's way); SIGTERM with 143, as a shell reports it
        assert proc.wait(timeout=120) == status
    finally:
        if proc.poll() is None:  # never leave a 100,000-step pretraining running behind a failed test
            proc.kill()
            proc.wait()
    assert (run_dir / "error.txt").read_text().startswith(recorded)
    assert not (run_dir / "hypotheses.csv").exists()
    (offline,) = run_dir.glob("wandb/offline-run-*")
    read = subprocess.run([str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--summary", "--json",
                           str(offline)], capture_output=True, text=True, timeout=120)
    assert json.loads(read.stdout)["summary"]["error"].startswith(recorded)


def test_report_gathers_a_sweep(sweep):
    from anatomy.report import main as report

    report([str(sweep)])
    import pandas as pd

    table = pd.read_csv(sweep / "report.csv")
    assert set(table["override/intervention"]) == {"none", "data_filtering"}
    assert "eval/shift/markdown" in table.columns
    assert (sweep / "report.png").stat().st_size > 1000
    assert "<img" in (sweep / "report.html").read_text()
    assert table["env/torch_cpu_capability"].notna().all()  # each job's environment.json is gathered
    assert "different machines" not in (sweep / "report.md").read_text()  # one machine, one commit
    report([str(sweep), "--against", "intervention=none"])  # the filtering job against the none job
    table = pd.read_csv(sweep / "report.csv").set_index("override/intervention")
    assert table.loc["data_filtering", "baseline/eval/shift/markdown"] == table.loc["none", "eval/shift/markdown"]
    reduction = 1 - table.loc["data_filtering", "eval/shift/markdown"] / table.loc["none", "eval/shift/markdown"]
    assert f"{reduction:.0%} ({reduction:.0%})" in (sweep / "report.md").read_text()
