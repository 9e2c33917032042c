"""Decide and intervene without training: select, the concept difference, the four interventions'
plans, and the `hooks` context manager on a tiny random Llama.

All fast: `Features` are built by hand from scipy.sparse matrices and the SAE is a stand-in holding
only a decoder matrix and a hook name.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from anatomy.data.schema import PreferencePair
from anatomy.errors import AnatomyError
from anatomy.features import Features
from anatomy.interventions import NoIntervention
from anatomy.interventions.ablation import FeatureAblation
from anatomy.interventions.filtering import DataFiltering
from anatomy.interventions.plan import (concept_difference, concept_presence, otsu_threshold, plan_for, planted_balance,
                                        weight_report)
from anatomy.interventions.reweighting import DataReweighting, balance
from anatomy.interventions.steering import FeatureSteering
from anatomy.models.hooks import hooks
from anatomy.select import Select, Selection

# -- helpers -----------------------------------------------------------------------------------


def make_features(chosen: np.ndarray, rejected: np.ndarray) -> Features:
    """A `Features` holding only pooled activations (the evidence fields are empty)."""
    chosen, rejected = np.asarray(chosen, dtype=np.float32), np.asarray(rejected, dtype=np.float32)
    n, d = chosen.shape
    return Features(
        chosen=sp.csr_matrix(chosen), rejected=sp.csr_matrix(rejected),
        chosen_length=np.ones(n, dtype=int), rejected_length=np.ones(n, dtype=int),
        tokens=np.zeros(0, dtype=np.int32), offsets=np.zeros(2 * n + 1, dtype=int),
        top_values=np.zeros((1, d), dtype=np.float32), top_where=np.full((1, d), -1),
    )


def fake_sae(w_dec: torch.Tensor, hook: str = "blocks.0.hook_resid_post"):
    return SimpleNamespace(sae=SimpleNamespace(W_dec=w_dec), hook=hook)


def selection(block=(), amplify=(), directions=None) -> Selection:
    block, amplify = sorted(block), sorted(amplify)
    directions = directions or {}
    feats = block + amplify
    return Selection(block, amplify, {f: ["test"] for f in feats},
                     {f: directions.get(f, "chosen") for f in feats})


def table() -> pd.DataFrame:
    """A hypotheses table: features 3, 5, 8 significant; 9 tested but not significant."""
    return pd.DataFrame({
        "feature": [3, 5, 8, 9],
        "direction": ["chosen", "chosen", "rejected", "chosen"],
        "effect": [0.4, 0.3, -0.2, 0.01],
        "significant": [True, True, True, False],
        "top_tokens": ["**|Key|##", "genius|smart|brilliant", "maybe|perhaps|Sorry", "keyboard|key|hidden"],
    })


# -- select ------------------------------------------------------------------------------------


def test_select_by_feature_id():
    sel = Select(block=[3], amplify=[9]).run(table())  # an id need only be tested, not significant
    assert sel.block == [3] and sel.amplify == [9]
    assert sel.directions == {3: "chosen", 9: "chosen"}
    assert sel.unmatched == []
    assert sel.report() == {"select/n_block": 1.0, "select/n_amplify": 1.0}


def test_select_untested_id_is_an_error():
    with pytest.raises(AnatomyError, match="feature 42 was not tested"):
        Select(block=[42]).run(table())


def test_select_strings_match_whole_top_tokens_case_insensitively_among_significant_rows():
    sel = Select(block=["KEY"]).run(table())
    # feature 3 has "Key"; feature 9 has "key" too but is not significant; "keyboard" is not "key"
    assert sel.block == [3]
    assert Select(block=["Smart"], amplify=["sorry"]).run(table()).amplify == [8]
    assert Select(block=["smart"]).run(table()).block == [5]
    with pytest.raises(AnatomyError, match="nothing selected"):
        Select(block=["keyb"]).run(table())  # a prefix of a token is no match
    with pytest.raises(AnatomyError, match="nothing selected"):
        Select(block=["hidden"]).run(table())  # a top token of a non-significant row only


def test_select_one_string_can_hit_several_features():
    t = table()
    t.loc[1, "top_tokens"] = "genius|**"
    sel = Select(block=["**"]).run(t)
    assert sel.block == [3, 5]
    assert all("'**'" in sel.reasons[f][0] for f in (3, 5))


def test_select_match_top_matches_only_the_strongest_top_tokens():
    t = table()
    t.loc[1, "top_tokens"] = "genius|smart|**"  # "**" only as feature 5's third top token
    assert Select(block=["**"]).run(t).block == [3, 5]  # default: every top token
    sel = Select(block=["**"], match_top=1).run(t)
    assert sel.block == [3] and sel.reasons[3] == ["select.block '**' matches its first 1 top tokens"]
    assert Select(block=["**", "smart"], match_top=2).run(t).block == [3, 5]  # smart is 5's second
    with pytest.raises(AnatomyError, match="match_top must be >= 0"):
        Select(match_top=-1)


def test_select_unmatched_strings_are_recorded_and_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="anatomy.select"):
        sel = Select(block=["genius", "nonsense"], amplify=["nothing"]).run(table())
    assert sel.block == [5] and sel.amplify == []
    assert sel.unmatched == ["block:nonsense", "amplify:nothing"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "nonsense" in warned and "nothing" in warned


def test_select_messages_show_each_string_as_the_user_wrote_it(caplog):
    # A line break is written '\n' in the config (backslash, n), as top tokens show it; the reason
    # and the warning must print it that way, not as Python's repr ('\\n').
    t = table()
    t.loc[0, "top_tokens"] = "**|\\n|##"
    with caplog.at_level(logging.WARNING, logger="anatomy.select"):
        sel = Select(block=["\\n", "x\\ty"]).run(t)
    assert sel.reasons[3] == ["select.block '\\n' matches its top tokens"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "'x\\ty' matches no" in warned and "\\\\" not in warned
    with pytest.raises(AnatomyError) as err:
        Select(block=["x\\ty", "zzz"]).run(t)
    assert "block:x\\ty, block:zzz match no" in str(err.value)


def test_select_a_concept_group_selects_every_feature_in_it():
    t = table().assign(group=pd.array([1, 2, 1, pd.NA], dtype="Int64"))  # 9 is not significant: no group
    sel = Select(block=["group:1"], amplify=[" Group:2"]).run(t)
    assert (sel.block, sel.amplify) == ([3, 8], [5])
    assert sel.reasons[8] == ["select.block 'group:1': it is in concept group 1"]
    with pytest.raises(AnatomyError, match=r"'group:7': there is no concept group 7 \(this audit has 2"):
        Select(block=["group:7"]).run(t)
    with pytest.raises(AnatomyError, match="names a concept group, but this run has none"):
        Select(block=["group:1"]).run(table())


def test_select_nothing_selected_is_an_error():
    with pytest.raises(AnatomyError, match="nothing selected") as err:
        Select(block=["nonsense"], amplify=["other"]).run(table())
    assert "nonsense" in str(err.value)


def test_select_rejects_items_that_are_neither_ids_nor_strings():
    with pytest.raises(AnatomyError, match="neither a feature id nor a string"):
        Select(block=[1.5])
    with pytest.raises(AnatomyError, match="neither"):
        Select(amplify=[True])


def test_select_both_blocked_and_amplified_is_an_error():
    with pytest.raises(AnatomyError, match=r"\[3\] are both blocked and amplified"):
        Select(block=["key"], amplify=[3]).run(table())


def test_verdicts_override_block_and_amplify(tmp_path):
    path = tmp_path / "verdicts.yaml"
    path.write_text("3: allow\n8: Block\n9: amplify\n")
    sel = Select(block=["key", "genius"], amplify=["sorry"], verdicts=str(path)).run(table())
    assert sel.block == [5, 8]  # 3 allowed by the reviewer; 8 moved from amplify to block
    assert sel.amplify == [9]
    assert sel.reasons[8] == [f"{path}: block"]
    assert sel.reasons[9] == [f"{path}: amplify"]
    assert sel.directions == {5: "chosen", 8: "rejected", 9: "chosen"}
    assert 3 not in sel.reasons


def test_verdicts_that_override_a_selection_say_which(tmp_path, caplog):
    # e.g. select.block=[group:N] with the audit's verdicts.yaml, which names every feature: the file
    # wins for the features it names, and the run says which of the selection it undid
    path = tmp_path / "verdicts.yaml"
    path.write_text("3: allow\n5: block\n8: Block\n")
    with caplog.at_level("WARNING"):
        sel = Select(block=["key", "genius"], amplify=["sorry"], verdicts=str(path)).run(table())
    assert sel.block == [5, 8]
    assert ("overrides select.block / select.amplify for 2 features it names: 3 (block -> allow), "
            "8 (amplify -> block)") in caplog.text


def test_verdicts_alone_select(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("5: block\n")
    sel = Select(verdicts=str(path)).run(table())
    assert sel.block == [5] and sel.amplify == []


def test_verdicts_that_select_nothing_say_so(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("3: allow\n5: allow\n")  # what the strings select, all allowed by the reviewer
    with pytest.raises(AnatomyError, match="blocks and amplifies nothing, and overrides select.block"):
        Select(block=["key", "genius"], verdicts=str(path)).run(table())


def test_the_verdicts_template_is_a_verdicts_file_that_gives_back_the_runs_selection(tmp_path):
    from anatomy.outputs import write_verdicts

    t = table().assign(q_value=[0.01, 0.001, 0.02, 0.5], concept=["markdown", None, None, None],
                       group=pd.array([2, 1, 2, pd.NA], dtype="Int64"))
    t.loc[2, "top_tokens"] = "may\nbe|perhaps"  # a raw line break in a token stays inside its comment
    header = {"sae": "sae-key", "hook": "blocks.2.hook_resid_post", "sae_fingerprint": "0123456789"}
    write_verdicts(tmp_path, t, header, {5: "block", 9: "amplify"})
    text = (tmp_path / "verdicts.yaml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith(("# ", "sae:", "groups:")) or line[2:3].isdigit()]
    # strongest first (by q, as hypotheses.md), a group at its strongest feature's place with its features
    # under it as comments, then a selected non-significant feature
    assert [line.split(":")[0] if not line.startswith("group") else line.split(":")[1] for line in lines] == \
        ["1", "# 5", "2", "# 3", "# 8", "9"]
    assert lines[0].startswith("group:1:   block") and lines[2].startswith("group:2:   allow")
    assert "concept group 2: 2 features, below" in lines[2]
    assert lines[3].startswith("# 3:     allow") and "; group 2; names markdown" in lines[3] and "may\\nbe" in lines[4]
    assert lines[1].endswith("top tokens genius|smart|brilliant; group 1") and "group" not in lines[5]
    assert "#   sae-key at blocks.2.hook_resid_post" in text
    path = str(tmp_path / "verdicts.yaml")
    sel = Select(verdicts=path).run(t)
    assert (sel.block, sel.amplify) == ([5], [9])  # as the run selected
    assert sel.reasons[5] == [f"{path}: group:1: block"]
    (tmp_path / "verdicts.yaml").write_text(text.replace("group:2:   allow", "group:2:   block"))  # a person's edit
    assert Select(verdicts=path).run(t).block == [3, 5, 8]
    # uncommenting a feature's line decides it apart from its group
    (tmp_path / "verdicts.yaml").write_text(text.replace("group:2:   allow", "group:2:   block")
                                            .replace("# 8:     allow", "8:     allow"))
    assert Select(verdicts=path).run(t).block == [3, 5]
    # a group decided feature by feature keeps its features' own lines
    write_verdicts(tmp_path, t, header, {3: "block", 5: "block"})
    mixed = (tmp_path / "verdicts.yaml").read_text()
    assert "group:2:" not in mixed and "\n3:     block" in mixed and "\n8:     allow" in mixed
    assert Select(verdicts=path).run(t).block == [3, 5]
    (tmp_path / "verdicts.yaml").write_text(text)
    # it records each group line's features: an audit whose group 2 has other features refuses the line
    assert "\ngroups: {1: [5], 2: [3, 8]}\n" in text and "\ngroups: {1: [5]}\n" in mixed  # (mixed: 2 has no line)
    regrouped = t.assign(group=pd.array([2, 1, 1, pd.NA], dtype="Int64"))  # 8 moved to group 1
    with pytest.raises(AnatomyError, match=r"group:1 was written for features \[5\], but this audit's concept "
                                           r"group 1 is \[5, 8\]: group numbers are one audit's"):
        Select(verdicts=path).run(regrouped)
    (tmp_path / "verdicts.yaml").write_text(text.replace("groups: {1: [5], 2: [3, 8]}", "groups: {2: [3, 8]}"))
    with pytest.raises(AnatomyError, match=r"group:2 was written for features \[3, 8\], but this audit's concept "
                                           r"group 2 is \[3\]"):
        Select(verdicts=path).run(regrouped)  # 1's entry deleted: group 1 is not checked, group 2 still is
    assert Select(verdicts=path).run(t).block == [5]
    (tmp_path / "verdicts.yaml").write_text(text.replace("groups: {1: [5], 2: [3, 8]}", "groups: [5]"))
    with pytest.raises(AnatomyError, match=r"groups: expected \{group: \[feature ids\]\}, got \[5\]"):
        Select(verdicts=path).check()  # (before the audit)
    (tmp_path / "verdicts.yaml").write_text(text)
    # the file names the SAE it was written for (quoted: digits alone would read as a number)
    Select(verdicts=path).check_sae("0123456789")
    with pytest.raises(AnatomyError, match=r"written for another SAE \(its sae: 0123456789; this run's SAE: fedcba"):
        Select(verdicts=path).check_sae("fedcba")
    (tmp_path / "verdicts.yaml").write_text(text.replace('sae: "0123456789"\n', ""))  # deleted: ids applied anyway
    Select(verdicts=path).check_sae("fedcba")
    Select().check_sae("fedcba")  # no verdicts file, nothing to check
    # an id beyond the SAE's width, in the file or in select.block, fails before the audit
    Select(verdicts=path, block=[7]).check_sae("fedcba", d_sae=10)
    with pytest.raises(AnatomyError, match=r"feature id\(s\) \[9\] are not features of this SAE, which has 9 \(ids 0-8\)"):
        Select(verdicts=path).check_sae("fedcba", d_sae=9)
    with pytest.raises(AnatomyError, match=r"feature id\(s\) \[-1, 12\]"):
        Select(block=[12, "genius", -1]).check_sae("fedcba", d_sae=10)


def test_an_sae_fingerprint_is_its_decoder():
    from anatomy.saes.base import LoadedSAE

    def loaded(w_dec, source):
        return LoadedSAE(type("SAE", (), {"W_dec": w_dec})(), "blocks.2.hook_resid_post", 4, 3, source)

    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    assert loaded(w, "a").fingerprint == loaded(w.clone(), "elsewhere").fingerprint  # wherever it is loaded from
    assert loaded(w, "a").fingerprint != loaded(w + 1e-6, "a").fingerprint


@pytest.mark.parametrize("content, match", [
    ("3: maybe\n", r"feature 3: verdict 'maybe' is not one of"),
    ("abc: block\n", r"'abc' is not a feature id"),
    ("- 3\n- 5\n", "expected a mapping"),
    ("3: [block\n", "does not parse as YAML"),
    ("42: block\n", "feature 42 was not tested"),
    ("group:1: blok\n", r"group:1: verdict 'blok' is not one of"),
    ("group:7: block\n", r"'group:7': there is no concept group 7 \(this audit has 2"),
])
def test_bad_verdicts_file_is_an_error_naming_it(tmp_path, content, match):
    path = tmp_path / "verdicts.yaml"
    path.write_text(content)
    with pytest.raises(AnatomyError, match=match):
        Select(verdicts=str(path)).run(table().assign(group=pd.array([1, 2, 1, pd.NA], dtype="Int64")))


def test_a_verdicts_group_line_is_checked_before_the_audit_and_needs_groups(tmp_path):
    path = tmp_path / "verdicts.yaml"
    path.write_text("group:1: maybe\n")
    with pytest.raises(AnatomyError, match=r"group:1: verdict 'maybe' is not one of"):
        Select(verdicts=str(path)).check()  # (check runs before the audit)
    path.write_text("group:1: block\n")
    with pytest.raises(AnatomyError, match="'group:1' names a concept group, but this run has none"):
        Select(verdicts=str(path)).run(table())


def test_missing_verdicts_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(AnatomyError, match="does not exist") as err:
        Select(block=[3], verdicts=str(path)).run(table())
    assert str(path) in str(err.value)


def test_selection_to_json_records_reasons():
    sel = Select(block=["key", 5], amplify=["sorry", "absent"]).run(table())
    js = sel.to_json()
    assert js["block"] == [3, 5] and js["amplify"] == [8]
    assert js["unmatched"] == ["amplify:absent"]
    assert set(js["features"]) == {"3", "5", "8"}
    assert js["features"]["3"] == {"direction": "chosen", "reasons": ["select.block 'key' matches its top tokens"]}
    assert js["features"]["5"]["reasons"] == ["select.block names feature 5"]
    assert js["features"]["8"]["direction"] == "rejected"
    assert "sorry" in js["features"]["8"]["reasons"][0]
    import json

    json.dumps(js)  # serializable as it is


# -- concept_difference ------------------------------------------------------------------------


def test_concept_difference_signs_and_standardizes():
    rng = np.random.default_rng(0)
    chosen, rejected = rng.exponential(1.0, (50, 4)), rng.exponential(1.0, (50, 4))
    feats = make_features(chosen, rejected)
    diff = chosen.astype(np.float32).astype(np.float64) - rejected.astype(np.float32).astype(np.float64)
    z = diff / diff.std(axis=0)
    # one chosen-direction feature: its standardized difference
    np.testing.assert_allclose(concept_difference(feats, [1], {1: "chosen"}), z[:, 1], rtol=1e-5)
    # a rejected-direction feature flips: positive means the pair's preference goes its way
    np.testing.assert_allclose(concept_difference(feats, [2], {2: "rejected"}), -z[:, 2], rtol=1e-5)
    # several: the mean of the signed standardized differences
    both = concept_difference(feats, [1, 2], {1: "chosen", 2: "rejected"})
    np.testing.assert_allclose(both, (z[:, 1] - z[:, 2]) / 2, rtol=1e-5, atol=1e-7)
    assert np.std(concept_difference(feats, [3], {3: "chosen"})) == pytest.approx(1.0, rel=1e-5)


def test_concept_difference_scale_invariant_and_zero_without_selection():
    rng = np.random.default_rng(1)
    chosen, rejected = rng.exponential(1.0, (30, 2)), rng.exponential(1.0, (30, 2))
    a = concept_difference(make_features(chosen, rejected), [0], {0: "chosen"})
    b = concept_difference(make_features(chosen * 7, rejected * 7), [0], {0: "chosen"})
    np.testing.assert_allclose(a, b, rtol=1e-5)
    out = concept_difference(make_features(chosen, rejected), [], {})
    assert out.shape == (30,) and not out.any()


def test_concept_difference_constant_feature_is_not_divided_by_zero():
    chosen = np.zeros((5, 2))
    rejected = np.zeros((5, 2))
    out = concept_difference(make_features(chosen, rejected), [0], {0: "chosen"})
    assert np.isfinite(out).all() and not out.any()


# -- data filtering ----------------------------------------------------------------------------


def _filter_features():
    # feature 0: the blocked concept; feature 1: an amplified one
    block_c = np.array([3.0, 0.0, 1.0, 0.0, 2.0, 0.0, 0.5, 0.0])
    block_r = np.array([0.0, 2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    amp_c = np.array([0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0])
    amp_r = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    return make_features(np.stack([block_c, amp_c], 1), np.stack([block_r, amp_r], 1))


def test_filtering_drops_exactly_the_pairs_beyond_threshold_on_either_side():
    feats = _filter_features()
    d = feats.chosen[:, 0].toarray().ravel() - feats.rejected[:, 0].toarray().ravel()
    z = d / d.std()
    plan = DataFiltering(threshold=0.5).plan(selection(block=[0]), feats, None)
    np.testing.assert_array_equal(plan.weights, (np.abs(z) <= 0.5).astype(float))
    # chosen carries it (0, 2, 4) or rejected does (1, 5): the kept pairs say nothing about it
    assert list(np.flatnonzero(plan.weights == 0)) == [0, 1, 2, 4, 5]
    assert plan.edits == {}
    assert plan.report["intervention/n_pairs"] == 8.0
    assert plan.report["intervention/n_dropped"] == 5.0
    assert plan.report["intervention/effective_sample_size"] == pytest.approx(3.0)
    assert plan.report["intervention/effective_sample_fraction"] == pytest.approx(3 / 8)
    # a higher threshold drops fewer: only the strongest pairs
    strict = DataFiltering(threshold=1.2).plan(selection(block=[0]), feats, None)
    assert list(np.flatnonzero(strict.weights == 0)) == [0, 1, 4]


def test_one_sided_filtering_drops_only_the_pairs_the_concept_explains():
    feats = _filter_features()
    d = feats.chosen[:, 0].toarray().ravel() - feats.rejected[:, 0].toarray().ravel()
    z = d / d.std()
    plan = DataFiltering(threshold=0.5, two_sided=False).plan(selection(block=[0]), feats, None)
    np.testing.assert_array_equal(plan.weights, (z <= 0.5).astype(float))
    assert list(np.flatnonzero(plan.weights == 0)) == [0, 2, 4]
    strict = DataFiltering(threshold=1.5, two_sided=False).plan(selection(block=[0]), feats, None)
    assert list(np.flatnonzero(strict.weights == 0)) == [0]


def test_filtering_in_a_rejected_direction_drops_pairs_where_rejected_has_the_concept():
    feats = _filter_features()
    plan = DataFiltering(threshold=0.5, two_sided=False).plan(
        selection(block=[0], directions={0: "rejected"}), feats, None)
    assert list(np.flatnonzero(plan.weights == 0)) == [1, 5]


def test_filtering_keeps_pairs_an_amplified_concept_favours():
    feats = _filter_features()
    plan = DataFiltering(threshold=0.5).plan(selection(block=[0], amplify=[1]), feats, None)
    # pair 4: blocked concept favours chosen, but so does the amplified one: kept
    assert list(np.flatnonzero(plan.weights == 0)) == [0, 1, 2, 5]
    assert plan.report["intervention/n_dropped"] == 4.0


def test_filtering_errors():
    # the concept favours chosen in every pair, by more than the threshold in each
    everywhere = make_features(np.array([[1.0], [2.0], [3.0], [4.0]]), np.zeros((4, 1)))
    with pytest.raises(AnatomyError, match="drops every pair"):
        DataFiltering(threshold=0.5).plan(selection(block=[0]), everywhere, None)
    with pytest.raises(AnatomyError, match="select.block"):
        DataFiltering().plan(selection(amplify=[1]), _filter_features(), None)


def _presence_features(seed=0, n=300):
    """Two blocked features that fire (strongly, noisily) together in responses carrying the concept,
    and weakly at random elsewhere; ~40% of chosen and ~20% of rejected responses carry it."""
    rng = np.random.default_rng(seed)
    carries_c, carries_r = rng.random(n) < 0.4, rng.random(n) < 0.2

    def side(carries):
        strong = rng.uniform(2.0, 4.0, (n, 2)) * carries[:, None]
        weak = rng.uniform(0.0, 0.3, (n, 2)) * (rng.random((n, 2)) < 0.3)
        return np.maximum(strong, weak)

    return make_features(side(carries_c), side(carries_r)), carries_c, carries_r


def test_presence_filtering_drops_every_pair_that_carries_the_concept_on_either_side():
    feats, carries_c, carries_r = _presence_features()
    plan = DataFiltering(drop="present").plan(selection(block=[0, 1]), feats, None)
    np.testing.assert_array_equal(plan.weights, (~(carries_c | carries_r)).astype(float))
    # concept on both sides (where drop="differ" keeps the pair) goes too
    both = carries_c & carries_r
    assert both.any() and (plan.weights[both] == 0).all()
    assert plan.report["intervention/n_responses_present"] == carries_c.sum() + carries_r.sum()
    chosen, rejected = concept_presence(feats, [0, 1])
    scores = np.concatenate([chosen, rejected])
    present = np.concatenate([carries_c, carries_r])
    assert scores[~present].max() < plan.report["intervention/presence_threshold"] < scores[present].min()
    # an explicit threshold replaces Otsu's cut
    low = DataFiltering(drop="present", presence_threshold=-1.0)
    with pytest.raises(AnatomyError, match="drop=present drops every pair"):
        low.plan(selection(block=[0, 1]), feats, None)


def test_concept_presence_is_the_mean_standardized_activation_of_the_features():
    chosen = np.array([[2.0, 0.0], [0.0, 0.0], [4.0, 6.0]])
    rejected = np.array([[0.0, 3.0], [2.0, 0.0], [0.0, 0.0]])
    c, r = concept_presence(make_features(chosen, rejected), [0, 1])
    scale = np.vstack([chosen, rejected]).std(axis=0)
    np.testing.assert_allclose(c, (chosen / scale).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(r, (rejected / scale).mean(axis=1), rtol=1e-6)
    zeros = concept_presence(make_features(chosen, rejected), [])
    assert all((z == 0).all() and len(z) == 3 for z in zeros)


def test_otsu_threshold_cuts_between_the_two_modes():
    rng = np.random.default_rng(1)
    low, high = rng.normal(0.0, 0.2, 300), rng.normal(3.0, 0.3, 100)
    cut = otsu_threshold(np.concatenate([high, low]))
    assert low.max() < cut < high.min()
    assert otsu_threshold(np.array([0.0, 0.0, 1.0, 1.0])) == 0.5  # between distinct values only
    with pytest.raises(AnatomyError, match="all equal"):
        otsu_threshold(np.ones(5))
    with pytest.raises(AnatomyError, match="drop must be"):
        DataFiltering(drop="everything")


def test_filtering_with_a_negative_threshold_is_an_error():
    with pytest.raises(AnatomyError, match="threshold"):
        DataFiltering(threshold=-0.1)


# -- data reweighting --------------------------------------------------------------------------


def _quantile_bins(d: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """The documented strata: quantile bins of |d| over the pairs with d != 0."""
    active = np.flatnonzero(d != 0)
    edges = np.quantile(np.abs(d[active]), np.linspace(0, 1, n_bins + 1)[1:-1])
    b = np.searchsorted(edges, np.abs(d[active]), side="right")
    return [active[b == k] for k in range(n_bins) if (b == k).any()]


def _imbalanced_d(n=400, seed=0):
    """A concept that favours chosen 3:1, more strongly when it does."""
    rng = np.random.default_rng(seed)
    sign = np.where(rng.random(n) < 0.75, 1.0, -1.0)
    d = sign * rng.exponential(np.where(sign > 0, 1.5, 0.7))
    d[:20] = 0.0  # pairs where the concept does not differ
    return d


@pytest.mark.parametrize("n_bins", [1, 4, 7])
def test_balance_equalizes_the_two_signs_within_each_bin(n_bins):
    d = _imbalanced_d()
    w = balance(d, n_bins)
    assert np.all(w > 0)
    bins = _quantile_bins(d, n_bins)
    assert all((d[g] > 0).any() and (d[g] < 0).any() for g in bins)  # no merging needed here
    for g in bins:
        pos, neg = g[d[g] > 0], g[d[g] < 0]
        assert w[pos].sum() == pytest.approx(w[neg].sum())
        assert w[g].sum() == pytest.approx(len(g))  # the bin keeps its total mass
    assert np.average(np.sign(d), weights=w) == pytest.approx(0.0, abs=1e-12)
    assert np.average(np.sign(d)) > 0.3  # it was not balanced before
    np.testing.assert_array_equal(w[d == 0], 1.0)


def test_balance_merges_a_bin_with_one_sign_into_its_neighbour():
    # the smallest |d| are all positive; in 4 bins the first bin holds one sign only
    d = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.5, -0.6, 0.7, -0.8, 1.0, -1.1, 1.2, 2.0, -2.1, 2.2, -2.3, 0.0])
    w = balance(d, 4)
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    assert w[d > 0].sum() == pytest.approx(w[d < 0].sum())
    assert w[d == 0] == pytest.approx(1.0)


def test_balance_without_an_active_pair_is_all_ones():
    np.testing.assert_array_equal(balance(np.zeros(5), 4), np.ones(5))


def test_balance_errors_when_the_concept_never_favours_one_side():
    with pytest.raises(AnatomyError, match="never favours rejected"):
        balance(np.array([0.5, 1.0, 0.0, 2.0, 3.0]), 2)
    with pytest.raises(AnatomyError, match="never favours chosen"):
        balance(-np.array([0.5, 1.0, 0.0, 2.0, 3.0]), 2)


def _reweight_features(seed=0):
    rng = np.random.default_rng(seed)
    n = 300
    blocked_c = rng.exponential(1.0, n) * (rng.random(n) < 0.7)
    blocked_r = rng.exponential(0.5, n) * (rng.random(n) < 0.3)
    blocked_r[:15] = blocked_c[:15]  # d = 0 on these pairs
    amp_c = rng.exponential(1.0, n) * (rng.random(n) < 0.3)
    amp_r = rng.exponential(1.0, n) * (rng.random(n) < 0.3)
    return make_features(np.stack([blocked_c, amp_c], 1), np.stack([blocked_r, amp_r], 1))


def test_reweighting_makes_the_blocked_concept_independent_of_the_preference():
    feats = _reweight_features()
    plan = DataReweighting(n_bins=4).plan(selection(block=[0]), feats, None)
    w = plan.weights
    d = concept_difference(feats, [0], {0: "chosen"})
    assert w.shape == (feats.chosen.shape[0],) and np.all(w > 0)
    assert w.mean() == pytest.approx(1.0)
    for g in _quantile_bins(d, 4):
        assert w[g][d[g] > 0].sum() == pytest.approx(w[g][d[g] < 0].sum())
    assert np.average(np.sign(d), weights=w) == pytest.approx(0.0, abs=1e-9)
    zero = d == 0
    assert zero.sum() >= 15 and np.ptp(w[zero]) == pytest.approx(0.0)  # d = 0 pairs: equal weight
    ess = w.sum() ** 2 / (w ** 2).sum()
    assert plan.report["intervention/effective_sample_size"] == pytest.approx(ess)
    assert plan.report["intervention/effective_sample_fraction"] == pytest.approx(ess / len(w))
    assert plan.report["intervention/n_dropped"] == 0.0
    assert plan.report["intervention/weight_min"] == pytest.approx(w.min())
    assert plan.report["intervention/weight_max"] == pytest.approx(w.max())
    assert ess < len(w)


def test_reweighting_multiplies_amplified_pairs_before_normalizing():
    feats = _reweight_features(seed=3)
    factor = 3.0
    plan = DataReweighting(n_bins=4, amplify_factor=factor).plan(selection(block=[0], amplify=[1]), feats, None)
    d_block = concept_difference(feats, [0], {0: "chosen"})
    d_amp = concept_difference(feats, [1], {1: "chosen"})
    expected = balance(d_block, 4) * np.where(d_amp > 0.5, factor, 1.0)
    expected /= expected.mean()
    np.testing.assert_allclose(plan.weights, expected, rtol=1e-12)
    assert plan.weights.mean() == pytest.approx(1.0)
    assert plan.report["intervention/n_amplified"] == (d_amp > 0.5).sum()
    # amplify only: the amplified pairs weigh `factor` times the others
    only = DataReweighting(amplify_factor=factor).plan(selection(amplify=[1]), feats, None).weights
    favoured = d_amp > 0.5
    assert 0 < favoured.sum() < len(only)
    assert np.unique(np.round(only[favoured], 12)).size == 1 and np.unique(np.round(only[~favoured], 12)).size == 1
    assert only[favoured][0] / only[~favoured][0] == pytest.approx(factor)


def test_reweighting_amplifies_the_pairs_the_concept_favours_not_its_noise():
    """An amplified concept's features differ a little between almost any two responses; in most pairs
    that lack the concept that noise favours chosen. Only the pairs it favours by more than
    `amplify_threshold` are upweighted, so the factor lands on the concept's pairs."""
    rng = np.random.default_rng(0)
    n, carries = 400, np.arange(400) < 80  # 80 pairs carry the concept in chosen
    chosen = np.where(carries, 3.0, 0.0) + rng.uniform(0.0, 0.3, n)  # noise on every response,
    rejected = rng.uniform(0.0, 0.2, n)  # a little more on chosen: it favours chosen in most other pairs
    feats = make_features(chosen[:, None], rejected[:, None])
    assert (concept_difference(feats, [0], {0: "chosen"})[~carries] > 0).mean() > 0.6
    plan = DataReweighting(amplify_factor=3.0).plan(selection(amplify=[0]), feats, None)
    assert plan.report["intervention/n_amplified"] == 80
    assert plan.weights[carries] == pytest.approx(np.full(80, 3 * plan.weights[~carries][0]))
    assert np.ptp(plan.weights[~carries]) == pytest.approx(0.0)
    with pytest.raises(AnatomyError, match="amplify_threshold 5.0 in no pair"):
        DataReweighting(amplify_threshold=5.0).plan(selection(amplify=[0]), feats, None)


