"""Every option of every config group, and every experiment, composes; every `_target_` node's keys
bind to its target's signature, so a misspelled key fails here and not an hour into a run."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from conftest import CONFIG_DIR, REPO, compose

GROUPS = ["data", "model", "sae", "hypothesis", "intervention", "trainer", "eval", "logger"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONFIG_DIR / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))


def target_nodes(node, path="") -> list[tuple[str, DictConfig]]:
    """Every sub-config with a _target_, with its dotted path."""
    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((path or "<root>", node))
        for key in node.keys():
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                found += target_nodes(child, f"{path}.{key}" if path else str(key))
    return found


def bind(path: str, node: DictConfig) -> None:
    target = get_class(node._target_)
    keys = {k: None for k in node.keys() if not str(k).startswith("_")}
    try:
        inspect.signature(target).bind(**keys)
    except TypeError as err:
        raise AssertionError(f"{path}: keys {sorted(keys)} do not bind to {node._target_}: {err}") from None


def test_every_group_has_options():
    for group in GROUPS:
        assert any(g == group for g, _ in OPTIONS), f"config group {group} has no option"


@pytest.mark.parametrize("group,option", OPTIONS)
def test_option_composes_and_binds(group, option):
    cfg = compose(f"{group}={option}")
    nodes = target_nodes(cfg)
    assert any(path == group for path, _ in nodes), f"{group}={option} has no _target_"
    for path, node in nodes:
        bind(path, node)


@pytest.mark.parametrize("group,option", OPTIONS)
def test_option_instantiates(group, option):
    """Values pass each target's validation (options with a required ??? value are skipped)."""
    from hydra.utils import instantiate

    node = compose(f"{group}={option}")[group]
    if OmegaConf.missing_keys(node):
        pytest.skip(f"{group}={option} needs {sorted(OmegaConf.missing_keys(node))} from the user")
    instantiate(node)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_binds(experiment):
    cfg = compose(f"experiment={experiment}")
    for path, node in target_nodes(cfg):
        bind(path, node)
    header = (REPO / "experiments" / f"{experiment}.yaml").read_text().splitlines()[:12]
    assert any("anatomy" in line and line.startswith("#") for line in header), "say the command line in the header"
    assert "# @package _global_" in (REPO / "experiments" / f"{experiment}.yaml").read_text()


def test_a_misspelled_key_fails_to_bind():
    cfg = compose("+hypothesis.alpah=0.1")
    with pytest.raises(AssertionError, match="alpah"):
        bind("hypothesis", cfg.hypothesis)


def test_experiments_are_reachable_from_configs():
    assert (CONFIG_DIR / "experiment").resolve() == (REPO / "experiments").resolve()
    assert EXPERIMENTS, "experiments/ holds no study"
