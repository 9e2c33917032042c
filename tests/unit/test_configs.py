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


def typecheck(path: str, node: DictConfig) -> None:
    """The node's values have its target's field types (what `anatomy` checks before a run)."""
    from anatomy.errors import check_types

    values = OmegaConf.to_container(node, resolve=True)
    check_types(path, get_class(node._target_), {k: v for k, v in values.items() if not OmegaConf.is_missing(node, k)})


@pytest.mark.parametrize("group,option", OPTIONS)
def test_option_values_have_their_fields_types(group, option):
    for path, node in target_nodes(compose(f"{group}={option}")):
        typecheck(path, node)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_binds(experiment):
    cfg = compose(f"experiment={experiment}")
    for path, node in target_nodes(cfg):
        bind(path, node)
        typecheck(path, node)
    header = (REPO / "experiments" / f"{experiment}.yaml").read_text().splitlines()[:12]
    assert any("anatomy" in line and line.startswith("#") for line in header), "say the command line in the header"
    assert "# @package _global_" in (REPO / "experiments" / f"{experiment}.yaml").read_text()


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e.startswith(("audit_", "threshold_"))])
def test_an_audit_study_stops_after_the_audit(experiment):
    # the default study trains: an audit (or a sweep over the audit's thresholds) must say it does not
    cfg = compose(f"experiment={experiment}")
    assert cfg.trainer._target_ == "anatomy.trainers.NoTrainer" and not cfg.trainer.enabled
    assert cfg.intervention._target_ == "anatomy.interventions.NoIntervention"
    assert cfg.eval._target_ == "anatomy.eval.NoEval"


def test_a_misspelled_key_fails_to_bind():
    cfg = compose("+hypothesis.alpah=0.1")
    with pytest.raises(AssertionError, match="alpah"):
        bind("hypothesis", cfg.hypothesis)


def test_experiments_are_reachable_from_configs():
    assert (CONFIG_DIR / "experiment").resolve() == (REPO / "experiments").resolve()
    assert EXPERIMENTS, "experiments/ holds no study"


def test_type_check_accepts_what_the_fields_take_and_names_what_they_do_not():
    from anatomy.data.synthetic import SyntheticData
    from anatomy.errors import AnatomyError, check_types
    from anatomy.interventions.filtering import DataFiltering

    check_types("intervention", DataFiltering, {"threshold": 1, "presence_threshold": None, "_target_": "x"})
    check_types("data", SyntheticData, {"rates": {"markdown": [1, 0.5]}, "n_pairs": 10})
    for values, where in [({"threshold": "high"}, "intervention.threshold"),
                          ({"two_sided": 1}, "intervention.two_sided"),
                          ({"presence_threshold": [0.5]}, "intervention.presence_threshold")]:
        with pytest.raises(AnatomyError, match=f"config {where}: expected"):
            check_types("intervention", DataFiltering, values)
    with pytest.raises(AnatomyError, match=r"data.rates.markdown\[0\]: expected a number"):
        check_types("data", SyntheticData, {"rates": {"markdown": [None, 0.5]}})
    with pytest.raises(AnatomyError, match="data.n_pairs: expected a whole number"):
        check_types("data", SyntheticData, {"n_pairs": True})


def test_combinations_that_cannot_work_fail_or_warn_when_the_stages_are_built(caplog):
    import logging

    from anatomy.errors import AnatomyError
    from anatomy.pipeline import build

    with pytest.raises(AnatomyError, match="an intervention needs a trainer"):
        build(compose("intervention=feature_ablation", "trainer=none"))
    with pytest.raises(AnatomyError, match="acts on selected concepts"):
        build(compose("intervention=data_filtering", "select.block=[]"))
    with caplog.at_level(logging.WARNING, logger="anatomy.pipeline"):
        build(compose("intervention=feature_steering", "trainer=dpo"))
        assert not caplog.records  # steering is what DPO is measured with
        build(compose("intervention=feature_steering", "trainer=reward_model"))
    (warned,) = [r.getMessage() for r in caplog.records]
    assert "feature_steering with trainer=reward_model" in warned and "data_reweighting" in warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anatomy.pipeline"):  # a person's decisions, and nothing acts on them
        build(compose("intervention=none", "trainer=dpo", "select.verdicts=verdicts.yaml"))
    (warned,) = [r.getMessage() for r in caplog.records]
    assert "select.verdicts=verdicts.yaml is not applied: intervention=none" in warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anatomy.pipeline"):
        build(compose("intervention=none", "trainer=dpo", "select.amplify=[sorry]", "select.verdicts=v.yaml"))
    (warned,) = [r.getMessage() for r in caplog.records]
    assert "select.verdicts=v.yaml and select.amplify=['sorry'] are not applied: intervention=none" in warned


def test_a_trainer_setting_out_of_range_is_named_with_its_value():
    from anatomy.errors import AnatomyError
    from anatomy.trainers.dpo import DPO
    from anatomy.trainers.reward import RewardModel

    with pytest.raises(AnatomyError, match=r"^trainer.max_steps=-1 \(must be >= 0"):
        DPO(max_steps=-1)
    with pytest.raises(AnatomyError, match=r"trainer.beta=0.0 \(must be > 0\); trainer.batch_size=0 \(must be >= 1\)"):
        DPO(beta=0.0, batch_size=0)
    with pytest.raises(AnatomyError, match=r"^trainer.lr=-0.1 \(must be > 0\)$"):
        RewardModel(lr=-0.1)
