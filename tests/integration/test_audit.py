"""The audit end to end on small versions of the real studies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from anatomy.errors import AnatomyError
from anatomy.outputs import strongest_first, summary
from conftest import AUDIT, SMALL, hh_rlhf_small, run_study

CSV_COLUMNS = ["feature", "direction", "effect", "auroc", "p_value", "q_value", "significant", "frequency", "top_tokens"]


@pytest.fixture(scope="module")
def default_audit(tmp_path_factory):
    return run_study(tmp_path_factory.mktemp("default"), *SMALL, *AUDIT)


def test_default_audit_writes_its_outputs(default_audit):
    metrics, out = default_audit
    table = pd.read_csv(out / "hypotheses.csv")
    assert list(table.columns[: len(CSV_COLUMNS)]) == CSV_COLUMNS
    assert len(table) == metrics["audit/n_tested"] > 0
    assert table["significant"].sum() == metrics["audit/n_significant"] > 0
    assert set(table["direction"]) <= {"chosen", "rejected"}
    assert (table["q_value"] >= table["p_value"] - 1e-12).all()
    assert table.loc[table["significant"], "top_tokens"].str.len().gt(0).all()
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["audit/n_significant"] == metrics["audit/n_significant"]
    report = (out / "hypotheses.md").read_text()
    assert "[[" in report and "promotes" in report
    # concept groups: every significant hypothesis in one, numbered 1.. by their strongest member
    sig = strongest_first(table)
    assert sig["group"].notna().all() and table.loc[~table["significant"], "group"].isna().all()
    assert sorted(sig["group"].unique()) == list(range(1, int(metrics["audit/n_groups"]) + 1))
    assert sig["group"].iloc[0] == 1 and list(dict.fromkeys(sig["group"])) == sorted(sig["group"].unique())
    assert "## Concept groups" in report
    # the audit's verdicts file to edit: nothing was selected, so every group is allowed as a whole, a
    # line each, and each significant hypothesis is a commented line under its group's
    text = (out / "verdicts.yaml").read_text()
    verdicts = yaml.safe_load(text)
    assert len(verdicts.pop("sae")) == 16  # the SAE they are written for
    assert verdicts.pop("groups") == {int(g): sorted(map(int, fs)) for g, fs in sig.groupby("group")["feature"]}
    assert set(verdicts) == {f"group:{int(g)}" for g in sig["group"].unique()} and set(verdicts.values()) == {"allow"}
    assert all(f"\n# {f}:" in text for f in sig["feature"]) and "; group 1" in text


def test_default_audit_finds_every_planted_spurious_concept(default_audit):
    metrics, out = default_audit
    assert metrics["audit/recall"] == 1.0, {k: v for k, v in metrics.items() if k.startswith("audit/found")}
    # Small study (400 pairs, short training): a looser bar than the full default's 0.8.
    assert metrics["audit/precision"] >= 0.7
    # one group reads mostly one concept: a person deciding per group decides per concept
    assert metrics["audit/group_purity"] >= 0.75 and metrics["audit/n_groups"] < metrics["audit/n_significant"] / 3
    table = pd.read_csv(out / "hypotheses.csv")
    found = table[table["significant"] & table["concept"].notna()]
    for concept, direction in [("sycophancy", "chosen"), ("markdown", "chosen"), ("verbosity", "chosen"),
                               ("hedging", "rejected")]:
        rows = found[found["concept"] == concept]
        assert (rows["direction"] == direction).all() and len(rows) > 0, concept


def test_the_significant_hypotheses_are_tested_again_on_the_heldout_pairs(default_audit, tmp_path, caplog):
    """Replication: each significant hypothesis, tested again on the held-out pairs (featurized by the
    same model and SAE), which the audit did not see. The planted concepts are real, so nearly all of
    them replicate."""
    from hydra.utils import instantiate

    from anatomy.features import Featurize
    from anatomy.hypotheses import HypothesisTest
    from conftest import compose

    metrics, out = default_audit
    table = pd.read_csv(out / "hypotheses.csv")
    sig = table[table["significant"]]
    held_columns = ["heldout_effect", "heldout_p", "heldout_q", "replicated"]
    assert sig[held_columns].notna().all().all() and table.loc[~table["significant"], held_columns].isna().all().all()
    assert sig["replicated"].astype(bool).sum() == metrics["audit/n_replicated"]
    assert metrics["audit/heldout_pairs"] == metrics["data/heldout"] > 0
    # 80 held-out pairs here (the default study has 200): the weak hypotheses lack the power to
    # replicate at q <= 0.05 (measured: 0.51 of those with |effect| < 0.3), the strong ones do (0.99),
    # and nearly all keep their side (0.99)
    strong = sig[sig["effect"].abs() >= 0.5]
    assert len(strong) > 20 and strong["replicated"].astype(bool).mean() >= 0.9
    assert metrics["audit/replication_rate"] >= 0.6 and metrics["audit/heldout_same_side"] >= 0.95
    assert f"**{int(metrics['audit/n_replicated'])} of {len(sig)} replicated**" in (out / "hypotheses.md").read_text()
    verdicts = (out / "verdicts.yaml").read_text()  # a person deciding sees which did not replicate
    assert verdicts.count("; NOT replicated on held-out") == len(sig) - metrics["audit/n_replicated"] > 0

    # the held-out numbers are the held-out split's: recomputed here from its own features
    cfg = compose(*SMALL)
    data = instantiate(cfg.data).load()
    model, _ = instantiate(cfg.model).load(data.texts())
    sae, _ = instantiate(cfg.sae).load(model, data.texts(), model.path)
    held = Featurize(**{k: v for k, v in cfg.featurize.items() if k != "_target_"}).run(model, sae, data.heldout)
    again = HypothesisTest().run(held.chosen, held.rejected).set_index("feature")
    strongest = sig.iloc[0]  # its held-out effect is on the side found: the one-sided p is half the two-sided
    assert np.sign(strongest["heldout_effect"]) == np.sign(strongest["effect"])
    assert strongest["heldout_p"] == pytest.approx(again.loc[int(strongest["feature"]), "p_value"] / 2, rel=1e-6)
    assert strongest["heldout_effect"] == pytest.approx(again.loc[int(strongest["feature"]), "effect"], rel=1e-5)

    off, off_out = run_study(tmp_path / "off", *SMALL, *AUDIT, "hypothesis.replicate=false")
    assert "audit/n_replicated" not in off and "replicated" not in pd.read_csv(off_out / "hypotheses.csv").columns
    with caplog.at_level("WARNING"):
        none, _ = run_study(tmp_path / "none", *SMALL, *AUDIT, "data.heldout_fraction=0")
    assert "audit/n_replicated" not in none and "fewer than 2 held-out pairs" in caplog.text


def test_validation_pairs_take_the_replication_and_leave_the_heldout_ones_untouched(default_audit, tmp_path):
    """With data.validation_fraction, the hypotheses are tested again on the validation pairs (set apart
    from the held-out ones), so no decision reads the held-out pairs that give the final numbers; the
    model, SAE and audit are those of the run without (the same texts and training pairs), and a
    trained run reports its validation accuracy and its shifts on validation probes, to choose
    settings by, next to the held-out ones."""
    metrics, _ = default_audit
    # the default study, 2 DPO steps; its baseline alongside is measured on the validation pairs too
    split, out = run_study(tmp_path / "split", *SMALL, "data.validation_fraction=0.1", "trainer.max_steps=2")
    assert split["cache/model"] == split["cache/sae"] == split["cache/features"] == split["cache/hypotheses"] == 1.0
    assert split["audit/n_significant"] == metrics["audit/n_significant"]  # the same audit
    assert split["data/heldout"] + split["data/validation"] == metrics["data/heldout"]
    assert split["audit/replication_on_validation"] == 1.0 and metrics["audit/replication_on_validation"] == 0.0
    assert split["audit/heldout_pairs"] == split["data/validation"] >= 40
    assert f"on the {int(split['data/validation'])} validation pairs" in (out / "hypotheses.md").read_text()
    assert 0 <= split["eval/validation_accuracy"] <= 1 and split["eval/validation_accuracy_before"] == 0.5
    assert 0 <= split["eval/baseline/validation_accuracy"] <= 1
    assert "eval/validation_accuracy_same/markdown" in split and "eval/heldout_accuracy" in split
    # the shifts on the validation probes (drawn apart from the probes), for the run and its baseline
    concepts = {k.rsplit("/", 1)[-1] for k in split if k.startswith("eval/shift/")}
    assert concepts and {k.rsplit("/", 1)[-1] for k in split if k.startswith("eval/validation_shift/")} == concepts
    assert all(f"eval/baseline/validation_shift/{c}" in split for c in concepts)
    assert split["eval/validation_shift/markdown"] != split["eval/shift/markdown"]
    assert len(pd.read_csv(out / "heldout.csv")) == split["data/heldout"]  # the final numbers' pairs only
    # validation.csv: each validation pair under the trained model and the baseline; the change is paired on them
    validation = pd.read_csv(out / "validation.csv")
    assert len(validation) == split["data/validation"]
    assert validation["correct"].mean() == pytest.approx(split["eval/validation_accuracy"])
    assert validation["baseline_correct"].mean() == pytest.approx(split["eval/baseline/validation_accuracy"])
    assert split["eval/validation_accuracy_change"] == pytest.approx(
        (validation["correct"] - validation["baseline_correct"]).mean())


def test_null_calibration(default_audit):
    """Coin-flip preferences: BH at q = 0.05 declares at most one feature significant, on each seed."""
    import torch

    from anatomy.data.synthetic import SyntheticData
    from anatomy.features import Featurize
    from anatomy.hypotheses import HypothesisTest
    from anatomy.models.tiny import TinyModel
    from anatomy.saes.train import TrainSAE
    from conftest import compose
    from hydra.utils import instantiate

    cfg = compose(*SMALL)
    base = instantiate(cfg.data)
    texts = base.load().texts()
    model, hit = instantiate(cfg.model).load(texts)
    sae, hit_sae = instantiate(cfg.sae).load(model, texts, model.path)
    assert hit and hit_sae  # the same model and SAE as the default audit
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        null = SyntheticData(n_pairs=base.n_pairs, coin_flip=True, seed=seed).load()
        feats = Featurize().run(model, sae, null.train)
        table = HypothesisTest(alpha=0.05, correction="bh").run(feats.chosen, feats.rejected)
        assert len(table) > 100
        assert table["significant"].sum() <= 1, table[table["significant"]].head()


def test_featurize_batches_by_length_and_stores_in_pair_order(default_audit):
    """Batching responses by length changes which responses share a forward pass, never the result:
    batches of 3 pairs and one batch of all give the same pooled features, and every kept top
    occurrence points at a token of the response whose pooled activation it is."""
    import numpy as np
    from hydra.utils import instantiate

    from anatomy.features import Featurize
    from conftest import compose

    cfg = compose(*SMALL)
    data = instantiate(cfg.data).load()
    texts = data.texts()
    model, _ = instantiate(cfg.model).load(texts)
    sae, _ = instantiate(cfg.sae).load(model, texts, model.path)
    pairs = data.heldout[:40]
    small, whole = Featurize(batch_size=3).run(model, sae, pairs), Featurize(batch_size=64).run(model, sae, pairs)
    np.testing.assert_allclose(small.chosen.toarray(), whole.chosen.toarray(), atol=1e-4)
    np.testing.assert_allclose(small.rejected.toarray(), whole.rejected.toarray(), atol=1e-4)
    assert (small.tokens == whole.tokens).all() and (small.offsets == whole.offsets).all()
    tok = model.tokenizer
    first = pairs[0]
    assert tok.decode(small.tokens[small.offsets[0]:small.offsets[1]]) == first.chosen
    assert tok.decode(small.tokens[small.offsets[1]:small.offsets[2]]) == first.rejected
    pooled = np.empty((2 * len(pairs), sae.d_sae))
    pooled[0::2], pooled[1::2] = small.chosen.toarray(), small.rejected.toarray()
    active = np.flatnonzero(small.top_where[0] >= 0)
    assert len(active) > 20
    for f in active:  # the strongest occurrence is the max-pooled value of the response it sits in
        response = np.searchsorted(small.offsets, small.top_where[0, f], side="right") - 1
        assert abs(pooled[response, f] - small.top_values[0, f]) < 1e-4
        assert abs(pooled[:, f].max() - small.top_values[0, f]) < 1e-4


def test_responses_cut_by_featurize_max_length_are_counted(default_audit, tmp_path, caplog):
    metrics, _ = default_audit
    assert metrics["featurize/responses_at_max_length"] == 0  # every response of the study fits 256 tokens
    with caplog.at_level("WARNING"):
        cut, _ = run_study(tmp_path, *SMALL, *AUDIT, "featurize.max_length=8")  # every response is longer
    assert cut["featurize/responses_at_max_length"] == 2 * cut["data/train"]
    assert "fill all featurize.max_length=8 tokens" in caplog.text


def test_same_config_same_numbers(default_audit, tmp_path):
    metrics, out = default_audit
    again, out2 = run_study(tmp_path, *SMALL, *AUDIT)
    assert (out2 / "hypotheses.csv").read_text() == (out / "hypotheses.csv").read_text()
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith(("timing/", "cache/"))}
    assert strip(again) == strip(metrics)
    assert again["cache/model"] == 1.0 and again["cache/sae"] == 1.0


def test_local_file(default_audit, tmp_path):
    """data=local on a JSON Lines file of prompt/chosen/rejected: the default study's own pairs, so
    the same texts reuse the cached model and SAE, and the audit must find the same hypotheses."""
    from hydra.utils import instantiate

    from conftest import compose

    data = instantiate(compose(*SMALL).data).load()
    file = tmp_path / "pairs.jsonl"
    file.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n"
                            for p in data.train + data.heldout))
    small_model = [o for o in SMALL if not o.startswith("data.")]
    metrics, out = run_study(tmp_path / "run", "data=local", f"data.path={file}", *small_model, *AUDIT)
    assert metrics["data/rows"] == len(data.train) + len(data.heldout)
    assert metrics["data/train"] == len(data.train)
    assert metrics["cache/model"] == 1.0 and metrics["cache/sae"] == 1.0
    assert metrics["audit/n_tested"] > 0 and metrics["audit/n_significant"] > 0
    assert "audit/recall" not in metrics  # no ground truth in a user's file
    table = pd.read_csv(out / "hypotheses.csv")
    assert len(table) == metrics["audit/n_tested"]
    # Training on a user's file needs a decision: the synthetic study's markdown list is not the
    # default here (it would match these very pairs' markdown features), so it stops before any work
    with pytest.raises(AnatomyError, match="acts on selected concepts: set select.block") as err:
        run_study(tmp_path / "train", "data=local", f"data.path={file}", *small_model)
    assert "audit first with trainer=none intervention=none eval=none" in str(err.value)
    assert not (tmp_path / "train").exists()


def test_a_pretrained_sae_loads_through_the_sae_lens_registry_as_the_trained_one(default_audit, tmp_path, monkeypatch):
    """`sae=pretrained` takes the real path, `SAE.from_pretrained(release, sae_id)` through sae-lens's
    registry, here from an offline hub cache where the trained SAE's files stand in for the
    registry's pythia-70m-deduped-res-sm blocks.3 SAE: its config is checked against the model
    before the model loads, and the audit gives the trained SAE's hypotheses."""
    import re
    import shutil

    import pandas as pd
    from huggingface_hub import constants

    metrics, out = default_audit
    trained = re.search(r"SAE `([^`]+)`", (out / "hypotheses.md").read_text()).group(1)
    repo = tmp_path / "hub" / "models--ctigges--pythia-70m-deduped__res-sm_processed"
    shutil.copytree(trained, repo / "snapshots" / "abc123" / "3-res-sm")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    study = (*[o for o in SMALL if not o.startswith("sae.")], *AUDIT, "sae=pretrained")
    pretrained, pretrained_out = run_study(tmp_path / "pretrained", *study)
    assert "pythia-70m-deduped-res-sm/blocks.3.hook_resid_post" in (pretrained_out / "hypotheses.md").read_text()
    assert pretrained["audit/n_significant"] == metrics["audit/n_significant"]
    columns = ["feature", "effect", "q_value", "significant"]
    pd.testing.assert_frame_equal(pd.read_csv(pretrained_out / "hypotheses.csv")[columns],
                                  pd.read_csv(out / "hypotheses.csv")[columns])