def test_reweighting_errors():
    feats = _reweight_features()
    with pytest.raises(AnatomyError, match="select.block or select.amplify"):
        DataReweighting().plan(selection(), feats, None)
    always_chosen = make_features(np.array([[1.0], [2.0], [0.5], [3.0]]), np.zeros((4, 1)))
    with pytest.raises(AnatomyError, match="never favours rejected"):
        DataReweighting(n_bins=2).plan(selection(block=[0]), always_chosen, None)
    with pytest.raises(AnatomyError, match="n_bins"):
        DataReweighting(n_bins=0)
    with pytest.raises(AnatomyError, match="amplify_factor"):
        DataReweighting(amplify_factor=0.0)
    with pytest.raises(AnatomyError, match="amplify_threshold must be >= 0"):
        DataReweighting(amplify_threshold=-0.1)


def test_the_plan_is_made_on_the_pairs_the_trainer_keeps():
    # TRL drops the pairs that do not fit trainer.max_length. Planned on every pair, reweighting would
    # balance the blocked concept over pairs of which some are never trained on; planned on the pairs
    # that fit, the balance and the report hold for what is trained, and the others weigh 0.
    feats = _reweight_features()
    d = concept_difference(feats, [0], {0: "chosen"})
    fits = np.ones(len(d), dtype=bool)
    fits[np.flatnonzero(d < 0)[::2]] = False  # half the pairs where it favours rejected are too long
    reweighting = DataReweighting(n_bins=4)
    plan = plan_for(reweighting, selection(block=[0]), feats, None, fits)
    w = plan.weights
    assert w.shape == (len(d),) and np.all(w[~fits] == 0) and np.all(w[fits] > 0)
    kept = d[fits]  # (standardized over the kept pairs alone)
    d_kept = concept_difference(feats.of_pairs(fits), [0], {0: "chosen"})
    assert np.array_equal(np.sign(d_kept), np.sign(kept))
    np.testing.assert_allclose(w[fits], reweighting.plan(selection(block=[0]), feats.of_pairs(fits), None).weights)
    assert np.average(np.sign(d[fits]), weights=w[fits]) == pytest.approx(0.0, abs=1e-9)
    assert plan.report["intervention/n_pairs"] == fits.sum() and plan.report["intervention/n_dropped"] == 0
    # planned on every pair instead, the pairs trained on lean to the concept's side
    everyone = reweighting.plan(selection(block=[0]), feats, None).weights
    assert np.average(np.sign(d[fits]), weights=everyone[fits]) > 0.1
    # every pair fits: the intervention's own plan, unchanged (no weights where it has none)
    all_fit = np.ones(len(d), dtype=bool)
    np.testing.assert_array_equal(plan_for(reweighting, selection(block=[0]), feats, None, all_fit).weights,
                                  reweighting.plan(selection(block=[0]), feats, None).weights)
    assert plan_for(NoIntervention(), selection(), feats, None, all_fit).weights is None
    assert np.array_equal(plan_for(NoIntervention(), selection(), feats, None, fits).weights, fits.astype(float))


