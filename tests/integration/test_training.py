"""Decide -> intervene -> train -> evaluate with real TRL training, on the small synthetic study.

The tiny model and SAE are the small default study's (built once per test session, then cached);
each DPO / reward-model run trains on the study's ~320 training pairs for 2 epochs.

The issue's claims, in small (1 seed, `STUDY`: 320 training pairs, 320 held-out ones so that
accuracies are not 80-pair coin flips), with each measured value in a comment:
- the baseline learns markdown; reweighting and filtering cut its shift by >= 80%, steering by
  >= 50%; ablation by >= 50% here (77% measured on one machine): its 80% holds for the mean over
  seeds at full size, not on every seed (57%, 112%, 119% in the README's study; 26%, 84%, 227% on
  another kind of machine), so a 1-seed test of 80% would test luck;
- held-out accuracy where markdown does not differ stays >= 95% of the baseline's for all four, and
  overall held-out accuracy for ablation and steering; for filtering and reweighting it does not
  (0.89x and 0.94x at full size: the README explains why), strict xfails that record it with this
  run's own numbers (which depend on the machine: 0.90x and 0.94x on one, 0.83x and 0.84x on another);
- amplifying refusal raises its shift.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from anatomy.cache import stage_code
from anatomy.errors import AnatomyError
from anatomy.interventions.plan import Plan
from anatomy.select import Select
from conftest import AUDIT, SMALL, compose, hh_rlhf_small, run_study

MARKDOWN = r'select.block=[key,recap,note,"**",":**","##","-","\n"]'  # strings naming the planted markdown concept
# The small study with as many held-out pairs as training ones (320 each).
STUDY = (*[o for o in SMALL if not o.startswith("data.n_pairs=")], "data.n_pairs=640", "data.heldout_fraction=0.5")
HOOK = "blocks.2.hook_resid_post"  # the small study's SAE hook


def n_hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.fixture(scope="module")
def study():
    """The small study's data and its (cached) tiny model."""
    from hydra.utils import instantiate

    cfg = compose(*SMALL)
    data = instantiate(cfg.data).load()
    model, _ = instantiate(cfg.model).load(data.texts())
    return data, model


@pytest.fixture
def no_model_is_built(monkeypatch):
    """Fail the test if anything loads or builds the model or the SAE."""
    from anatomy.models.tiny import TinyModel
    from anatomy.saes.train import TrainSAE

    def forbidden(*args, **kwargs):
        raise AssertionError("a model or SAE was loaded before the bad input was caught")

    for cls in (TinyModel, TrainSAE):
        monkeypatch.setattr(cls, "load", forbidden)


# -- weighted DPO ------------------------------------------------------------------------------


def _dpo_trainer(model, pairs, out_dir, **settings):
    """A WeightedDPOTrainer built as `DPO.train` builds it, with the whole set in one batch."""
    from datasets import Dataset
    from trl import DPOConfig

    from anatomy.trainers.common import frozen_copy, trl_args, weighted_rows
    from anatomy.trainers.dpo import DPO, WeightedDPOTrainer

    dpo = DPO(batch_size=len(pairs), **settings)
    reference = frozen_copy(model.model)
    policy = frozen_copy(model.model)
    for p in policy.parameters():
        p.requires_grad_(True)
    args = trl_args(DPOConfig, str(out_dir), dpo, policy, beta=dpo.beta, precompute_ref_log_probs=True,
                    **dpo.losses())
    trainer = WeightedDPOTrainer(model=policy, ref_model=reference, args=args,
                                 train_dataset=Dataset.from_list(weighted_rows(pairs, None)),
                                 processing_class=model.tokenizer)
    return trainer, policy, reference, dpo.beta


@torch.no_grad()
def _sequence_logps(model, batch):
    """Summed completion log-probs of each row, computed here independently of TRL."""
    ids, completion = batch["input_ids"], batch["completion_mask"]
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logps * completion[:, 1:]).sum(dim=1)


@torch.no_grad()
def _move_off_the_reference(policy):
    """Perturb the policy's weights (seeded), so its margins against the reference are not all 0."""
    torch.manual_seed(0)
    for p in policy.parameters():
        p.add_(0.02 * torch.randn_like(p))


def test_weighted_dpo_loss_is_trls_loss_with_unit_weights(study, tmp_path):
    from trl import DPOTrainer

    data, model = study
    n = 6
    trainer, policy, reference, beta = _dpo_trainer(model, data.train[:n], tmp_path)
    _move_off_the_reference(policy)
    batch = next(iter(trainer.get_train_dataloader()))
    assert torch.equal(batch["weight"], torch.ones(n))
    assert batch["input_ids"].shape[0] == 2 * n  # chosen rows, then rejected rows
    stock_inputs = {k: v for k, v in batch.items() if k != "weight"}

    stock = DPOTrainer._compute_loss(trainer, policy, dict(stock_inputs), False)
    ours = trainer._compute_loss(policy, dict(batch), False)
    assert abs(ours.item() - stock.item()) < 1e-6
    assert abs(stock.item() - np.log(2)) > 1e-3  # a real comparison, not two log(2)s

    # the per-pair loss, from log-probs computed here
    ref_chosen, ref_rejected = _sequence_logps(reference, batch).chunk(2)
    assert torch.allclose(ref_chosen, batch["ref_chosen_logps"], atol=1e-3)
    assert torch.allclose(ref_rejected, batch["ref_rejected_logps"], atol=1e-3)
    chosen, rejected = _sequence_logps(policy, batch).chunk(2)
    margin = (chosen - batch["ref_chosen_logps"]) - (rejected - batch["ref_rejected_logps"])
    per_pair = -F.logsigmoid(beta * margin)
    assert stock.item() == pytest.approx(per_pair.mean().item(), abs=1e-5)

    # a weight of 2 on one pair: the mean of w * loss_i
    weight = torch.ones(n)
    weight[2] = 2.0
    doubled = trainer._compute_loss(policy, {**batch, "weight": weight}, False)
    assert doubled.item() == pytest.approx((weight * per_pair).mean().item(), abs=1e-5)
    assert doubled.item() - ours.item() == pytest.approx(per_pair[2].item() / n, abs=1e-6)
    # and the gradient flows through the weighted loss
    doubled.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())


