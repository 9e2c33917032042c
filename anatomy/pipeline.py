"""The loop, stage by stage: data -> model -> SAE -> features -> hypotheses -> evidence, the
significant hypotheses tested again on the held-out pairs, or on the validation pairs when the data
source sets some apart (replication), before the evidence.

Every config node is instantiated (and so validated) before anything is loaded; the data are
read and checked, and the hook and SAE width are checked against the model's config, before any
model is built or trained. Each file is written atomically: the audit's before any training starts,
metrics.json again at the end.

    from anatomy.pipeline import run
    metrics = run(cfg, out_dir)        # cfg: the composed Hydra config
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from anatomy.cache import cached_dir, code_digest, stage_code, versions
from anatomy.errors import AnatomyError, check_types
from anatomy.eval import NoEval
from anatomy.eval.accuracy import distinct_from_zero
from anatomy.eval.evaluate import accuracy_change
from anatomy.interventions import NoIntervention
from anatomy.interventions.plan import Plan, edit_energy, plan_for, planted_balance
from anatomy.interventions.steering import FeatureSteering
from anatomy.evidence import concept_groups, promoted_tokens, snippets, top_tokens
from anatomy.hypotheses.ground_truth import group_purity, name_concept, score
from anatomy.models.base import check_lengths
from anatomy.models.hooks import check_points
from anatomy.outputs import (again, length_note, strongest_first, write_margins, write_metrics, write_outputs,
                             write_verdicts)
from anatomy.select import Selection

log = logging.getLogger(__name__)
NODES = ("data", "model", "sae", "featurize", "hypothesis", "evidence", "select", "intervention", "trainer", "eval")
# (the logger node is the CLI's: it starts before the pipeline and closes after it, also on failure)


@dataclass
class Stages:
    data: object
    model: object
    sae: object
    featurize: object
    hypothesis: object
    evidence: object
    select: object
    intervention: object
    trainer: object
    eval: object


def build(cfg: DictConfig) -> Stages:
    """Instantiate every config node; a wrong key or value fails here, naming the node."""
    stages = Stages(**{name: instantiate_node(cfg, name) for name in NODES})
    trains = getattr(stages.trainer, "enabled", False)
    acts = not isinstance(stages.intervention, NoIntervention)
    if acts and not trains:
        raise AnatomyError("an intervention needs a trainer: set trainer=dpo (or trainer=reward_model), or intervention=none")
    if acts and not (stages.select.block or stages.select.amplify or stages.select.verdicts):
        raise AnatomyError(f"intervention={cfg.intervention._target_.rsplit('.', 1)[-1]} acts on selected concepts: "
                           "set select.block=[...], select.amplify=[...] or select.verdicts=FILE (only data=synthetic "
                           "sets a default, its planted markdown). On your data, audit first with trainer=none "
                           "intervention=none eval=none and read hypotheses.md")
    decided = [f"select.{key}={getattr(stages.select, key)}" for key in ("verdicts", "amplify")
               if getattr(stages.select, key)]  # (not select.block: data=synthetic sets one by default)
    if trains and not acts and decided:
        log.warning("%s %s not applied: intervention=none trains without intervention; set "
                    "intervention=data_reweighting (or another) to act on %s", " and ".join(decided),
                    "are" if len(decided) > 1 else "is", "them" if len(decided) > 1 else "it")
    if trains and isinstance(stages.eval, NoEval):
        log.warning("trainer is set but eval=none: the trained model is saved, nothing is measured")
    if trains and isinstance(stages.intervention, FeatureSteering):
        from anatomy.trainers.reward import RewardModel

        if isinstance(stages.trainer, RewardModel):
            log.warning("intervention=feature_steering with trainer=reward_model: the vector is added to both "
                        "responses of a pair and a reward model learns from their difference, so supplying a "
                        "concept does not stand in for learning it (the README's reward-model comparison: it "
                        "removed none of markdown's shift); to block a concept in a reward model, prefer "
                        "intervention=data_reweighting or data_filtering")
    return stages


def instantiate_node(cfg: DictConfig, name: str):
    """One config node's object, its values checked against its target's field types first; an error
    names the node and the key."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf.errors import MissingMandatoryValue

    node = cfg.get(name)
    if node is None or "_target_" not in node:
        raise AnatomyError(f"config node {name!r} is missing or has no _target_")
    try:
        check_types(name, _target_class(node._target_), OmegaConf.to_container(node, resolve=True))
        return instantiate(node, _convert_="all")
    except MissingMandatoryValue as err:
        raise AnatomyError(f"config {name}: {err.full_key or name} is required; set {err.full_key}=...") from None
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, AnatomyError):
            raise cause from None
        raise AnatomyError(f"config {name} ({node['_target_']}): {cause}") from None