def test_features_of_some_pairs_keep_their_activations_lengths_and_tokens():
    n = 4
    feats = make_features(np.arange(8.0).reshape(n, 2), -np.arange(8.0).reshape(n, 2))
    feats.chosen_length, feats.rejected_length = np.array([1, 2, 3, 1]), np.array([2, 1, 1, 3])
    lengths = np.stack([feats.chosen_length, feats.rejected_length], axis=1).ravel()  # response 2i, 2i+1
    feats.offsets = np.concatenate([[0], np.cumsum(lengths)])
    feats.tokens = np.arange(feats.offsets[-1], dtype=np.int32) + 100
    keep = np.array([False, True, False, True])
    some = feats.of_pairs(keep)
    np.testing.assert_array_equal(some.chosen.toarray(), feats.chosen.toarray()[keep])
    np.testing.assert_array_equal(some.rejected.toarray(), feats.rejected.toarray()[keep])
    np.testing.assert_array_equal(some.chosen_length, [2, 1])
    for new, old in enumerate([2, 3, 6, 7]):  # pair 1's two responses, then pair 3's
        np.testing.assert_array_equal(some.tokens[some.offsets[new]:some.offsets[new + 1]],
                                      feats.tokens[feats.offsets[old]:feats.offsets[old + 1]])
    assert some.n_tokens == 2 + 1 + 1 + 3 and some.top_values.shape == (0, 2)