def test_rpo_loss_is_trls_sigmoid_plus_sft_with_unit_weights_and_weights_each_pairs_nll(study, tmp_path):
    """`trainer.sft_weight`: with unit weights the loss is TRL's own sigmoid + sft combination; with a
    weight of 2 on one pair, that pair counts twice in both terms."""
    from trl import DPOTrainer

    data, model = study
    n, alpha = 6, 0.5
    trainer, policy, reference, beta = _dpo_trainer(model, data.train[:n], tmp_path, sft_weight=alpha)
    assert trainer.loss_types == ["sigmoid", "sft"] and trainer.loss_weights == [1.0, alpha]
    _move_off_the_reference(policy)
    batch = next(iter(trainer.get_train_dataloader()))
    stock = DPOTrainer._compute_loss(trainer, policy, {k: v for k, v in batch.items() if k != "weight"}, False)
    ours = trainer._compute_loss(policy, dict(batch), False)
    assert abs(ours.item() - stock.item()) < 1e-5

    # from log-probs computed here: the DPO term, plus alpha times the chosen tokens' mean NLL
    chosen, rejected = _sequence_logps(policy, batch).chunk(2)
    margin = (chosen - batch["ref_chosen_logps"]) - (rejected - batch["ref_rejected_logps"])
    per_pair = -F.logsigmoid(beta * margin)
    tokens = batch["completion_mask"][:, 1:].chunk(2)[0].sum()
    assert stock.item() == pytest.approx(per_pair.mean().item() + alpha * (-chosen).sum().item() / tokens.item(),
                                         abs=1e-4)
    assert alpha * (-chosen).sum().item() / tokens.item() > 0.1  # the NLL term is really in it
    weight = torch.ones(n)
    weight[2] = 2.0
    doubled = trainer._compute_loss(policy, {**batch, "weight": weight}, False)
    expected = (weight * per_pair).mean() + alpha * (weight * -chosen).sum() / tokens
    assert doubled.item() == pytest.approx(expected.item(), abs=1e-4)