def test_hh_rlhf(shared_data, tmp_path):
    metrics, out = run_study(tmp_path, *hh_rlhf_small(shared_data), *AUDIT)
    assert metrics["data/rows"] == 2312 and metrics["data/dropped_invalid"] == 9 and metrics["data/prompt_mismatch"] == 5
    assert metrics["data/train"] + metrics["data/heldout"] == 200
    assert metrics["audit/n_tested"] > 0
    assert pd.read_csv(out / "hypotheses.csv").shape[0] == metrics["audit/n_tested"]


def test_genies_alpaca_short_audit_says_length_separates_its_pairs_and_they_reverse_on_alpaca_long(shared_data,
                                                                                                     tmp_path):
    """experiment=audit_genies on GENIES' alpaca_short, where the shorter response is preferred, with
    alpaca_long (where the longer one is) as the shift's target: the audit says that length alone
    separates the pairs, and its hypotheses, tested again on the target's pairs, point the other way.
    With data.heldout_fraction part of alpaca_short is held out too, and a short DPO run is measured
    on both: the target's pairs (held-out accuracy) and the source's own (eval/source_accuracy)."""
    genies = shared_data / "genies"
    metrics, out = run_study(tmp_path, "experiment=audit_genies", f"data.path={genies / 'alpaca_short'}",
                             f"data.target={genies / 'alpaca_long'}", "data.max_pairs=200", "model.train_steps=100",
                             "sae.training_tokens=100000", "data.heldout_fraction=0.2", "trainer=dpo",
                             "trainer.max_steps=4", "intervention=none", "eval=default")
    assert metrics["data/rows"] == 600 and metrics["data/target_rows"] == 250
    assert metrics["data/prompts_marked"] == 600 and metrics["data/target_prompts_marked"] == 250  # (Response marker)
    assert metrics["data/train"] == 160 and metrics["data/source_heldout"] == 40 and metrics["data/heldout"] == 200
    assert 0 <= metrics["eval/source_accuracy"] <= 1 and metrics["eval/source_accuracy_before"] == 0.5
    source = pd.read_csv(out / "source.csv")
    assert len(source) == 40 and source.correct.mean() == metrics["eval/source_accuracy"]
    assert len(pd.read_csv(out / "heldout.csv")) == 200
    assert f"source accuracy {metrics['eval/source_accuracy']:.3f} (before training 0.500) on 40 held-out pairs" in \
        summary(metrics, out / "hypotheses.csv")
    assert metrics["audit/chosen_shorter"] >= 0.95 and metrics["audit/n_significant"] > 0
    report = (out / "hypotheses.md").read_text()
    assert "**Length: the chosen response is the shorter one in" in report and "on the 200 target pairs" in report
    assert metrics["audit/heldout_same_side"] < 0.2 and metrics["audit/replication_rate"] < 0.2