def test_weight_report_counts_only_kept_pairs():
    r = weight_report("x", np.array([0.0, 1.0, 2.0, 0.0, 1.0]))
    assert r["x/n_pairs"] == 5 and r["x/n_dropped"] == 2
    assert r["x/weight_min"] == 1.0 and r["x/weight_max"] == 2.0
    assert r["x/effective_sample_size"] == pytest.approx(16 / 6)
    assert r["x/effective_sample_fraction"] == pytest.approx(16 / 6 / 5)


def test_planted_balance_is_the_weighted_share_of_chosen_among_pairs_where_the_concept_differs():
    def pair(chosen, rejected):
        return PreferencePair("q", "a", "b", tuple(chosen), tuple(rejected))

    pairs = [pair(["md"], []), pair(["md"], []), pair(["md"], []), pair([], ["md"]),
             pair(["md"], ["md"]), pair([], []), pair(["syc"], ["syc"])]
    r = planted_balance(pairs, None)
    assert r["data/planted_chosen_share/md"] == 0.75 and r["data/planted_n_differ/md"] == 4
    assert r["intervention/planted_chosen_share/md"] == 0.75 and r["intervention/planted_differ_weight/md"] == 4
    assert r["data/planted_n_present/md"] == 5 and r["intervention/planted_present_weight/md"] == 5
    assert not any(k.endswith("/syc") for k in r)  # never on one side only: nothing to say
    # the one rejected-side pair weighs as much as the three chosen-side ones; the both-sides pair
    # and the dropped one do not count
    r = planted_balance(pairs, np.array([1.0, 1.0, 0.0, 2.0, 5.0, 1.0, 1.0]))
    assert r["data/planted_chosen_share/md"] == 0.75
    assert r["intervention/planted_chosen_share/md"] == 0.5 and r["intervention/planted_differ_weight/md"] == 4.0
    assert r["intervention/planted_present_weight/md"] == 9.0  # the both-sides pair counts here
    r = planted_balance(pairs, np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
    assert np.isnan(r["intervention/planted_chosen_share/md"]) and r["intervention/planted_differ_weight/md"] == 0
    assert planted_balance([PreferencePair("q", "a", "b")], None) == {}  # data without ground truth


def test_no_intervention_plan_changes_nothing():
    plan = NoIntervention().plan(selection(), None, None)
    assert plan.weights is None and plan.edits == {}


# -- feature ablation --------------------------------------------------------------------------


@pytest.fixture
def w_dec():
    torch.manual_seed(0)
    return torch.randn(12, 16)  # d_sae=12, d_model=16


def test_ablation_removes_exactly_the_span_of_the_blocked_directions(w_dec):
    sae = fake_sae(w_dec, "blocks.1.hook_resid_pre")
    plan = FeatureAblation().plan(selection(block=[2, 5, 7], amplify=[9]), None, sae)
    assert plan.weights is None and list(plan.edits) == ["blocks.1.hook_resid_pre"]
    assert plan.report["intervention/n_directions"] == 3.0
    edit = plan.edits["blocks.1.hook_resid_pre"]
    dirs = w_dec[[2, 5, 7]]
    x = torch.randn(4, 9, 16)
    out = edit(x)
    assert out.shape == x.shape
    assert torch.allclose(out @ dirs.T, torch.zeros(4, 9, 3), atol=1e-5)  # the concept is gone
    # what was removed lies in the span: the least-squares fit of x - out onto the directions is exact
    removed = (x - out).reshape(-1, 16)
    coef = torch.linalg.lstsq(dirs.T, removed.T).solution
    assert torch.allclose(dirs.T @ coef, removed.T, atol=1e-5)
    # components orthogonal to the span are unchanged; the amplified feature 9 is not ablated
    q, _ = torch.linalg.qr(dirs.T)
    y = torch.randn(5, 16)
    y = y - (y @ q) @ q.T
    assert torch.allclose(edit(y), y, atol=1e-5)
    assert torch.allclose(edit(out), out, atol=1e-5)  # idempotent: a projection


def test_ablation_keeps_the_activation_dtype(w_dec):
    plan = FeatureAblation().plan(selection(block=[1]), None, fake_sae(w_dec))
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    assert plan.edits["blocks.0.hook_resid_post"](x).dtype == torch.float64


def test_ablation_needs_blocked_features(w_dec):
    with pytest.raises(AnatomyError, match="select.block"):
        FeatureAblation().plan(selection(amplify=[1]), None, fake_sae(w_dec))


def test_ablation_of_linearly_dependent_directions_removes_only_their_span(w_dec):
    w = w_dec.clone()
    w[3] = w[2]  # two features with the same decoder direction: a 1-dimensional span
    edit = FeatureAblation().plan(selection(block=[2, 3]), None, fake_sae(w)).edits["blocks.0.hook_resid_post"]
    u = w[2] / w[2].norm()
    y = torch.randn(6, 16)
    y = y - (y @ u)[:, None] * u
    assert torch.allclose(edit(y), y, atol=1e-4)


def test_ablation_extra_hooks_apply_the_same_projection(w_dec):
    plan = FeatureAblation(extra_hooks=["blocks.1.hook_resid_post", "model.layers.0"]).plan(
        selection(block=[2, 5]), None, fake_sae(w_dec))
    assert sorted(plan.edits) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]  # the HF name is canonical
    assert plan.report["intervention/n_edits"] == 2.0
    y = torch.randn(3, 16)
    assert torch.equal(plan.edits["blocks.0.hook_resid_post"](y), plan.edits["blocks.1.hook_resid_post"](y))