def check_loaded(stages: Stages, model, trains: bool) -> None:
    """Checks that need the loaded model's modules: the hook points the SAE config and the
    intervention name exist on them, and every configured sequence length fits its positions."""
    known = [getattr(stages.sae, "hook", None), *stages.intervention.hook_points()]
    check_points(model.model, [h for h in known if h])
    check_lengths(model, {"sae.max_length": getattr(stages.sae, "max_length", None),
                          "featurize.max_length": stages.featurize.max_length,
                          "trainer.max_length": getattr(stages.trainer, "max_length", None) if trains else None,
                          "eval.max_length": getattr(stages.eval, "max_length", None)})


def _target_class(target: str) -> type | None:
    """The class a node's _target_ names, or None if it does not import (instantiate then says why)."""
    from hydra.utils import get_class

    try:
        return get_class(target)
    except Exception:
        return None


class Timer:
    def __init__(self):
        self.metrics: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        log.info("stage %s ...", stage)
        yield
        self.metrics[f"timing/{stage}_s"] = round(time.perf_counter() - start, 3)


def run(cfg: DictConfig, out_dir: Path) -> dict[str, float]:
    stages = build(cfg)
    timer = Timer()
    metrics: dict[str, float] = {"seed": float(cfg.seed)}
    with timer("data"):
        data = stages.data.load()
    metrics.update(data.report)
    metrics.update({"data/train": float(len(data.train)), "data/heldout": float(len(data.heldout))})
    if data.validation:
        metrics["data/validation"] = float(len(data.validation))
    probes = stages.eval.probe_set(data) if hasattr(stages.eval, "probe_set") else []
    if hasattr(stages.eval, "validation_probe_set"):  # (read and checked now, too)
        data.validation_probes = stages.eval.validation_probe_set(data)
    if not data.heldout and not isinstance(stages.eval, NoEval):
        log.warning("data: no held-out pairs (data.heldout_fraction=0?): eval measures the learned shifts only, "
                    "not held-out accuracy")
    spec = stages.model.spec()
    trains = getattr(stages.trainer, "enabled", False)
    stages.model.check(trains)  # the device exists here, and training can run on it
    if trains:
        from anatomy.trainers.common import check_precision

        check_precision(stages.trainer, getattr(stages.model, "device", "cpu"))  # and its mixed precision
    stages.sae.check(spec)  # the hook exists and the SAE fits the model, before any weight loads
    stages.intervention.check(spec)  # and so do the intervention's own hook points
    stages.select.check()  # and the verdicts file reads
    texts = data.texts()
    with timer("model"):
        model, hit = stages.model.load(texts)
    metrics["cache/model"] = float(hit)
    check_loaded(stages, model, trains)  # what only its modules tell, before the SAE and the audit
    fits = stages.trainer.fits(model.tokenizer, data.train) if trains else None  # the pairs TRL keeps (none: an error)
    with timer("sae"):
        sae, hit = stages.sae.load(model, texts, model.key)
    metrics["cache/sae"] = float(hit)
    check_points(model.model, [sae.hook])  # a pretrained or local SAE's own hook, before featurize
    stages.select.check_sae(sae.fingerprint, sae.d_sae)  # a verdicts file written for this SAE, not another
    metrics.update({"sae/d_sae": float(sae.d_sae), "sae/d_in": float(sae.d_in)})
    with timer("features"):
        feats, hit, features_key = stages.featurize.cached(model, sae, data.train)
    metrics["cache/features"] = float(hit)
    metrics.update(stages.featurize.count_full(feats))
    with timer("hypotheses"):
        table, hit = test_hypotheses(stages.hypothesis, feats, features_key)
    metrics["cache/hypotheses"] = float(hit)
    unseen = data.validation or data.heldout  # validation pairs, when set apart: the held-out ones stay untouched
    needs = 3 if stages.hypothesis.control_length else 2  # (the length fit has two parameters)
    if stages.hypothesis.replicate and table["significant"].any() and len(unseen) >= needs:
        with timer("replication"):
            table, replication = replicate_hypotheses(stages, model, sae, table, unseen)
        metrics.update(replication)
        metrics["audit/replication_on_validation"] = float(bool(data.validation))
    elif stages.hypothesis.replicate and table["significant"].any():  # nothing held out to test them on
        which = "validation pairs (data.validation_fraction)" if data.validation else \
            "held-out pairs (data.heldout_fraction=0?)"
        log.warning("hypothesis.replicate: fewer than %d %s: the hypotheses are not tested again on pairs they "
                    "were not found on", needs, which)
    with timer("evidence"):
        details = gather_evidence(stages.evidence, feats, table, sae, model)
    significant, length_diff = table[table["significant"]], feats.length_diff
    metrics.update({
        "audit/chosen_longer": float((length_diff > 0).mean()),  # shares of the pairs: length, a concept itself
        "audit/chosen_shorter": float((length_diff < 0).mean()),
        "audit/n_pairs": float(feats.chosen.shape[0]),
        "audit/n_features": float(sae.d_sae),
        "audit/n_tested": float(len(table)),
        "audit/n_significant": float(len(significant)),
        "audit/n_significant_chosen": float((significant["direction"] == "chosen").sum()),
        "audit/n_significant_rejected": float((significant["direction"] == "rejected").sum()),
    })
    if "group" in table.columns:
        metrics["audit/n_groups"] = float(table["group"].nunique())
    note = length_note(metrics, stages.hypothesis.control_length)
    if note:
        log.warning(note)
    if data.concepts:
        named = [
            name_concept(top.split("|"), [s["text"] for s in details[int(f)]["snippets"]], d, data.concepts)
            for f, d, top in zip(significant["feature"], significant["direction"], significant["top_tokens"])
        ]
        table["concept"] = None
        table.loc[significant.index, "concept"] = named
        # +1 where the feature tracks the concept itself (it favours the side the concept was planted
        # on), -1 where it tracks the concept's alternative (complying, for refusal; a wrong answer)
        planted = {c.name: c.direction for c in data.concepts}
        table["concept_sign"] = np.nan
        table.loc[significant.index, "concept_sign"] = [
            np.nan if name is None else 1.0 if d == planted[name] else -1.0 for name, d in zip(named, significant["direction"])]
        metrics.update(score(named, data.concepts))
        if "group" in table.columns:
            metrics["audit/group_purity"] = group_purity(named, significant["group"].astype(float).tolist())
    metrics.update(timer.metrics)
    header = {
        "data": cfg.data._target_.rsplit(".", 1)[-1], "model": model.path, "sae": sae.source, "hook": sae.hook,
        "test": cfg.hypothesis.test, "correction": cfg.hypothesis.correction, "alpha": cfg.hypothesis.alpha,
        "pooling": cfg.featurize.pooling, "sae_fingerprint": sae.fingerprint,
        "replicated_on": again(metrics),  # which pairs the replication columns are of
    }
    # The audit's results are on disk before any training starts.
    write_outputs(out_dir, table, details, metrics, header, stages.evidence.max_report)
    if trains:
        metrics.update(train_and_evaluate(stages, data, probes, model, sae, feats, table, header, timer, out_dir,
                                          fits))
        metrics.update(timer.metrics)
        write_metrics(out_dir, metrics)
    return metrics


