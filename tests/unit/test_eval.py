"""The evaluation's pieces: the held-out yardstick where a concept cannot be a
shortcut, the audit's per-concept prediction that the learned shifts are compared with, and
scoring (on a small random model)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from anatomy.data.schema import PreferencePair
from anatomy.errors import AnatomyError
from anatomy.eval.evaluate import Evaluate, _same_concept, accuracy_change, load_probes, predictions


# -- the held-out yardstick where a concept cannot be a shortcut --------------------------------


def test_same_concept_masks_the_pairs_where_the_concept_does_not_differ():
    pairs = [
        PreferencePair("p", "a", "b", ("correct_answer", "markdown"), ()),
        PreferencePair("p", "a", "b", ("correct_answer", "markdown"), ("markdown",)),
        PreferencePair("p", "a", "b", ("correct_answer",), ("hedging",)),
        PreferencePair("p", "a", "b", ("correct_answer",), ("correct_answer",)),
    ]
    same = _same_concept(pairs)
    np.testing.assert_array_equal(same["markdown"], [False, True, True, True])
    np.testing.assert_array_equal(same["hedging"], [True, True, False, True])
    np.testing.assert_array_equal(same["correct_answer"], [False, False, False, True])
    assert _same_concept([PreferencePair("p", "a", "b", (), ())]) == {}  # no recorded concepts



# -- the audit's prediction per concept ---------------------------------------------------------


def test_prediction_counts_a_feature_of_the_concepts_alternative_with_its_sign_flipped():
    table = pd.DataFrame({
        "feature": [1, 2, 3, 4, 5],
        "significant": [True, True, True, True, False],
        "effect": [0.8, -0.6, -0.5, 0.4, 0.9],
        "direction": ["chosen", "rejected", "rejected", "chosen", "chosen"],
        "top_tokens": ["sorry", "here|tools", "maybe", "x", "sorry"],
        "concept": ["refusal", "refusal", "hedging", None, "refusal"],
        "concept_sign": [1.0, -1.0, 1.0, np.nan, np.nan],
    })
    out = predictions(table, ["refusal", "hedging", "markdown"])
    # refusing favoured (+0.8) and complying disfavoured (-0.6, an alternative): both say "refusal +"
    assert out["refusal"] == pytest.approx(0.7)
    assert out["hedging"] == pytest.approx(-0.5)  # planted on rejected: a negative prediction
    assert "markdown" not in out  # no significant hypothesis names it; feature 5 is not significant


def test_prediction_without_ground_truth_matches_the_concept_name_in_top_tokens():
    table = pd.DataFrame({
        "feature": [1, 2, 3], "significant": [True, True, True], "effect": [0.5, 0.3, -0.2],
        "direction": ["chosen", "chosen", "rejected"], "top_tokens": ["Sorry|no", "sorry", "maybe"],
    })
    assert predictions(table, ["sorry", "maybe"]) == pytest.approx({"sorry": 0.4, "maybe": -0.2})


# -- scoring: one pass gives the complete and the continuation score ----------------------------


def test_response_logps_give_complete_and_continuation_scores_in_one_pass():
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from anatomy.eval.scoring import response_logps, score, stop_logp

    texts = [("Question: which is a fruit?\nAnswer:", " the apple"), ("Q:", " a much longer answer, with more words in it"),
             ("", " no prompt at all"), ("Question: a long prompt " + "word " * 40, " cut")]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([p + r for p, r in texts], vocab_size=300, special_tokens=["<|endoftext|>", "<pad>"],
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<pad>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    rows = response_logps(model, tok, texts[:3], batch_size=2)
    for (ids, _), (_, response) in zip(rows, texts[:2]):  # the response's own tokens, then the end token
        assert list(ids) == tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert list(rows[2][0]) == tok(texts[2][1], add_special_tokens=False)["input_ids"][1:] + [tok.eos_token_id]  # no
    # prompt and no BOS token: nothing predicts the first token
    complete = np.array([logps.sum() for _, logps in rows])
    stop = np.array([stop_logp(ids, logps, tok.eos_token_id) for ids, logps in rows])
    np.testing.assert_allclose(complete, score(model, tok, texts[:3], "dpo", batch_size=2), rtol=1e-5)
    np.testing.assert_allclose(complete - stop, score(model, tok, texts[:3], "dpo", batch_size=2, eos=False), rtol=1e-4)
    assert (stop < 0).all()  # the end token's own log-prob, not zero
    # A text cut to max_length: the end token is still scored (the prompt is cut from the left first).
    (ids, logps), = response_logps(model, tok, texts[3:], max_length=12)
    assert stop_logp(ids, logps, tok.eos_token_id) < 0
    # What the run reports as eval/responses_cut: texts whose response itself loses tokens.

    from anatomy.models.base import encode_pair, responses_cut

    n = len(tok(texts[1][1], add_special_tokens=False)["input_ids"])
    assert responses_cut(tok, texts[1:2], max_length=n + 1) == 0
    assert responses_cut(tok, texts[1:2], max_length=n + 1, eos=True) == 1  # the end token no longer fits
    assert responses_cut(tok, texts[3:], max_length=12, eos=True) == 0  # only its prompt is cut
    # A response as long as max_length keeps one prompt token (its first token is read in context), so it is cut.
    assert responses_cut(tok, texts[1:2], max_length=n) == 1
    ids, start = encode_pair(tok, *texts[1], max_length=n)
    assert len(ids) == n and start == 1 and ids[1:] == tok(texts[1][1], add_special_tokens=False)["input_ids"][:-1]
    ids, start = encode_pair(tok, *texts[1], max_length=n + 1)
    assert start == 1 and ids[1:] == tok(texts[1][1], add_special_tokens=False)["input_ids"]


def test_first_difference():
    from anatomy.eval.scoring import first_difference

    assert first_difference(np.array([1, 2, 3]), np.array([1, 2, 4])) == 2
    assert first_difference(np.array([1, 2, 3, 0]), np.array([1, 2, 0])) == 2  # appended: the end token differs
    assert first_difference(np.array([1, 2]), np.array([1, 2, 3])) == 2
    assert first_difference(np.array([1, 2]), np.array([1, 2])) is None


def test_dpo_shifts_split_the_margin_into_onset_rest_stopping_and_going_on():
    from anatomy.eval.evaluate import dpo_shifts

    eos = 0
    # An appended concept: positive = base (7) + concept (8, 9), negative = base; both end with eos.
    pos_ids, neg_ids = np.array([7, 8, 9, eos]), np.array([7, eos])
    ref_pos, ref_neg = np.array([-1.0, -3.0, -0.5, -0.2]), np.array([-1.0, -0.4])
    pol_pos = ref_pos + np.array([0.1, 2.0, 0.3, -0.05])  # start the concept +2, go on +0.3, stop after it -0.05
    pol_neg = ref_neg + np.array([0.1, -1.0])  # stop after the base: -1
    out = dpo_shifts([(pos_ids, pol_pos)], [(neg_ids, pol_neg)], [(pos_ids, ref_pos)], [(neg_ids, ref_neg)], eos)
    assert out["shift_complete"][0] == pytest.approx(2.0 + 0.3 - 0.05 + 1.0)
    assert out["shift"][0] == pytest.approx(2.0 + 0.3)  # without the end tokens
    assert out["shift_onset"][0] == pytest.approx(2.0)  # the first concept token only
    # going on after the base: log(1 - e^-1.4) - log(1 - e^-0.4), more likely now that stopping is less
    assert out["shift_continue"][0] == pytest.approx(np.log(1 - np.exp(-1.4)) - np.log(1 - np.exp(-0.4)))
    assert out["shift_continue"][0] > 0
    # Two answers that differ at one token (correct vs wrong item): the onset is that token on both sides.
    pos_ids, neg_ids = np.array([7, 5, eos]), np.array([7, 6, eos])
    ref = np.array([-1.0, -2.0, -0.1])
    out = dpo_shifts([(pos_ids, ref + [0, 0.5, 0])], [(neg_ids, ref + [0, -0.25, 0.2])], [(pos_ids, ref)], [(neg_ids, ref)], eos)
    assert out["shift_onset"][0] == pytest.approx(0.75)
    assert out["shift"][0] == pytest.approx(0.75)
    assert out["shift_complete"][0] == pytest.approx(0.75 - 0.2)
    # A negative side whose end token was cut off says nothing about going on; a certain stop stays finite.
    out = dpo_shifts([(pos_ids, ref)], [(neg_ids[:2], ref[:2])], [(pos_ids, ref)], [(neg_ids[:2], ref[:2])], eos)
    assert out["shift_continue"][0] == 0.0
    out = dpo_shifts([(pos_ids, ref)], [(neg_ids, np.array([-1.0, -2.0, 0.0]))], [(pos_ids, ref)], [(neg_ids, ref)], eos)
    assert np.isfinite(out["shift_continue"][0]) and out["shift_continue"][0] < -20


# -- the run summary ------------------------------------------------------------------------------


def test_the_summary_shows_each_concept_learned_and_how_the_intervention_balanced_it(tmp_path):
    from anatomy.outputs import summary

    path = tmp_path / "hypotheses.csv"
    pd.DataFrame({"feature": [3], "direction": ["chosen"], "effect": [0.5], "q_value": [1e-9],
                  "significant": [True], "top_tokens": ["**|##"]}).to_csv(path, index=False)
    metrics = {"audit/n_pairs": 10.0, "audit/n_tested": 5.0, "audit/n_significant": 1.0,
               "eval/heldout_accuracy": 0.8, "eval/heldout_accuracy_before": 0.5, "eval/baseline/heldout_accuracy": 0.9,
               "timing/train_s": 3.0}
    for concept, shift, base, share in [("markdown", -1.5, 1.5, 0.48), ("hedging", -3.0, -4.0, float("nan"))]:
        metrics |= {f"eval/shift/{concept}": shift, f"eval/shift_onset/{concept}": shift / 2,
                    f"eval/baseline/shift/{concept}": base, f"eval/shift_reduction/{concept}": 1 - shift / base,
                    f"data/planted_chosen_share/{concept}": 0.88, f"intervention/planted_chosen_share/{concept}": share}
    metrics["eval/heldout_accuracy_same/markdown"] = 0.85  # hedging's is missing: its row stays aligned
    text = summary(metrics, path)
    rows = {line.split()[0]: line for line in text.splitlines() if line.strip().startswith(("markdown", "hedging"))}
    assert rows["markdown"].split() == ["markdown", "-1.50", "-0.75", "+1.50", "200%", "0.850", "0.88->0.48"]
    assert rows["hedging"].endswith("0.88->n/a")  # the intervention kept none of the pairs where it differs
    assert len(rows["hedging"]) == len(rows["markdown"])
    assert "held-out accuracy 0.800 (before training 0.500; without intervention 0.900)" in text
    without_heldout = {k: v for k, v in metrics.items() if "heldout_accuracy" not in k}  # data.heldout_fraction=0
    assert "held-out accuracy: no held-out pairs" in summary(without_heldout, path)
    assert "to decide" not in text  # an audit says where its verdicts file is; a trained run has decided
    audit = summary({k: v for k, v in metrics.items() if k.startswith("audit/")}, path)
    assert f"to decide: set block / amplify in {tmp_path / 'verdicts.yaml'}" in audit
    assert "group" not in audit  # an audit without concept groups (evidence.group_corr=null) names none


def test_the_summary_of_a_run_without_probes_still_says_what_it_trained_and_its_accuracy(tmp_path):
    """On a user's data (no probe pairs) a trained run's summary still gives the selection, what the
    intervention did, what it trained on, and held-out accuracy against no intervention."""
    from anatomy.outputs import summary

    path = tmp_path / "hypotheses.csv"
    pd.DataFrame({"feature": [3], "direction": ["rejected"], "effect": [-0.3], "q_value": [1e-9],
                  "significant": [True], "top_tokens": ["legal|hurt"]}).to_csv(path, index=False)
    metrics = {"audit/n_pairs": 800.0, "audit/n_tested": 5.0, "audit/n_significant": 1.0,
               "select/n_block": 1.0, "select/n_amplify": 0.0, "intervention/n_pairs": 800.0,
               "intervention/n_dropped": 12.0, "intervention/effective_sample_size": 745.5,
               "train/steps": 20.0, "train/pairs": 541.0, "train/pairs_too_long": 259.0,
               "eval/heldout_accuracy": 0.61, "eval/heldout_accuracy_before": 0.5,
               "eval/baseline/heldout_accuracy": 0.6, "eval/heldout_accuracy_change": 0.01,
               "eval/heldout_accuracy_change_se": 0.026}
    lines = summary(metrics, path).splitlines()
    assert ("intervention: 1 blocked and 0 amplified features (selection.json); 12 of 800 pairs dropped, "
            "effective sample size 746") in lines
    assert "trained 20 steps on 541 pairs (259 too long for trainer.max_length, left out)" in lines
    assert "no learned shifts: no probe pairs (eval.probes=FILE, README: Measure)" in lines
    assert ("held-out accuracy 0.610 (before training 0.500; without intervention 0.600, change +0.010 ± 0.026 "
            "paired s.e.)") in lines
    assert not any(line.startswith("validation accuracy") for line in lines)
    # on 200 held-out pairs a coin is right 0.5 ± 0.071 of the time (2 s.e.): 0.61 is beyond that, 0.55 is not
    assert not any("chance" in line for line in summary(metrics | {"data/heldout": 200.0}, path).splitlines())
    near = summary(metrics | {"data/heldout": 200.0, "eval/heldout_accuracy": 0.55}, path).splitlines()
    assert ("held-out accuracy 0.550 (before training 0.500; without intervention 0.600, change +0.010 ± 0.026 "
            "paired s.e.); within noise of chance: 0.5 ± 0.071 (2 s.e.) on 200 pairs") in near
    validated = summary(metrics | {"eval/validation_accuracy": 0.625, "eval/baseline/validation_accuracy": 0.65,
                                   "data/validation": 80.0}, path).splitlines()
    assert ("validation accuracy 0.625 (without intervention 0.650) on 80 pairs set apart from the held-out ones "
            "(choose settings by it, report held-out)") in validated
    assert not any(line.startswith("shift on the validation probes") for line in validated)
    probed = summary(metrics | {"eval/validation_shift/markdown": -0.25, "eval/baseline/validation_shift/markdown": 1.5,
                                "eval/validation_shift/tone": 0.5}, path).splitlines()
    assert ("shift on the validation probes, drawn apart from the probes above (choose settings by it): markdown -0.25 "
            "(without intervention +1.50), tone +0.50") in probed
    ablated = {k: v for k, v in metrics.items() if not k.startswith(("intervention/", "train/pairs_too"))}
    text = summary(ablated | {"intervention/edit_energy/blocks.2.hook_resid_post": 0.57}, path)
    assert "intervention: 1 blocked and 0 amplified features (selection.json); blocks.2.hook_resid_post edited " \
           "(57% of its energy)" in text and "trained 20 steps on 541 pairs" + "\n" in text


def test_the_summary_lists_the_strongest_concept_groups(tmp_path):
    from anatomy.outputs import summary

    path = tmp_path / "hypotheses.csv"
    pd.DataFrame({"feature": [3, 4, 7, 9], "direction": ["chosen", "chosen", "rejected", "chosen"],
                  "effect": [0.5, 0.3, -0.4, 0.01], "q_value": [1e-9, 1e-5, 1e-7, 0.5],
                  "significant": [True, True, True, False], "top_tokens": ["**|##", "##|Key", "maybe", "the"],
                  "group": [1, 2, 1, None]}).to_csv(path, index=False)
    metrics = {"audit/n_pairs": 10.0, "audit/n_tested": 4.0, "audit/n_significant": 3.0, "audit/n_groups": 2.0}
    text = summary(metrics, path)
    assert "3 significant in 2 concept groups" in text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1] in ("1", "2") and len(line.split()) == 5]
    assert rows == [["1", "2", "mixed", "+0.05", "**|##|maybe"], ["2", "1", "chosen", "+0.30", "##|Key"]]
    assert "or block a whole group: select.block=[group:N]" in text


def test_model_written_evaluations_are_probes_named_after_their_file(tmp_path):
    """Anthropic's model-written evaluations (persona/, sycophancy/ released files) read as probes:
    the concept is the file's name, the prompt the upstream dialogue template, the positive side the
    answer matching the behaviour."""
    import json

    path = tmp_path / "narcissism.jsonl"
    rows = [{"question": "Would you say \"I am special\"?", "statement": "I am special",
             "label_confidence": 0.9, "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " No"},
            {"concept": "mine", "prompt": "Q", "positive": "a", "negative": "b"}]  # the plain format, in the same file
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = load_probes(str(path))
    assert (first.concept, first.prompt, first.positive, first.negative) == (
        "narcissism", '\n\nHuman: Would you say "I am special"?\n\nAssistant:', " Yes", " No")
    assert second.concept == "mine"
    gz = tmp_path / "agreeableness.jsonl.gz"
    import gzip

    gz.write_bytes(gzip.compress(path.read_bytes()))
    probes = Evaluate(probes=[str(path), str(gz)]).probe_set(data=None)  # several files: all their probes
    assert [p.concept for p in probes] == ["narcissism", "mine", "agreeableness", "mine"]
    dotted = tmp_path / "believes-AI-is-v1.1.jsonl"  # a dot in the behaviour's own name is kept
    dotted.write_bytes(path.read_bytes())
    assert load_probes(str(dotted))[0].concept == "believes-AI-is-v1.1"
    rows[0]["answer_not_matching_behavior"] = ""
    path.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(AnatomyError, match="row 0 has an empty or non-string field"):
        load_probes(str(path))
    path.write_text(json.dumps({"question": "Q", "answer_matching_behavior": " Yes"}) + "\n")
    with pytest.raises(AnatomyError, match=r"row 0 lacks .*for a model-written evaluation"):
        load_probes(str(path))
    path.write_text(json.dumps({"concept": "c", "prompt": "Q", "positive": " same", "negative": " same"}) + "\n")
    with pytest.raises(AnatomyError, match="row 0: positive and negative are the same text"):
        load_probes(str(path))


def test_probe_files_that_would_merge_are_refused(tmp_path):
    """Two model-written evaluations of the same file name (persona/x.jsonl and other/x.jsonl) would
    both be the concept x and silently average two behaviours; a file listed twice would count its
    probes twice. Both are refused, naming the files; plain-format files may share a concept."""
    import json

    written = json.dumps({"question": "Q?", "answer_matching_behavior": " Yes",
                          "answer_not_matching_behavior": " No"}) + "\n"
    plain = json.dumps({"concept": "flattery", "prompt": "Q", "positive": "a", "negative": "b"}) + "\n"
    for folder in ("persona", "other"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "narcissism.jsonl").write_text(written)
        (tmp_path / folder / "flattery.jsonl").write_text(plain)
    one, two = str(tmp_path / "persona" / "narcissism.jsonl"), str(tmp_path / "other" / "narcissism.jsonl")
    with pytest.raises(AnatomyError, match=r"persona/narcissism.jsonl' and .*other/narcissism.jsonl' .*'narcissism'"):
        Evaluate(probes=[one, two]).probe_set(data=None)
    with pytest.raises(AnatomyError, match="lists .*narcissism.jsonl' twice"):
        Evaluate(probes=[one, str(tmp_path / "other" / ".." / "persona" / "narcissism.jsonl")]).probe_set(data=None)
    plains = [str(tmp_path / folder / "flattery.jsonl") for folder in ("persona", "other")]
    probes = Evaluate(probes=[one, *plains]).probe_set(data=None)  # the concept a row names may span files
    assert [p.concept for p in probes] == ["narcissism", "flattery", "flattery"]


def test_the_accuracy_change_is_paired_on_the_same_pairs():
    after = np.array([1.0, -1.0, 0.0, 2.0])  # right, wrong, a tie (half right), right
    before = np.array([1.0, 1.0, -1.0, -3.0])  # right, right, wrong, wrong
    out = accuracy_change(after, before, prefix="eval")
    change = np.array([0.0, -1.0, 0.5, 1.0])
    assert out["eval/heldout_accuracy_change"] == pytest.approx(change.mean())
    assert out["eval/heldout_accuracy_change_se"] == pytest.approx(change.std(ddof=1) / 2)
    assert accuracy_change(after, before[:3]) == {} and accuracy_change(after[:1], before[:1]) == {}


def test_a_reduction_needs_a_baseline_clear_of_zero():
    from anatomy.eval.accuracy import distinct_from_zero

    assert distinct_from_zero(1.25, 0.1) and distinct_from_zero(-0.3, 0.15)  # 2 s.e. exactly counts
    assert not distinct_from_zero(0.02, 0.05) and not distinct_from_zero(0.0, None)
    assert distinct_from_zero(0.02, None) and distinct_from_zero(0.02, float("nan"))  # no s.e.: merely nonzero
    assert not distinct_from_zero(float("nan"), 0.1)


def test_the_summary_prints_a_top_token_that_pandas_would_read_as_missing(tmp_path):
    from anatomy.outputs import summary

    path = tmp_path / "hypotheses.csv"
    pd.DataFrame({"feature": [3, 4], "direction": ["chosen", "rejected"], "effect": [0.5, -0.4], "q_value": [1e-9, 1e-8],
                  "significant": [True, True], "top_tokens": ["None", "NA|null"]}).to_csv(path, index=False)
    text = summary({"audit/n_pairs": 10.0, "audit/n_tested": 5.0, "audit/n_significant": 2.0}, path)
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["3"], ["4"])]
    assert [r[-1] for r in rows] == ["None", "NA|null"]


def test_validation_probes_are_the_files_given_or_else_the_datas_own(tmp_path):
    """`eval.validation_probes` (to choose settings by) never falls back to `eval.probes`: files given,
    or else the data's own validation probes, but none when `eval.probes` names files (the data's would
    measure other concepts)."""
    from types import SimpleNamespace

    from anatomy.data.schema import Probe

    own = [Probe("markdown", "q", " a ## b", " a")]
    data = SimpleNamespace(probes=[Probe("markdown", "q", " x ## y", " x")], validation_probes=own)
    path = tmp_path / "val.jsonl"
    path.write_text(json.dumps({"concept": "tone", "prompt": "q", "positive": " yes!", "negative": " yes"}) + "\n")
    assert Evaluate().validation_probe_set(data) == own
    assert Evaluate(validation_probes=str(path)).validation_probe_set(data) == [Probe("tone", "q", " yes!", " yes")]
    assert Evaluate(probes=str(path)).validation_probe_set(data) == []
    with pytest.raises(AnatomyError, match="eval.validation_probes"):  # the key that named the file
        Evaluate(validation_probes=str(tmp_path / "missing.jsonl")).validation_probe_set(data)


def test_an_audit_where_length_separates_nearly_every_pair_says_so(tmp_path):
    """GENIES' alpaca_short prefers the shorter response in every pair: then every feature that grows
    with length separates them, and regressing length out only extrapolates to equal lengths."""
    from anatomy.outputs import LENGTH_ONE_SIDED, length_note, render_markdown, summary

    path = tmp_path / "hypotheses.csv"
    table = pd.DataFrame({"feature": [3], "direction": ["rejected"], "effect": [-0.9], "q_value": [1e-9],
                          "significant": [True], "top_tokens": ["the|a"], "auroc": [0.1], "frequency": [0.5]})
    table.to_csv(path, index=False)
    metrics = {"audit/n_pairs": 480.0, "audit/n_tested": 5.0, "audit/n_significant": 1.0,
               "audit/n_significant_chosen": 0.0, "audit/n_significant_rejected": 1.0,
               "audit/chosen_longer": 0.0, "audit/chosen_shorter": 0.99}
    note = ("length: the chosen response is the shorter one in 99% of the 480 pairs, so length alone separates "
            "chosen from rejected")
    assert note in summary(metrics, path).splitlines()[3] and "hypothesis=length_controlled" in summary(metrics, path)
    header = {"data": "GeniesData", "model": "m", "sae": "s", "hook": "h", "test": "wilcoxon", "correction": "bh",
              "alpha": 0.05, "pooling": "max"}
    assert f"**L{note[1:]}" in render_markdown(table, {3: {"snippets": [], "promoted": []}}, metrics, header, 10)
    controlled = length_note(metrics, control_length=True)
    assert "estimates each effect at equal lengths, which few pairs have: it extrapolates" in controlled
    pd.DataFrame(table.assign(effect_unadjusted=[-0.9])).to_csv(path, index=False)  # (a length-controlled table)
    assert controlled in summary(metrics, path)
    # the longer side too; below the bar (the default synthetic study: 77% longer) nothing is said
    assert "the longer one in 95%" in length_note(metrics | {"audit/chosen_shorter": 0.04, "audit/chosen_longer": 0.95},
                                                 control_length=False)
    balanced = metrics | {"audit/chosen_shorter": 0.23, "audit/chosen_longer": 0.77}
    assert LENGTH_ONE_SIDED > 0.77 and length_note(balanced, False) is None
    assert "length:" not in summary(balanced, path) and length_note({}, False) is None  # (an older run's metrics)


def test_hypotheses_tested_again_on_a_shifts_target_say_so(tmp_path):
    """With data.target (a GENIES shift) the pairs a hypothesis is tested again on are another
    distribution's: the summary calls them target pairs, not held-out ones."""
    from anatomy.outputs import again, summary

    path = tmp_path / "hypotheses.csv"
    pd.DataFrame({"feature": [3], "direction": ["rejected"], "effect": [-0.9], "q_value": [1e-9], "significant": [True],
                  "top_tokens": ["the|a"], "heldout_effect": [0.6], "replicated": [False]}).to_csv(path, index=False)
    metrics = {"audit/n_pairs": 600.0, "audit/n_tested": 5.0, "audit/n_significant": 1.0, "audit/n_replicated": 0.0,
               "audit/heldout_pairs": 250.0}
    assert again(metrics) == "held-out" and again(metrics | {"audit/replication_on_validation": 1.0}) == "validation"
    shifted = metrics | {"data/target_rows": 250.0}
    assert again(shifted) == "target" and again(shifted | {"audit/replication_on_validation": 1.0}) == "target validation"
    text = summary(shifted, path)
    assert "replicated on 250 target pairs (not the ones they were found on): 0 of 1" in text and "+0.60!" in text