def test_reference_logps_are_cached_across_weights_and_train_exactly_as_computed(study, tmp_path, monkeypatch):
    """DPO's reference log-probs come from the stage cache when only the pair weights changed, and
    a run on cached ones trains exactly as a run that computes them. They are those of the starting
    model, without the plan's edits: an entry computed by a run that zeroes an activation serves a
    plain run, which then trains exactly as one that computed its own."""
    from anatomy.trainers.dpo import DPO

    data, model = study
    pairs = data.train[:32]
    dpo = DPO(max_steps=2, batch_size=8)
    weights = np.linspace(0.5, 1.5, len(pairs))
    monkeypatch.setenv("ANATOMY_CACHE", str(tmp_path / "cache"))  # an empty cache: the first cached run misses
    monkeypatch.setenv("ANATOMY_NO_CACHE", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        computed = dpo.train(model, pairs, Plan())
    # TRL's read of transformers' deprecated attribute (while it computes the reference) is not shown
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    monkeypatch.delenv("ANATOMY_NO_CACHE")
    edited = dpo.train(model, pairs, Plan(edits={HOOK: lambda act: act * 0.0}))  # computes and stores the entry
    other_weights = dpo.train(model, pairs, Plan(weights=weights))
    cached = dpo.train(model, pairs, Plan())
    assert (computed.report["cache/reference"], edited.report["cache/reference"]) == (0.0, 0.0)
    assert other_weights.report["cache/reference"] == cached.report["cache/reference"] == 1.0  # weights and
    # edits are not part of the key: the edit acts on the policy only, never on the reference's log-probs
    assert edited.report["train/loss"] != computed.report["train/loss"]
    assert cached.report["train/loss"] == computed.report["train/loss"]
    assert other_weights.report["train/loss"] != computed.report["train/loss"]
    for a, b in zip(cached.policy.parameters(), computed.policy.parameters()):
        assert torch.equal(a, b)
    (entry,) = (tmp_path / "cache" / "reference").glob("*/key.json")
    assert json.loads(entry.read_text())["code"] == stage_code("anatomy.trainers.dpo")  # keyed by its code too
    dpo_other_pairs = dpo.train(model, data.train[32:64], Plan())
    assert dpo_other_pairs.report["cache/reference"] == 0.0  # other pairs, another entry


# -- hooks never outlive training --------------------------------------------------------------


def _recording_hooks(monkeypatch, module):
    """Wrap `module.hooks` to record every model the trainer hooks."""
    seen = []
    real = module.hooks

    @contextmanager
    def recording(model, fns):
        seen.append(model)
        with real(model, fns):
            assert n_hooks(model) == len(fns)
            yield

    monkeypatch.setattr(module, "hooks", recording)
    return seen


@pytest.mark.parametrize("kind", ["dpo", "reward_model"])
def test_hooks_are_removed_when_training_raises(study, monkeypatch, kind):
    from anatomy.trainers import common as common_module
    from anatomy.trainers import dpo as dpo_module
    from anatomy.trainers import reward as reward_module

    data, model = study
    module, trainer = {
        "dpo": (dpo_module, dpo_module.DPO(batch_size=4, epochs=1.0)),
        "reward_model": (reward_module, reward_module.RewardModel(batch_size=4, epochs=1.0)),
    }[kind]
    seen = _recording_hooks(monkeypatch, common_module)  # where both trainers apply the plan's hooks
    calls = []

    def edit(act):
        calls.append(act.shape)
        if len(calls) == 3:
            raise RuntimeError("the edit failed on its 3rd call")
        return act

    with pytest.raises(RuntimeError, match="3rd call"):
        trainer.train(model, data.train[:16], Plan(edits={HOOK: edit}))
    assert len(calls) == 3 and len(seen) == 1
    assert n_hooks(seen[0]) == 0  # the policy being trained
    assert n_hooks(model.model) == 0


def test_hooks_are_removed_after_a_normal_training_run(study, monkeypatch):
    from anatomy.trainers import common as common_module
    from anatomy.trainers import dpo as dpo_module

    data, model = study
    seen = _recording_hooks(monkeypatch, common_module)
    calls = []

    def edit(act):
        calls.append(1)
        return act * 1.0

    trained = dpo_module.DPO(batch_size=8, epochs=1.0).train(model, data.train[:16], Plan(edits={HOOK: edit}))
    assert len(calls) >= 2  # one forward per step: the edit was active during training
    assert seen == [trained.policy]
    for module in (trained.policy, trained.reference, model.model):
        assert n_hooks(module) == 0
    n = len(calls)
    with torch.no_grad():
        trained.policy(input_ids=torch.tensor([[1, 2, 3]]))
    assert len(calls) == n  # the edit no longer runs
    assert not trained.policy.training
    assert trained.report["train/pairs"] == 16.0 and trained.report["train/steps"] == 2.0


def test_max_steps_sets_the_training_budget_whatever_the_number_of_pairs(study):
    from anatomy.trainers.dpo import DPO

    data, model = study
    trained = DPO(batch_size=8, epochs=1.0, max_steps=3).train(model, data.train[:16], Plan())
    assert trained.report["train/steps"] == 3.0  # 16 pairs, 8 per step: 1 epoch would be 2 steps
    with pytest.raises(AnatomyError, match="max_steps"):
        DPO(max_steps=-1)


@pytest.mark.parametrize("kind", ["dpo", "reward_model"])
def test_a_model_loaded_in_half_precision_trains_in_float32(study, kind):
    """model.dtype=bfloat16 serves the audit; training copies the weights to float32, where Adam's
    small updates take (in bfloat16 about a third of the weights never moved in 2 steps)."""
    import copy
    import dataclasses

    from anatomy.trainers.dpo import DPO
    from anatomy.trainers.reward import RewardModel

    data, model = study
    half = dataclasses.replace(model, model=copy.deepcopy(model.model).to(torch.bfloat16))
    trainer = DPO(batch_size=8, max_steps=2, lr=1e-4) if kind == "dpo" else RewardModel(batch_size=8, max_steps=2, lr=1e-4)

    def moved(trained):  # how many weights training changed
        policy, reference = dict(trained.policy.named_parameters()), dict(trained.reference.named_parameters())
        assert {p.dtype for p in policy.values()} == {p.dtype for p in reference.values()} == {torch.float32}
        return sum(int((policy[n] != reference[n]).sum()) for n in policy)

    from_half, from_float32 = moved(trainer.train(half, data.train[:16], Plan())), moved(trainer.train(model, data.train[:16], Plan()))
    assert next(half.model.parameters()).dtype == torch.bfloat16  # the audit's model is left as it was
    assert from_half >= 0.99 * from_float32 > 0  # as many as training the float32 model moves


@pytest.mark.parametrize("kind", ["dpo", "reward_model"])
def test_mixed_precision_trains_in_bfloat16_and_leaves_a_float32_model(study, kind):
    """trainer.mixed_precision=bf16: the forward passes of training run under bfloat16 autocast (the
    plan's edit runs inside it), the weights stay float32, and afterwards the model computes in float32
    again, and so does DPO's reference: accelerate wraps their forward in autocast, and left so, the
    evaluation (and anyone loading the model from the run) would get half-precision numbers without
    a word."""
    from anatomy.trainers.dpo import DPO
    from anatomy.trainers.reward import RewardModel

    data, model = study
    seen = set()

    def edit(act):
        seen.add(torch.get_autocast_dtype(act.device.type) if torch.is_autocast_enabled(act.device.type) else None)
        return act

    make = DPO if kind == "dpo" else RewardModel
    trained = make(batch_size=4, max_steps=1, mixed_precision="bf16").train(model, data.train[:4], Plan(edits={HOOK: edit}))
    assert seen == {torch.bfloat16} and np.isfinite(trained.report["train/loss"])
    assert {p.dtype for p in trained.policy.parameters()} == {torch.float32}
    assert n_hooks(trained.policy) == 0
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    for scored in (trained.policy, trained.reference):  # (DPO's evaluation scores against its reference too)
        assert "_original_forward" not in vars(scored)
        with torch.no_grad():
            assert torch.equal(scored(ids).logits, type(scored).forward(scored, ids).logits)
    seen.clear()
    make(batch_size=4, max_steps=1).train(model, data.train[:4], Plan(edits={HOOK: edit}))
    assert seen == {None}  # the default: no autocast


@pytest.mark.parametrize("kind", ["dpo", "reward_model"])
def test_training_runs_where_the_policys_weights_are_without_checkpointing(tmp_path, kind):
    """TRL is told to use the CPU only for a policy on the CPU; a policy elsewhere (a GPU for a user;
    here the meta device, as this machine has no GPU) trains there, not silently on the CPU."""
    from trl import DPOConfig, RewardConfig

    from anatomy.trainers.common import trl_args
    from anatomy.trainers.dpo import DPO
    from anatomy.trainers.reward import RewardModel

    config_class, cfg = (DPOConfig, DPO()) if kind == "dpo" else (RewardConfig, RewardModel())
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated key (transformers 5's checkpointing rename)
        on_cpu = trl_args(config_class, str(tmp_path), cfg, torch.nn.Linear(2, 2))
    elsewhere = trl_args(config_class, str(tmp_path), cfg, torch.nn.Linear(2, 2, device="meta"))
    assert on_cpu.use_cpu is True and elsewhere.use_cpu is False
    assert on_cpu.gradient_checkpointing is False  # TRL's default is on


@pytest.mark.parametrize("kind", ["dpo", "reward_model"])
def test_the_trainer_knows_which_pairs_trl_will_drop(study, kind, tmp_path):
    """`fits` (asked before the intervention is planned) predicts exactly the pairs TRL's own dataset
    preparation keeps, on prompts of many lengths around `max_length`."""
    import dataclasses

    from datasets import Dataset
    from trl import DPOConfig, RewardConfig

    from anatomy.trainers.common import frozen_copy, trl_args, weighted_rows
    from anatomy.trainers.dpo import DPO, WeightedDPOTrainer
    from anatomy.trainers.reward import RewardModel, WeightedRewardTrainer, load_reward_model

    data, model = study
    pairs = [dataclasses.replace(p, prompt=" ".join([p.prompt] * (1 + i % 5))) for i, p in enumerate(data.train[:40])]
    if kind == "dpo":  # what TRL compares to max_length: the prompt; for a reward model, the longer whole text
        lengths = [len(model.tokenizer(p.prompt)["input_ids"]) for p in pairs]
    else:
        lengths = [max(len(model.tokenizer(p.prompt + r)["input_ids"]) for r in (p.chosen, p.rejected)) for p in pairs]
    weights = np.arange(1.0, len(pairs) + 1)  # each row named by its weight
    middle = sorted(lengths)[len(lengths) // 2]  # a length some pairs have exactly: TRL's boundary
    for max_length in (middle, middle + 1):
        trainer = DPO(max_length=max_length) if kind == "dpo" else RewardModel(max_length=max_length)
        fits = trainer.fits(model.tokenizer, pairs)
        assert 5 < fits.sum() < len(pairs) - 5
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            if kind == "dpo":
                policy = frozen_copy(model.model)
                args = trl_args(DPOConfig, str(tmp_path), trainer, policy, precompute_ref_log_probs=True,
                                loss_type=["sigmoid"])
                trl_trainer = WeightedDPOTrainer(model=policy, ref_model=frozen_copy(model.model), args=args,
                                                 train_dataset=Dataset.from_list(weighted_rows(pairs, weights)),
                                                 processing_class=model.tokenizer)
            else:
                policy = load_reward_model(model)
                rows = weighted_rows(pairs, weights, joined=True)
                args = trl_args(RewardConfig, str(tmp_path), trainer, policy)
                trl_trainer = WeightedRewardTrainer(model=policy, args=args, train_dataset=Dataset.from_list(rows),
                                                    processing_class=model.tokenizer)
        assert sorted(trl_trainer.train_dataset["weight"]) == list(weights[fits]), max_length


@pytest.mark.parametrize("kind", ["dpo", "reward_model"])
def test_a_max_length_that_no_pair_fits_is_an_error_naming_it(study, kind):
    from anatomy.trainers.dpo import DPO
    from anatomy.trainers.reward import RewardModel

    data, model = study
    trainer = DPO(max_steps=1) if kind == "dpo" else RewardModel(max_steps=1)
    trainer.max_length = 8  # every prompt of the study is longer (TRL used to fail on torch.cat of nothing)
    with pytest.raises(AnatomyError, match="would drop all 16 training pairs.*trainer.max_length=8"):
        trainer.fits(model.tokenizer, data.train[:16])  # what the pipeline asks before the audit
    with pytest.raises(AnatomyError, match="would drop all 16 training pairs.*trainer.max_length=8"):
        trainer.train(model, data.train[:16], Plan())  # and, called directly, TRL's own drop


# -- the whole loop: block markdown by reweighting ---------------------------------------------


@pytest.fixture(scope="module")
def reweighted(tmp_path_factory):
    return run_study(tmp_path_factory.mktemp("reweighted"), *STUDY, "trainer=dpo", "eval=default",
                     "eval.compare_baseline=true", "intervention=data_reweighting", MARKDOWN)


def test_the_selection_names_the_markdown_concept(reweighted):

    metrics, out = reweighted
    selection = json.loads((out / "selection.json").read_text())
    assert selection["block"] and not selection["amplify"]
    assert metrics["select/n_block"] == len(selection["block"])
    table = pd.read_csv(out / "hypotheses.csv").set_index("feature")
    named = table.loc[selection["block"], "concept"].fillna("none")
    # Strings select by top tokens, not by the planted truth: one or two features that share a token
    # with markdown (a line break, `:**`) may be named otherwise, and which ones depends on the SAE,
    # whose training follows the CPU's float kernels. Nearly all of them are markdown's.
    assert (named == "markdown").mean() >= 0.9, named.value_counts().to_dict()
    assert set(selection["features"]) == {str(f) for f in selection["block"]}
    # verdicts.yaml gives the same selection back, as a file a person can edit (select.verdicts=)
    again = Select(verdicts=str(out / "verdicts.yaml")).run(table.reset_index())
    assert (again.block, again.amplify) == (selection["block"], [])
    text = (out / "verdicts.yaml").read_text()  # every significant hypothesis is in it, as a line or a comment
    assert all(f"\n{f}:" in text or f"\n# {f}:" in text for f in table.index[table["significant"]])


def test_the_baseline_learns_markdown(reweighted):
    metrics, _ = reweighted
    shift, se = metrics["eval/baseline/shift/markdown"], metrics["eval/baseline/shift_se/markdown"]
    assert shift > 0 and shift > 3 * se, (shift, se)


def test_reweighting_reports_its_weights(reweighted):
    metrics, _ = reweighted
    assert metrics["intervention/n_dropped"] == 0.0
    assert 0 < metrics["intervention/effective_sample_size"] < metrics["intervention/n_pairs"]


# -- every intervention against the same baseline ----------------------------------------------

# The smallest cut of the markdown shift each must reach: the targets, except ablation's (see
# the module docstring). Measured: ablation +0.32, steering +0.39, filtering -3.09, reweighting
# -0.86, against the baseline's +1.37.
CUT = {"feature_ablation": 0.5, "feature_steering": 0.5, "data_filtering": 0.8, "data_reweighting": 0.8}
# Held-out accuracy must stay at >= 95% of the baseline's (the target). Two interventions miss
# it, here as over 3 seeds at full size (the README explains why); strict xfails record it.
# Both misses are what training without markdown's signal costs on held-out pairs that still carry
# it: a model trained on data where markdown is planted independently of the preference scores 0.91x
# on the default held-out pairs (experiment=markdown_independent, README).
ACCURACY_MISS = {  # why, with the full-size study's numbers (README); this run's own numbers go before it
    "data_filtering": "the filtered model learns an aversion to markdown and so gets the held-out pairs where "
                      "markdown marks the chosen response wrong; 0.89x over 3 seeds at full size, where markdown "
                      "does not differ 0.99x",
    "data_reweighting": "the points markdown earned as a shortcut; 0.94x over 3 seeds at full size, where markdown "
                        "does not differ 1.01x",
}


@pytest.fixture(scope="module", params=sorted(CUT))
def intervened(request, tmp_path_factory, reweighted):
    if request.param == "data_reweighting":
        return request.param, reweighted[0]
    # filtering trains on fewer pairs: give it the baseline's number of steps, as the study does
    steps = int(reweighted[0]["train/steps"])
    budget = [f"trainer.max_steps={steps}"] if request.param == "data_filtering" else []
    metrics, _ = run_study(tmp_path_factory.mktemp(request.param), *STUDY, "trainer=dpo", "eval=default",
                           "eval.compare_baseline=false", f"intervention={request.param}", MARKDOWN, *budget)
    return request.param, metrics


def test_each_intervention_cuts_the_learned_markdown_shift(intervened, reweighted):
    name, metrics = intervened
    base = reweighted[0]["eval/baseline/shift/markdown"]
    assert metrics["eval/shift/markdown"] < (1 - CUT[name]) * base, (name, metrics["eval/shift/markdown"], base)


def test_what_each_intervention_trains_on_against_the_planted_truth(intervened):
    # Checked against the ground truth, which the interventions never see (they weigh SAE features).
    # Among the pairs where markdown is on one side only, the share where it is chosen: 0.86 in the
    # data (183 pairs); 0.51 under reweighting's weights, with sycophancy (not blocked) nearly where
    # it was (0.91 -> 0.93); filtering keeps none of the 183 pairs. The feature interventions train
    # on the data as it is.
    name, metrics = intervened
    before, n_differ = metrics["data/planted_chosen_share/markdown"], metrics["data/planted_n_differ/markdown"]
    share, weight = metrics["intervention/planted_chosen_share/markdown"], metrics["intervention/planted_differ_weight/markdown"]
    assert before > 0.75
    if name == "data_reweighting":
        assert abs(share - 0.5) < 0.1, share
        assert metrics["intervention/planted_chosen_share/sycophancy"] == pytest.approx(
            metrics["data/planted_chosen_share/sycophancy"], abs=0.05)
    elif name == "data_filtering":
        assert weight < 0.1 * n_differ, (weight, n_differ)
    else:
        assert share == before and weight == n_differ


def test_each_feature_intervention_reports_how_much_of_the_activations_it_changes(intervened):
    # one share per edited hook point, the SAE's; a data intervention edits nothing
    name, metrics = intervened
    energy = {k: v for k, v in metrics.items() if k.startswith("intervention/edit_energy/")}
    if name.startswith("feature_"):
        assert list(energy) == [f"intervention/edit_energy/{HOOK}"]
        assert 0.0 < energy[f"intervention/edit_energy/{HOOK}"] < 1.0
    else:
        assert not energy


def test_presence_filtering_keeps_no_pair_that_carries_the_planted_markdown(tmp_path):
    # drop=present finds markdown from the SAE features alone; against the ground truth it keeps
    # none of the 210 training pairs that carry it, on either side, and drops no other (1 step: only
    # the plan matters)
    metrics, _ = run_study(tmp_path, *STUDY, "trainer=dpo", "trainer.max_steps=1", "eval=none",
                           "intervention=data_filtering", "intervention.drop=present", MARKDOWN)
    n_present = metrics["data/planted_n_present/markdown"]
    assert metrics["intervention/planted_present_weight/markdown"] <= 0.02 * n_present
    assert 0.98 * n_present <= metrics["intervention/n_dropped"] <= 1.02 * n_present


def test_each_intervention_keeps_heldout_accuracy_where_markdown_is_no_shortcut(intervened, reweighted):
    # ablation 0.774, steering 0.825, filtering 0.818, reweighting 0.825, against the baseline's 0.737
    name, metrics = intervened
    key = "eval/heldout_accuracy_same/markdown"
    base = reweighted[0]["eval/baseline/heldout_accuracy_same/markdown"]
    assert metrics[key] >= 0.95 * base, (name, metrics[key], base)


def test_each_intervention_keeps_heldout_accuracy(intervened, reweighted, request):
    # (once measured: ablation 0.831, steering 0.853, filtering 0.725, reweighting 0.756, against 0.806)
    name, metrics = intervened
    accuracy, base = metrics["eval/heldout_accuracy"], reweighted[0]["eval/baseline/heldout_accuracy"]
    if name in ACCURACY_MISS:
        same = metrics["eval/heldout_accuracy_same/markdown"] / reweighted[0]["eval/baseline/heldout_accuracy_same/markdown"]
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            f"known miss: {accuracy:.3f} vs {base:.3f} here ({accuracy / base:.2f}x; where markdown does not "
            f"differ {same:.2f}x, markdown shift {metrics['eval/shift/markdown']:+.2f}): {ACCURACY_MISS[name]}")))
    assert accuracy >= 0.95 * base, (name, accuracy, base)


