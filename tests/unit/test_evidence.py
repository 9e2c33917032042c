"""Concept groups: significant features that read one concept, gathered to be decided together."""

from __future__ import annotations

import numpy as np
import pytest

from anatomy.errors import AnatomyError
from anatomy.evidence import Evidence, concept_groups
from anatomy.hypotheses.ground_truth import group_purity
from test_interventions import make_features


def planted(n: int = 400, seed: int = 0):
    """Six features over n pairs: 0-2 read concept A, 3-4 concept B (independent of A), 5 noise."""
    rng = np.random.default_rng(seed)
    a_c, a_r = rng.random(n) < 0.6, rng.random(n) < 0.2  # A in chosen / in rejected
    b_c, b_r = rng.random(n) < 0.5, rng.random(n) < 0.5
    def read(c, r, strength):  # a feature firing on the concept, with its own noise: (chosen, rejected) columns
        return (c * strength + rng.random(n) * 0.3)[:, None], (r * strength + rng.random(n) * 0.3)[:, None]
    columns = [read(a_c, a_r, s) for s in (3.0, 2.0, 1.0)] + [read(b_c, b_r, s) for s in (2.0, 1.5)]
    columns.append((rng.random((n, 1)), rng.random((n, 1))))
    chosen = np.hstack([c for c, _ in columns])
    rejected = np.hstack([r for _, r in columns])
    return make_features(chosen, rejected)


def test_features_reading_one_concept_form_one_group_numbered_by_strength():
    feats = planted()
    groups = concept_groups(feats, np.array([3, 0, 1, 2, 4, 5]), min_corr=0.5)  # given strongest first
    by_feature = dict(zip([3, 0, 1, 2, 4, 5], groups))
    assert by_feature[3] == 1  # the strongest hypothesis's group is group 1
    assert by_feature[0] == by_feature[1] == by_feature[2] == 2
    assert by_feature[4] == 1 and by_feature[5] == 3  # B's second feature joins B; noise stands alone
    # at a bar no two independent readings reach, every feature is its own group
    assert sorted(concept_groups(feats, np.arange(6), min_corr=1.0)) == [1, 2, 3, 4, 5, 6]


def test_a_feature_whose_difference_never_varies_stands_alone():
    feats = planted()
    chosen = feats.chosen.toarray()
    chosen[:, 5] = feats.rejected.toarray()[:, 5] + 1.0  # a constant difference: no correlation to compute
    feats = make_features(chosen, feats.rejected.toarray())
    groups = concept_groups(feats, np.arange(6), min_corr=0.5)
    assert list(groups).count(groups[5]) == 1
    assert list(concept_groups(feats, np.array([2]), 0.5)) == [1] and len(concept_groups(feats, np.array([], int), 0.5)) == 0


def test_only_the_strongest_are_grouped_beyond_the_cap(caplog):
    groups = concept_groups(planted(), np.array([3, 0, 1, 2, 4, 5]), min_corr=0.5, max_features=4)
    assert list(groups) == [1, 2, 2, 2]  # 3, then A's three; 4 and 5 are left ungrouped
    assert "6 significant hypotheses; only the 4 strongest" in caplog.text


def test_group_corr_must_be_a_correlation_bar():
    Evidence(group_corr=None)  # no groups
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(AnatomyError, match="evidence.group_corr must be in"):
            Evidence(group_corr=bad)


def test_group_purity_is_the_share_of_named_features_whose_group_names_their_concept():
    named = ["markdown", "markdown", "sycophancy", None, "sycophancy", "markdown"]
    groups = [1, 1, 1, 1, 2, 2]  # group 1 mostly markdown; group 2 a tie, decided by its first member
    assert group_purity(named, groups) == pytest.approx(3 / 5)
    assert np.isnan(group_purity([None, None], [1, 2]))
    assert group_purity(["markdown", "sycophancy", "markdown"], [1, float("nan"), 1]) == 1.0  # ungrouped: left out


def test_top_tokens_gives_at_most_n_and_none_for_zero():
    from anatomy.evidence import top_tokens

    feats = make_features(np.array([[3.0], [2.0], [1.0]]), np.array([[2.5], [0.5], [0.0]]))

    class Tokenizer:
        def decode(self, ids):
            return f"<{ids[0]}>"

    feats.top_where = np.array([[0], [1], [2], [-1]])
    feats.tokens = np.array([12, 3, 7])
    assert top_tokens(feats, np.array([0]), Tokenizer(), 2) == [["<12>", "<3>"]]
    assert top_tokens(feats, np.array([0]), Tokenizer(), 0) == [[]]


def test_each_feature_is_read_at_the_token_it_fired_on_and_the_snippet_marks_it(monkeypatch):
    """Token alignment, from featurize to the snippet a person reads. Activations are the one-hot of
    the token ids and the SAE is the identity, so feature f fires exactly where token f sits in a
    response: its top occurrences must point at token f, its pooled value must be 1 in exactly the
    responses holding f (not in their prompts), and its snippets must mark f. Responses of many
    lengths, in batches of 2 pairs, so featurize's sort by length reorders them."""
    import random
    from types import SimpleNamespace

    import torch
    import torch.nn.functional as F

    from anatomy import features as features_module
    from anatomy.data.schema import PreferencePair
    from anatomy.evidence import snippets
    from anatomy.features import Featurize, featurize
    from anatomy.models.tiny import train_tokenizer

    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    text = lambda n: " " + " ".join(rng.choice(words) for _ in range(n))  # noqa: E731
    pairs = [PreferencePair(f"Q{i}:" + text(rng.randint(1, 6)), text(rng.randint(1, 12)), text(rng.randint(1, 12)))
             for i in range(15)]
    tok = train_tokenizer([(p.prompt, p.chosen + p.rejected) for p in pairs], vocab_size=300)
    vocab = len(tok)
    monkeypatch.setattr(features_module, "capture", lambda model, hook, ids, mask: F.one_hot(ids, vocab).float())
    sae = SimpleNamespace(sae=SimpleNamespace(encode=lambda x: x, dtype=torch.float32), d_sae=vocab, hook="h")
    model = SimpleNamespace(tokenizer=tok, model=SimpleNamespace(device=torch.device("cpu")))
    feats = featurize(model, sae, pairs, Featurize(batch_size=2, max_length=64, top_examples=4))

    responses = [r for p in pairs for r in (p.chosen, p.rejected)]
    for r, response in enumerate(responses):  # the response's own tokens, in pair order
        ids = feats.tokens[feats.offsets[r]:feats.offsets[r + 1]]
        assert ids.tolist() == tok(response, add_special_tokens=False)["input_ids"]
        pooled = (feats.rejected if r % 2 else feats.chosen)[r // 2].toarray().ravel()
        assert set(np.flatnonzero(pooled)) == set(ids.tolist()) and set(pooled[pooled > 0]) == {1.0}
    fired = 0
    for f in range(vocab):
        where = feats.top_where[:, f]
        assert np.all(feats.tokens[where[where >= 0]] == f)  # every top occurrence is token f itself
        fired += int((where >= 0).any())
        for s in snippets(feats, f, tok, n=3, context=4):
            assert "[[" + tok.decode([f]) + "]]" in s["text"]
            pair = pairs[s["pair"]]
            response = pair.chosen if s["side"] == "chosen" else pair.rejected
            assert f in tok(response, add_special_tokens=False)["input_ids"]
    assert fired >= 30  # (most of the words occur in some response)
