"""Shared test set-up: offline, a per-session stage cache, and a way to compose and run a study.

`compose(*overrides)` builds the config exactly as the `anatomy` command would (same config folder,
same defaults); `run_study(tmp_path, *overrides)` runs the pipeline into tmp_path and returns
(metrics, run folder). `SMALL` overrides shrink the default study so it runs in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"

# The default study, shrunk: fewer pairs, shorter pretraining, fewer SAE tokens.
SMALL = (
    "data.n_pairs=400",
    "model.train_steps=150",
    "sae.training_tokens=150000",
)


# A small subset of the shared HH-RLHF harmless test split, with a model and SAE sized for it.
def hh_rlhf_small(shared: Path) -> tuple[str, ...]:
    path = shared / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
    return ("data=hh_rlhf", f"data.path={path}", "data.max_pairs=200", "model.train_steps=100", "model.context=128",
            "sae.training_tokens=100000", "featurize.max_length=192")


# Stop after the audit (the default study also trains).
AUDIT = ("trainer=none", "intervention=none", "eval=none")


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def run_study(out_dir: Path, *overrides: str):
    import torch

    from anatomy.cli import seed_everything
    from anatomy.pipeline import run

    cfg = compose(*overrides)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    seed_everything(int(cfg.seed))
    return run(cfg, out_dir), out_dir


@pytest.fixture(scope="session", autouse=True)
def _stage_cache(tmp_path_factory):
    """One stage cache per test session, so tests share the tiny model and SAE they build."""
    if "ANATOMY_TEST_CACHE" in os.environ:  # reuse across sessions while developing
        os.environ["ANATOMY_CACHE"] = os.environ["ANATOMY_TEST_CACHE"]
    else:
        os.environ["ANATOMY_CACHE"] = str(tmp_path_factory.mktemp("anatomy-cache"))
    yield


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data is absent ({SHARED_DATA}); these tests need the shared datasets")
    return SHARED_DATA