def test_mixed_ablation_removes_one_direction_the_steering_direction(w_dec):
    n, d_sae = 6, 12
    chosen = np.zeros((n, d_sae))
    chosen[:, 4] = [2.0, 0.0, 1.0, 3.0, 0.0, 2.0]  # typical strength 2
    chosen[:, 6] = [0.5, 0.5, 0.0, 0.5, 0.5, 0.5]  # typical strength 0.5
    feats = make_features(chosen, chosen.copy())
    plan = FeatureAblation(mixed=True).plan(selection(block=[4, 6]), feats, fake_sae(w_dec))
    assert plan.report["intervention/n_directions"] == 1.0
    mix = 2.0 * w_dec[4] / w_dec[4].norm() + 0.5 * w_dec[6] / w_dec[6].norm()
    u = mix / mix.norm()
    x = torch.randn(3, 5, 16)
    out = plan.edits["blocks.0.hook_resid_post"](x)
    assert torch.allclose(out, x - (x @ u)[..., None] * u, atol=1e-5)  # exactly that direction goes
    steer = FeatureSteering(coefficient=1.0).plan(selection(block=[4, 6]), feats, fake_sae(w_dec))
    v = steer.edits["blocks.0.hook_resid_post"](torch.zeros(16))
    assert torch.allclose(v / v.norm(), u, atol=1e-5)  # the direction steering adds
    # the full-span ablation also removes each feature's own direction; the mixed one does not
    assert (out @ (w_dec[4] / w_dec[4].norm())).abs().max() > 1e-2