def test_a_local_sae_folder_audits_as_the_trained_one_and_is_keyed_by_its_files(default_audit, tmp_path):
    """`sae=local` on a folder sae-lens saved (here, a copy of the trained SAE) gives the same
    hypotheses; saved over with other weights in place, its features are computed anew, not served
    from the cache by its path."""
    import re
    import shutil

    import pandas as pd
    from safetensors.torch import load_file, save_file

    metrics, out = default_audit
    trained = re.search(r"SAE `([^`]+)`", (out / "hypotheses.md").read_text()).group(1)
    folder = tmp_path / "sae"
    shutil.copytree(trained, folder)
    study = (*[o for o in SMALL if not o.startswith("sae.")], *AUDIT, "sae=local", f"sae.path={folder}")
    local, local_out = run_study(tmp_path / "local", *study)
    assert local["audit/n_significant"] == metrics["audit/n_significant"]
    columns = ["feature", "effect", "q_value", "significant"]
    pd.testing.assert_frame_equal(pd.read_csv(local_out / "hypotheses.csv")[columns],
                                  pd.read_csv(out / "hypotheses.csv")[columns])

    weights = folder / "sae_weights.safetensors"
    tensors = load_file(weights)
    save_file({k: (v.flip(0) if k == "W_enc" else v) for k, v in tensors.items()}, weights)  # other features
    again, again_out = run_study(tmp_path / "again", *study)
    assert again["cache/features"] == 0.0  # keyed by the path alone, the first local run's features would be served
    effects = [pd.read_csv(o / "hypotheses.csv")["effect"] for o in (local_out, again_out)]
    assert not effects[0].equals(effects[1])