def test_the_run_folder_has_metrics_and_the_trained_model(reweighted, study):
    from transformers import AutoModelForCausalLM

    metrics, out = reweighted
    data, _ = study
    on_disk = json.loads((out / "metrics.json").read_text())
    concepts = {p.concept for p in data.probes}
    assert {"markdown", "sycophancy", "verbosity", "hedging", "refusal"} <= concepts
    keys = ["eval/heldout_accuracy", "eval/heldout_accuracy_before", "intervention/effective_sample_size",
            "eval/heldout_accuracy_same/markdown", "eval/heldout_n_same/markdown", "train/pairs_too_long",
            *[f"eval/{m}/{c}" for c in concepts for m in ("shift", "shift_complete", "shift_onset", "shift_continue", "baseline/shift",
                                                           "baseline/shift_onset")]]
    for key in keys:
        assert key in on_disk and np.isfinite(on_disk[key]), key
        assert on_disk[key] == pytest.approx(metrics[key])
    assert on_disk["eval/heldout_accuracy_before"] == 0.5  # every implicit margin is 0 before training
    # each held-out pair, scored with and without the intervention: the accuracies, and their paired change
    pairs = pd.read_csv(out / "heldout.csv")
    assert len(pairs) == on_disk["data/heldout"] and pairs["prompt"].str.startswith("Question:").all()
    assert pairs["correct"].mean() == pytest.approx(on_disk["eval/heldout_accuracy"])
    assert pairs["baseline_correct"].mean() == pytest.approx(on_disk["eval/baseline/heldout_accuracy"])
    change = pairs["correct"] - pairs["baseline_correct"]
    assert on_disk["eval/heldout_accuracy_change"] == pytest.approx(
        on_disk["eval/heldout_accuracy"] - on_disk["eval/baseline/heldout_accuracy"])
    se = on_disk["eval/heldout_accuracy_change_se"]
    assert se == pytest.approx(change.std(ddof=1) / np.sqrt(len(change))) and se > 0
    assert on_disk["eval/responses_cut"] == 0  # every held-out and probe response fits eval.max_length
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert n_hooks(model) == 0
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 5, 9]])).logits
    assert logits.shape[:2] == (1, 3) and torch.isfinite(logits).all()