# -- feature steering --------------------------------------------------------------------------


def test_steering_adds_the_documented_vector(w_dec):
    # features active on both sides with equal strength in each active pair (typical strengths 2 and 0.5)
    n, d_sae = 6, 12
    chosen = np.zeros((n, d_sae))
    chosen[:, 4] = [2.0, 0.0, 1.0, 3.0, 0.0, 2.0]
    chosen[:, 6] = [0.5, 0.5, 0.0, 0.5, 0.5, 0.5]
    feats = make_features(chosen, chosen.copy())
    coefficient = 3.0
    plan = FeatureSteering(coefficient=coefficient).plan(selection(block=[4], amplify=[6]), feats, fake_sae(w_dec))
    u4, u6 = w_dec[4] / w_dec[4].norm(), w_dec[6] / w_dec[6].norm()
    mix = +1 * 2.0 * u4 - 1 * 0.5 * u6  # +1 blocked, -1 amplified, weighted by typical strength
    expected = coefficient * (2.0 + 0.5) / 2 * mix / mix.norm()  # size: coefficient x the mean strength
    edit = plan.edits["blocks.0.hook_resid_post"]
    x = torch.randn(2, 5, 16)
    assert torch.allclose(edit(x) - x, expected.expand_as(x), atol=1e-5)
    assert plan.report["intervention/steering_norm"] == pytest.approx(coefficient * 1.25, rel=1e-5)
    assert plan.report["intervention/typical_activation"] == pytest.approx(1.25)
    assert plan.report["intervention/n_directions"] == 2.0
    # the sign flips with the coefficient
    neg = FeatureSteering(coefficient=-coefficient).plan(selection(block=[4], amplify=[6]), feats, fake_sae(w_dec))
    assert torch.allclose(neg.edits["blocks.0.hook_resid_post"](x) - x, -expected.expand_as(x), atol=1e-5)


