"""The evaluation's pieces that need no model: the held-out yardstick where a concept cannot be a
shortcut, and the audit's per-concept prediction that the learned shifts are compared with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from anatomy.data.schema import PreferencePair
from anatomy.eval.evaluate import _same_concept, predictions


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