def test_amplifying_refusal_raises_its_learned_shift(reweighted, tmp_path):
    """Compared with the reweighting run's baseline: the same trainer, seed and data, without a plan."""
    baseline, _ = reweighted
    # "sorry" and "help" name refusal hypotheses in this study, "cannot" none (recorded as unmatched).
    # Measured: +42.7 vs the baseline's +36.4, 124 of the 320 pairs amplified (on probes that no pair asks)
    metrics, out = run_study(tmp_path, *STUDY, "trainer=dpo", "eval=default", "eval.compare_baseline=false",
                             "intervention=data_reweighting", "intervention.amplify_factor=3.0", "select.block=[]",
                             "select.amplify=[sorry,cannot,help]")  # as experiments/amplify_refusal.yaml
    selection = json.loads((out / "selection.json").read_text())
    assert selection["amplify"] and not selection["block"]
    assert 0 < metrics["intervention/n_amplified"] < metrics["train/pairs"]  # the pairs it favours, not every one
    assert metrics["eval/shift/refusal"] > baseline["eval/baseline/shift/refusal"], (
        metrics["eval/shift/refusal"], baseline["eval/baseline/shift/refusal"])


# -- the reward model, with a probe file -------------------------------------------------------


def _probe_rows(data, n=24):
    """The data's own markdown and refusal probes under new concept names."""
    rows = []
    for concept, name in (("markdown", "my_markdown"), ("refusal", "my_refusal")):
        probes = [p for p in data.probes if p.concept == concept][:n]
        rows += [{"concept": name, "prompt": p.prompt, "positive": p.positive, "negative": p.negative} for p in probes]
    return rows


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, study):
    data, _ = study
    folder = tmp_path_factory.mktemp("reward")
    probes = folder / "probes.jsonl"
    probes.write_text("".join(json.dumps(r) + "\n" for r in _probe_rows(data)))
    return run_study(folder / "run", *SMALL, "trainer=reward_model", "eval=default", "intervention=none",
                     f"eval.probes={probes}")