def test_steering_size_does_not_grow_with_the_number_of_features(w_dec):
    n, d_sae = 4, 12
    chosen = np.zeros((n, d_sae))
    chosen[:, :8] = 2.0  # eight features, each of typical strength 2
    feats = make_features(chosen, np.zeros((n, d_sae)))
    one = FeatureSteering(coefficient=1.5).plan(selection(block=[0]), feats, fake_sae(w_dec))
    eight = FeatureSteering(coefficient=1.5).plan(selection(block=list(range(8))), feats, fake_sae(w_dec))
    assert one.report["intervention/steering_norm"] == pytest.approx(3.0, rel=1e-5)
    assert eight.report["intervention/steering_norm"] == pytest.approx(3.0, rel=1e-5)


def test_steering_strength_is_the_mean_activation_when_active(w_dec):
    n, d_sae = 4, 12
    chosen, rejected = np.zeros((n, d_sae)), np.zeros((n, d_sae))
    chosen[:, 4] = [2.0, 2.0, 0.0, 0.0]  # active in 2 chosen responses, at 2.0, never in rejected
    plan = FeatureSteering(coefficient=1.0).plan(selection(block=[4]), make_features(chosen, rejected), fake_sae(w_dec))
    x = torch.zeros(1, 1, 16)
    expected = 2.0 * w_dec[4] / w_dec[4].norm()
    assert torch.allclose(plan.edits["blocks.0.hook_resid_post"](x)[0, 0], expected, atol=1e-5)


def test_steering_needs_a_selection(w_dec):
    feats = make_features(np.ones((3, 12)), np.ones((3, 12)))
    with pytest.raises(AnatomyError, match="select.block or select.amplify"):
        FeatureSteering().plan(selection(), feats, fake_sae(w_dec))


# -- hooks on a Hugging Face model -------------------------------------------------------------


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval()


def n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture
def ids():
    return torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
@pytest.mark.parametrize("point", ["blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "model.layers.0",
                                   "blocks.0.hook_attn_out", "blocks.1.hook_mlp_out"])
def test_hook_edit_changes_logits_and_is_removed(llama, ids, point):
    assert n_hooks(llama) == 0
    before = llama(input_ids=ids).logits
    seen = []

    def edit(act):
        seen.append(act.shape)
        return act + 5.0

    with hooks(llama, {point: edit}):
        assert n_hooks(llama) == 1
        during = llama(input_ids=ids).logits
    assert seen == [(2, 7, 32)]
    assert not torch.allclose(before, during, atol=1e-3)
    assert n_hooks(llama) == 0
    assert torch.equal(llama(input_ids=ids).logits, before)  # the model is back as it was


@torch.no_grad()
def test_resid_pre_of_layer_1_is_resid_post_of_layer_0(llama, ids):
    got = {}

    def grab(key):
        def fn(act):
            got[key] = act.clone()
        return fn

    with hooks(llama, {"blocks.0.hook_resid_post": grab("post0"), "blocks.1.hook_resid_pre": grab("pre1")}):
        llama(input_ids=ids)
    assert torch.equal(got["post0"], got["pre1"])
    # editing either point with the same function gives the same logits
    with hooks(llama, {"blocks.0.hook_resid_post": lambda a: a * 0.5}):
        a = llama(input_ids=ids).logits
    with hooks(llama, {"blocks.1.hook_resid_pre": lambda a: a * 0.5}):
        b = llama(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert n_hooks(llama) == 0


@torch.no_grad()
def test_hooks_are_removed_when_the_forward_raises(llama, ids):
    def boom(act):
        raise RuntimeError("edit failed")

    with pytest.raises(RuntimeError, match="edit failed"):
        with hooks(llama, {"blocks.0.hook_resid_post": lambda a: a + 1, "blocks.1.hook_resid_pre": boom}):
            assert n_hooks(llama) == 2
            llama(input_ids=ids)
    assert n_hooks(llama) == 0
    for module in llama.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_hooks_are_removed_when_a_later_hook_name_is_bad(llama):
    with pytest.raises(AnatomyError, match="layer 5 does not exist"):
        with hooks(llama, {"blocks.0.hook_resid_post": lambda a: a, "blocks.5.hook_resid_post": lambda a: a}):
            pass
    assert n_hooks(llama) == 0
    with pytest.raises(AnatomyError, match="unsupported hook point"):
        with hooks(llama, {"blocks.0.hook_mlp_out": lambda a: a, "blocks.0.hook_mlp_post": lambda a: a}):
            pass
    assert n_hooks(llama) == 0


def tiny_causal_lm(arch: str):
    import transformers

    torch.manual_seed(0)
    if arch == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2,
                                                                    n_positions=16)).eval()
    shape = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=16)
    if arch == "gemma2":  # normalizes each branch's output before adding it
        config = transformers.Gemma2Config(**shape, num_key_value_heads=2, head_dim=16)
        return transformers.Gemma2ForCausalLM(config).eval()
    if arch == "olmo2":  # the same, without Gemma's input norms
        return transformers.Olmo2ForCausalLM(transformers.Olmo2Config(**shape, num_key_value_heads=2)).eval()
    return transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**shape)).eval()