def gather_evidence(ev, feats, table, sae, model) -> dict[int, dict]:
    """Evidence a person can read: every tested feature's top tokens and, if `evidence.group_corr` is
    set, each significant one's concept group (columns added to `table`); per significant feature,
    its snippets and promoted tokens (returned)."""
    tok = model.tokenizer
    table["top_tokens"] = ["|".join(t) for t in top_tokens(feats, table["feature"].to_numpy(), tok, ev.n_tokens)]
    if ev.group_corr is not None:  # one concept read by several features: decided together
        ordered = strongest_first(table)["feature"].to_numpy()
        groups = dict(zip(ordered, concept_groups(feats, ordered, ev.group_corr)))
        table["group"] = table["feature"].map(groups).astype("Int64")
    significant = table.loc[table["significant"], "feature"].to_numpy()
    promoted = promoted_tokens(sae.sae, model.model, significant, tok, ev.n_promoted)
    return {int(f): {"snippets": snippets(feats, int(f), tok, ev.n_snippets, ev.context), "promoted": prom}
            for f, prom in zip(significant, promoted)}


def test_hypotheses(hypothesis, feats, features_key: str):
    """The hypotheses table through the stage cache (keyed by the test's config and the features)."""
    import pandas as pd

    def build(folder: Path) -> None:
        hypothesis.run(feats.chosen, feats.rejected, feats.length_diff).to_parquet(folder / "table.parquet")

    config = {k: v for k, v in asdict(hypothesis).items() if k != "replicate"}  # replication is not cached here
    key = {"hypothesis": config, "features": features_key,
           "code": stage_code(type(hypothesis).__module__)}
    folder, hit = cached_dir("hypotheses", key, build)
    return pd.read_parquet(folder / "table.parquet"), hit