def test_reward_model_learns_the_preference(reward_run):
    metrics, out = reward_run
    assert metrics["train/steps"] > 0 and metrics["train/pairs"] == metrics["data/train"]
    assert metrics["eval/heldout_accuracy"] > 0.5, metrics["eval/heldout_accuracy"]
    assert "eval/baseline/heldout_accuracy" not in metrics  # no intervention: nothing to compare
    assert (out / "model").is_dir()


def test_a_probe_file_replaces_the_data_probes(reward_run):
    metrics, _ = reward_run
    shifts = {k.rsplit("/", 1)[-1] for k in metrics if k.startswith("eval/shift/")}
    assert shifts == {"my_markdown", "my_refusal"}
    assert all(np.isfinite(metrics[f"eval/shift/{c}"]) for c in shifts)
    assert metrics["eval/shift_se/my_markdown"] > 0


# -- bad input is caught before any model is built ---------------------------------------------


def test_a_feature_intervention_without_a_trainer_is_an_error(tmp_path, no_model_is_built):
    with pytest.raises(AnatomyError, match="trainer"):
        run_study(tmp_path, *SMALL, "intervention=feature_ablation", "trainer=none", MARKDOWN)
    assert not any(tmp_path.iterdir())


def test_a_data_intervention_without_a_selection_is_an_error(tmp_path, no_model_is_built):
    with pytest.raises(AnatomyError, match=r"select\.block"):
        run_study(tmp_path, *SMALL, "intervention=data_filtering", "trainer=dpo", "eval=default",
                  "select.block=[]", "select.amplify=[]")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("bad_row, match", [
    ({"concept": "x", "prompt": "Q", "positive": "a"}, r"row 1 lacks \['negative'\]"),
    ({"concept": "x", "prompt": "Q", "positive": "", "negative": "b"}, "row 1 has an empty or non-string field"),
    ({"concept": 3, "prompt": "Q", "positive": "a", "negative": "b"}, "row 1 has an empty or non-string field"),
])
def test_a_malformed_probe_file_is_an_error_naming_the_row(tmp_path, no_model_is_built, bad_row, match):
    probes = tmp_path / "probes.jsonl"
    good = {"concept": "x", "prompt": "Q", "positive": "a", "negative": "b"}
    probes.write_text(json.dumps(good) + "\n" + json.dumps(bad_row) + "\n")
    with pytest.raises(AnatomyError, match=match) as err:
        run_study(tmp_path / "run", *SMALL, "trainer=dpo", "eval=default", "intervention=none",
                  f"eval.probes={probes}")
    assert str(probes) in str(err.value)