@torch.no_grad()
@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma2", "olmo2"])
def test_resid_post_is_resid_pre_plus_attn_out_plus_mlp_out(llama, ids, arch):
    """The attention and MLP outputs are what the layer adds to the stream, on five architectures."""
    model = llama if arch == "llama" else tiny_causal_lm(arch)
    got = {}

    def grab(key):
        def fn(act):
            got[key] = act.clone()
        return fn

    points = ["resid_pre", "attn_out", "mlp_out", "resid_post"]
    with hooks(model, {f"blocks.1.hook_{p}": grab(p) for p in points}):
        model(input_ids=ids)
    assert all(got[p].shape == (2, 7, 32) for p in points)
    assert torch.allclose(got["resid_pre"] + got["attn_out"] + got["mlp_out"], got["resid_post"], atol=1e-5)
    # zeroing the MLP's output leaves the stream as attention left it
    with hooks(model, {"blocks.1.hook_mlp_out": lambda a: a * 0, "blocks.1.hook_resid_post": grab("cut")}):
        model(input_ids=ids)
    assert torch.allclose(got["cut"], got["resid_pre"] + got["attn_out"], atol=1e-5)
    assert n_hooks(model) == 0


def test_a_layer_without_an_mlp_attribute_is_a_clear_error(llama):
    layer = llama.model.layers[0]
    mlp = layer.mlp
    try:
        del layer.mlp
        with pytest.raises(AnatomyError, match="has none of the attributes mlp, feed_forward, ffn"):
            with hooks(llama, {"blocks.1.hook_resid_post": lambda a: a, "blocks.0.hook_mlp_out": lambda a: a}):
                pass
    finally:
        layer.mlp = mlp
    assert n_hooks(llama) == 0


def test_hook_edits_carry_gradients(llama, ids):
    """An edit sits in the autograd graph, as training needs: here it scales layer 0's output."""
    scale = torch.tensor(1.0, requires_grad=True)
    with hooks(llama, {"blocks.0.hook_resid_post": lambda a: a * scale}):
        llama(input_ids=ids).logits.sum().backward()
    assert scale.grad is not None and scale.grad.abs() > 0
    llama.zero_grad(set_to_none=True)
    assert n_hooks(llama) == 0


# -- how large an edit is ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm():
    """A tiny random Llama with a byte-level BPE tokenizer, as `LoadedModel` hands them over."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["Question: which is a fruit?\nAnswer: the apple, surely"], vocab_size=300,
                            special_tokens=["<|endoftext|>", "<pad>"], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<pad>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2)).eval()
    return SimpleNamespace(model=model, tokenizer=tok)


def test_edit_energy_is_the_changed_share_of_the_activations_squared_norm_without_padding(lm, caplog):
    from anatomy.interventions.plan import edit_energy
    from anatomy.models.base import encode_batch
    from anatomy.models.hooks import capture

    pairs = [PreferencePair("Question: which is a fruit?\nAnswer:", " the apple", " a stone, surely, a stone"),
             PreferencePair("Q:", " apple" * 9, " no"), PreferencePair("Question:", " fruit", " which")]
    torch.manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(32, 8))

    def project(act):
        return act - (act @ basis) @ basis.T

    hook = "blocks.1.hook_resid_pre"
    with caplog.at_level(logging.WARNING):
        got = edit_energy(lm, {hook: project, "blocks.0.hook_resid_post": lambda a: a * 0.5}, pairs, batch_size=4)
    # by hand, one text at a time (no padding at all), over both sides of every pair
    changed = total = 0.0
    for pair in pairs:
        for side in (pair.chosen, pair.rejected):
            ids, mask, _, _ = encode_batch(lm.tokenizer, [(pair.prompt, side)], 256)
            act = capture(lm.model, hook, ids, mask)[0]
            changed += float(((act @ basis) @ basis.T).pow(2).sum())
            total += float(act.pow(2).sum())
    assert got[f"intervention/edit_energy/{hook}"] == pytest.approx(changed / total, rel=1e-4)
    assert 0.05 < changed / total < 0.95  # a projection changes part of it
    assert got["intervention/edit_energy/blocks.0.hook_resid_post"] == pytest.approx(0.25, rel=1e-5)  # (1 - 0.5)^2
    assert not caplog.records  # neither edit is large
    with caplog.at_level(logging.WARNING):
        got = edit_energy(lm, {hook: lambda a: a * 0, "blocks.0.hook_resid_post": lambda a: None}, pairs, n_pairs=2)
    assert got == {f"intervention/edit_energy/{hook}": pytest.approx(1.0), "intervention/edit_energy/blocks.0.hook_resid_post": 0.0}
    assert len(caplog.records) == 1 and "100% of the activations' energy" in caplog.text and hook in caplog.text


def test_a_token_that_yaml_reads_as_a_line_break_stays_in_its_comment(tmp_path):
    """U+2028, U+2029 and NEL are line breaks to YAML, not to a C0 filter: written escaped, the file
    parses and gives back the run's selection; the replication comment names the pairs it ran on."""
    from anatomy.evidence import show_token
    from anatomy.outputs import write_verdicts

    assert [show_token(t) for t in ("\u2028", "a\u2029b", "\x85", "\n", " ")] == ["\\u2028", "a\\u2029b", "\\x85", "\\n", "␣"]
    t = table().assign(q_value=[0.01, 0.001, 0.02, 0.5], replicated=[True, False, True, None])
    t.loc[0, "top_tokens"] = "a|\u2028|: 7: block"
    t.loc[1, "top_tokens"] = "\u20287: block"
    header = {"sae": "sae-key", "hook": "blocks.2.hook_resid_post", "sae_fingerprint": "0123456789",
              "replicated_on": "validation"}
    write_verdicts(tmp_path, t, header, {5: "block"})
    text = (tmp_path / "verdicts.yaml").read_text()
    assert "\u2028" not in text and "; replicated on validation" in text and "; NOT replicated on validation" in text
    assert Select(verdicts=str(tmp_path / "verdicts.yaml")).run(t).block == [5]  # and no verdict nobody wrote