def replicate_hypotheses(stages, model, sae, table, heldout) -> tuple:
    """The significant hypotheses (at least one) tested again on pairs held out from the audit (the
    validation pairs, or else the held-out ones; `HypothesisTest.replication`), featurized through the
    same model and SAE (cached): their columns joined to the table.
    -> (table, audit/heldout_pairs, audit/n_replicated, audit/replication_rate, audit/heldout_same_side:
    the share whose held-out effect is at least on the same side, significant or not)"""
    held, hit, _ = stages.featurize.cached(model, sae, heldout)
    replication = stages.hypothesis.replication(table, held.chosen, held.rejected, held.length_diff)
    table = table.merge(replication, on="feature", how="left")
    sig = table[table["significant"]]
    n_replicated = int(replication["replicated"].sum())
    same_side = float((np.sign(sig["heldout_effect"]) == np.sign(sig["effect"])).mean())
    return table, {"audit/heldout_pairs": float(len(heldout)), "audit/n_replicated": float(n_replicated),
                   "audit/replication_rate": n_replicated / len(replication),
                   "audit/heldout_same_side": same_side, "cache/heldout_features": float(hit)}


def train_and_evaluate(stages, data, probes, model, sae, feats, table, header, timer,
                       out_dir: Path, fits: np.ndarray) -> dict[str, float]:
    """Decide -> intervene -> train -> evaluate (and, to compare, train once without intervention).
    The intervention is planned on the training pairs that `fits` says TRL keeps, and so is the baseline."""
    import json

    from anatomy.outputs import atomic_write

    metrics: dict[str, float] = {}
    if isinstance(stages.intervention, NoIntervention):  # nothing acts on a selection: do not require one
        selection = Selection([], [], {}, {})
    else:
        selection = stages.select.run(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "selection.json", json.dumps(selection.to_json(), indent=2) + "\n")
    write_verdicts(out_dir, table, header, {**{f: "block" for f in selection.block},
                                            **{f: "amplify" for f in selection.amplify}})
    metrics.update(selection.report())
    with timer("intervention"):
        plan = plan_for(stages.intervention, selection, feats, sae, fits)
        if plan.edits:  # how much of the activations each edit changes, on the starting model
            plan.report.update(edit_energy(model, plan.edits, data.train, max_length=stages.trainer.max_length))
    metrics.update(plan.report)
    metrics.update(planted_balance(data.train, plan.weights))  # synthetic data: the plan against the truth
    if not isinstance(stages.eval, NoEval):  # what eval.max_length will cut, said before training
        metrics.update(stages.eval.count_cut(model.tokenizer, data.heldout + data.validation + data.source_heldout,
                                             probes + data.validation_probes))
    with timer("train"):
        trained = stages.trainer.train(model, data.train, plan)
    metrics.update(trained.report)
    metrics["train/pairs_too_long"] += float((~fits).sum())  # left out before planning, + any TRL dropped
    trained.policy.save_pretrained(out_dir / "model")
    trained.tokenizer.save_pretrained(out_dir / "model")
    if isinstance(stages.eval, NoEval):
        return metrics
    with timer("eval"):
        measured, margins = stages.eval.run(trained, data.heldout, probes, table)
        validation, val_margins = stages.eval.accuracy(trained, data.validation, "validation")  # to choose settings by
        validation.update(stages.eval.shifts(trained, data.validation_probes, split="validation"))
        source, source_margins = stages.eval.accuracy(trained, data.source_heldout, "source")  # (a shift's own)
    metrics.update(measured)
    metrics.update(validation)
    metrics.update(source)
    base_margins = base_val_margins = None
    if stages.eval.compare_baseline and not isinstance(stages.intervention, NoIntervention):
        with timer("baseline"):
            base, base_margins, base_val_margins, hit = measure_baseline(stages, data, probes, model, fits)
            base.update(stages.eval.compare(base, table, prefix="eval/baseline"))
        metrics["cache/baseline"] = float(hit)
        metrics.update(base)
        metrics.update(accuracy_change(margins, base_margins))
        if data.validation:
            metrics.update(accuracy_change(val_margins, base_val_margins, split="validation"))
        for key, value in list(base.items()):  # on the probes, and on the validation probes
            measure, _, concept = key.removeprefix("eval/baseline/").partition("/")
            if measure in ("shift", "validation_shift") and distinct_from_zero(
                    value, base.get(f"eval/baseline/{measure}_se/{concept}")):
                metrics[f"eval/{measure}_reduction/{concept}"] = 1.0 - metrics[f"eval/{measure}/{concept}"] / value
    write_margins(out_dir, "heldout", data.heldout, margins, base_margins)
    write_margins(out_dir, "validation", data.validation, val_margins, base_val_margins)
    write_margins(out_dir, "source", data.source_heldout, source_margins)
    return metrics