def test_a_probe_row_with_a_non_string_prompt_is_an_error(tmp_path, no_model_is_built):
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"concept": "x", "prompt": 5, "positive": "a", "negative": "b"}) + "\n")
    with pytest.raises(AnatomyError, match="row 0"):
        run_study(tmp_path / "run", *SMALL, "trainer=dpo", "eval=default", "intervention=none",
                  f"eval.probes={probes}")


def test_a_missing_probe_file_is_an_error_naming_eval_probes(tmp_path, no_model_is_built):
    with pytest.raises(AnatomyError, match=r"eval\.probes") as err:
        run_study(tmp_path / "run", *SMALL, "trainer=dpo", "eval=default", "intervention=none",
                  f"eval.probes={tmp_path / 'absent.jsonl'}")
    assert "absent.jsonl" in str(err.value)


def test_intervention_none_does_not_need_a_matching_selection(tmp_path):
    metrics, _ = run_study(tmp_path, *SMALL, "trainer=dpo", "trainer.epochs=0.05", "eval=none", "intervention=none",
                           "select.block=[no_such_token]")
    assert metrics["train/steps"] >= 1


def test_the_baseline_is_trained_once_per_sweep_and_equals_the_no_intervention_run(tmp_path):
    """A second intervention with the same trainer, data and eval reuses the baseline from the stage
    cache, and the baseline is exactly what intervention=none trains and measures."""
    short = (*SMALL, "trainer=dpo", "trainer.epochs=0.07", "eval=default", "eval.compare_baseline=true",
             "select.block=[recap]")
    first, first_out = run_study(tmp_path / "a", *short, "intervention=data_filtering")
    second, _ = run_study(tmp_path / "b", *short, "intervention=data_reweighting")
    plain, plain_out = run_study(tmp_path / "c", *short, "intervention=none")
    assert second["cache/baseline"] == 1.0  # (the first is a miss unless ANATOMY_TEST_CACHE kept it)
    base = {k: v for k, v in first.items() if k.startswith("eval/baseline/")}
    assert any(k.startswith("eval/baseline/shift/") for k in base) and "eval/baseline/heldout_accuracy" in base
    assert base == {k: v for k, v in second.items() if k.startswith("eval/baseline/")}
    assert "cache/baseline" not in plain  # nothing to compare with
    measured = {k: v for k, v in plain.items()  # (eval/responses_cut is counted once per run, before training)
                if k.startswith("eval/") and not k.startswith("eval/baseline/") and k != "eval/responses_cut"}
    assert {k.replace("eval/baseline/", "eval/"): v for k, v in base.items()} == measured
    # pair by pair too: the baseline's held-out margins are the no-intervention run's
    with_baseline, alone = pd.read_csv(first_out / "heldout.csv"), pd.read_csv(plain_out / "heldout.csv")
    assert with_baseline["baseline_margin"].tolist() == alone["margin"].tolist()
    assert "baseline_margin" not in alone.columns