def measure_baseline(stages, data, probes, model, fits: np.ndarray
                     ) -> tuple[dict[str, float], np.ndarray, np.ndarray, bool]:
    """The same training without intervention (on the same pairs that fit), measured, through the
    stage cache (keyed by the trainer, the model, the pairs and probes, the eval config, and the
    source of the code that trains and measures it, so a cached baseline measured by older code is
    redone): a sweep over interventions or selections trains it once. -> (eval/baseline/* metrics,
    its held-out margins, its validation margins, cache hit)"""
    import hashlib
    import json

    def build(folder: Path) -> None:
        baseline = stages.trainer.train(model, data.train, Plan(weights=None if fits.all() else fits.astype(float)))
        measured, margins = stages.eval.measure(baseline, data.heldout, probes, prefix="eval/baseline")
        validation, val_margins = stages.eval.accuracy(baseline, data.validation, "validation", prefix="eval/baseline")
        validation.update(stages.eval.shifts(baseline, data.validation_probes, "eval/baseline", "validation"))
        (folder / "metrics.json").write_text(json.dumps({**measured, **validation}, indent=1, sort_keys=True))
        np.save(folder / "heldout_margins.npy", margins)
        np.save(folder / "validation_margins.npy", val_margins)

    chosen_by = (data.validation,) if data.validation else ()  # (so entries from before validation pairs still serve)
    chosen_by += (data.validation_probes,) if data.validation_probes else ()
    texts = hashlib.sha256(repr((data.train, data.heldout, probes) + chosen_by).encode()).hexdigest()
    key = {"trainer": asdict(stages.trainer), "model": model.key, "data": texts, "eval": asdict(stages.eval),
           "code": stage_code(type(stages.trainer).__module__, type(stages.eval).__module__),
           "recipe": code_digest(measure_baseline),  # what it saves: an entry saved by another recipe is redone
           "versions": versions("torch", "transformers", "trl")}
    folder, hit = cached_dir("baseline", key, build)
    return (json.loads((folder / "metrics.json").read_text()), np.load(folder / "heldout_margins.npy"),
            np.load(folder / "validation_margins.npy"), hit)