# -- a real dataset: DPO with an intervention on HH-RLHF ---------------------------------------


def test_persona_evaluations_measure_what_dpo_on_hh_rlhf_taught(shared_data, tmp_path):
    """Two of Anthropic's persona evaluations as probes (eval.probes takes a list of files), read in
    their own format: each becomes a concept whose learned shift is measured, on the shared HH-RLHF
    subset."""
    persona = shared_data / "anthropic-evals" / "persona"
    files = []
    for name in ("narcissism.jsonl", "agreeableness.jsonl"):  # their first 100 rows, unchanged (a quicker eval)
        files.append(tmp_path / name)
        files[-1].write_text("".join((persona / name).read_text().splitlines(keepends=True)[:100]))
    metrics, _ = run_study(tmp_path / "dpo", *hh_rlhf_small(shared_data), "trainer=dpo", "trainer.max_steps=4",
                           "eval=default", "eval.compare_baseline=false", "intervention=none",
                           f"eval.probes=[{','.join(map(str, files))}]")
    for concept in ("narcissism", "agreeableness"):
        assert np.isfinite(metrics[f"eval/shift/{concept}"]) and metrics[f"eval/shift_se/{concept}"] > 0
    assert {k.rsplit("/", 1)[-1] for k in metrics if k.startswith("eval/shift/")} == {"narcissism", "agreeableness"}


def test_dpo_with_feature_ablation_on_hh_rlhf(shared_data, tmp_path, caplog):
    """The whole loop on 200 pairs of the shared HH-RLHF harmless split: audit, then block its
    strongest hypothesis by id (no planted concept to name here) and train DPO under the ablation."""

    hh = hh_rlhf_small(shared_data)
    _, audit = run_study(tmp_path / "audit", *hh, *AUDIT)
    table = pd.read_csv(audit / "hypotheses.csv")
    strongest = int(table.sort_values("p_value").iloc[0]["feature"])
    metrics, out = run_study(tmp_path / "dpo", *hh, "trainer=dpo", "trainer.max_steps=6", "eval=default",
                             "eval.compare_baseline=false", "intervention=feature_ablation",
                             f"select.block=[{strongest}]")
    assert metrics["cache/model"] == 1.0 and metrics["cache/sae"] == 1.0  # the audit's, reused
    assert json.loads((out / "selection.json").read_text())["block"] == [strongest]
    assert metrics["intervention/n_directions"] == 1.0
    energy = [v for k, v in metrics.items() if k.startswith("intervention/edit_energy/")]
    assert len(energy) == 1 and 0.0 < energy[0] < 1.0
    assert metrics["train/steps"] == 6.0
    # TRL drops the pairs whose prompt alone fills trainer.max_length (long HH-RLHF dialogues): they are
    # found before the plan (on real dialogues, exactly the ones TRL drops: it drops none of the rest)
    assert metrics["train/pairs"] + metrics["train/pairs_too_long"] == metrics["data/train"]
    assert metrics["train/pairs_too_long"] > 0 and "do not fit, their prompt alone filling" in caplog.text
    assert "TRL dropped" not in caplog.text
    assert metrics["train/pairs"] > 0.5 * metrics["data/train"]
    assert metrics["eval/heldout_accuracy_before"] == 0.5
    heldout = pd.read_csv(out / "heldout.csv")  # the accuracy is that of the margins it wrote, pair by pair
    assert len(heldout) == metrics["data/heldout"]
    assert metrics["eval/heldout_accuracy"] == pytest.approx(heldout["correct"].mean())
    assert not any(k.startswith("eval/shift/") for k in metrics)  # HH-RLHF has no probe pairs
    assert (out / "model" / "config.json").is_file()
