"""anatomy.hypotheses: vectorized statistics against scipy's per-feature references."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats as sps

from anatomy.hypotheses import HypothesisTest
from anatomy.hypotheses import stats
from anatomy.hypotheses.correction import METHODS, adjust


def _activations(n, f, density, seed, rounded=True):
    """Sparse non-negative activations; rounding to 1 decimal makes plenty of ties."""
    rng = np.random.default_rng(seed)
    X = sp.random_array((n, f), density=density, rng=rng, dtype=np.float32,
                        data_sampler=lambda size: rng.exponential(1.0, size))
    X = X.tocsr()
    if rounded:
        X.data = np.round(X.data, 1) + 0.1  # ties, still > 0
    return X


@pytest.fixture(scope="module")
def pair():
    n, f = 60, 40
    chosen, rejected = _activations(n, f, 0.3, 1), _activations(n, f, 0.3, 2)
    chosen, rejected = chosen.tolil(), rejected.tolil()
    chosen[:, 5] = 0  # an all-zero column
    rejected[:, 5] = 0
    rejected[:, 7] = chosen[:, 7].toarray()  # identical column: no nonzero difference
    chosen, rejected = sp.csr_matrix(chosen), rejected.tocsr()  # both sparse flavours work
    dense_d = chosen.toarray().astype(np.float64) - rejected.toarray().astype(np.float64)
    return chosen, rejected, dense_d


def test_sign_and_wilcoxon_match_scipy(pair, monkeypatch):
    """The normal approximation (every column here has fewer than 50 nonzero differences, so the
    exact null is turned off to check it; see the next test for the exact one)."""
    monkeypatch.setattr(stats, "_EXACT_MAX", 0)
    chosen, rejected, d = pair
    D = stats.paired_difference(chosen, rejected)
    n_pos, n_neg, p_sign = stats.sign_test(D)
    w_plus, z, p_w = stats.wilcoxon(D)
    for j in range(d.shape[1]):
        nz = d[:, j][d[:, j] != 0]
        assert n_pos[j] == (nz > 0).sum() and n_neg[j] == (nz < 0).sum()
        if nz.size == 0:
            assert p_sign[j] == 1 and p_w[j] == 1 and z[j] == 0
            continue
        ref = sps.binomtest(int(n_pos[j]), nz.size, 0.5).pvalue
        assert p_sign[j] == pytest.approx(ref, rel=1e-10, abs=1e-12)
        res = sps.wilcoxon(nz, zero_method="wilcox", correction=False, method="approx")
        assert p_w[j] == pytest.approx(res.pvalue, abs=1e-8)
        ranks = sps.rankdata(np.abs(nz))
        assert w_plus[j] == pytest.approx(ranks[nz > 0].sum())
        assert np.sign(z[j]) == np.sign(w_plus[j] - nz.size * (nz.size + 1) / 4)


def test_wilcoxon_is_exact_for_few_nonzero_differences(monkeypatch):
    """Up to 50 nonzero differences, the p is the exact permutation null's: scipy's method="exact"
    without ties, a count over every sign vector with ties; two- and one-sided, in one matrix
    ranked in several chunks."""
    import itertools

    rng = np.random.default_rng(7)
    untied = [rng.normal(0.4, 1, n) for n in (1, 2, 4, 9, 20, 50)]
    tied = [np.where(d == 0, 1.0, d) for d in (np.round(rng.normal(0.5, 1.5, n)) for n in (3, 6, 11))]
    columns = untied + tied + [rng.normal(0.2, 1, 51)]  # the last: beyond 50, the normal approximation
    n = max(len(c) for c in columns) + 5
    dense = np.zeros((n, len(columns)))
    for j, c in enumerate(columns):
        dense[rng.permutation(n)[: len(c)], j] = c  # with zeros, which the test drops
    D = stats.paired_difference(sp.csr_array(np.maximum(dense, 0)), sp.csr_array(np.maximum(-dense, 0)))
    monkeypatch.setattr(stats, "_CHUNK_NNZ", 40)
    for side, alternative in ((None, "two-sided"), (1.0, "greater"), (-1.0, "less")):
        _, _, p = stats.wilcoxon(D, None if side is None else np.full(len(columns), side))
        for j, c in enumerate(untied):
            assert p[j] == pytest.approx(sps.wilcoxon(c, method="exact", alternative=alternative).pvalue, rel=1e-9)
        for j, c in enumerate(tied, start=len(untied)):
            ranks = sps.rankdata(np.abs(c))
            w = ranks[c > 0].sum()
            sums = np.array([ranks[np.array(signs, bool)].sum() for signs in itertools.product((0, 1), repeat=len(c))])
            upper, lower = (sums >= w - 1e-9).mean(), (sums <= w + 1e-9).mean()
            assert p[j] == pytest.approx({1.0: upper, -1.0: lower}.get(side, min(1.0, 2 * min(upper, lower))))
        approx = sps.wilcoxon(columns[-1], correction=False, method="approx", alternative=alternative).pvalue
        assert p[-1] == pytest.approx(approx, abs=1e-8)
    # the approximation this replaces is anti-conservative here: 4 of 4 the same way
    assert stats.wilcoxon(sp.csc_array(np.ones((4, 1))), np.ones(1))[2][0] == pytest.approx(1 / 16)


def test_one_sided_tests_match_scipy(pair, monkeypatch):
    """With `side` (+1 / -1 per feature) the tests are one-sided in that direction, as scipy's
    alternative="greater" / "less"; a side that is not +1 or -1 is an error."""
    monkeypatch.setattr(stats, "_EXACT_MAX", 0)  # the normal approximation (the exact null: above)
    chosen, rejected, d = pair
    D = stats.paired_difference(chosen, rejected)
    side = np.where(np.arange(d.shape[1]) % 2 == 0, 1.0, -1.0)
    rng = np.random.default_rng(4)
    length = rng.integers(-50, 80, size=len(d)).astype(float)
    _, _, p_sign = stats.sign_test(D, side)
    _, _, p_w = stats.wilcoxon(D, side)
    _, t, p_len = stats.length_adjusted(D, length, side)
    checked = 0
    for j in range(d.shape[1]):
        alternative = "greater" if side[j] > 0 else "less"
        nz = d[:, j][d[:, j] != 0]
        if nz.size == 0:
            assert p_sign[j] == 1 and p_w[j] == 1 and p_len[j] == 1
            continue
        ref = sps.binomtest(int((nz > 0).sum()), nz.size, 0.5, alternative=alternative).pvalue
        assert p_sign[j] == pytest.approx(ref, rel=1e-10, abs=1e-12)
        res = sps.wilcoxon(nz, zero_method="wilcox", correction=False, method="approx", alternative=alternative)
        assert p_w[j] == pytest.approx(res.pvalue, abs=1e-8)
        ols = sps.linregress(length, d[:, j])  # the intercept's t test, one-sided
        t_ref = ols.intercept / ols.intercept_stderr
        assert t[j] == pytest.approx(t_ref, rel=1e-6)
        assert p_len[j] == pytest.approx(sps.t.sf(side[j] * t_ref, len(d) - 2), rel=1e-6, abs=1e-12)
        checked += 1
    assert checked >= 4
    with pytest.raises(ValueError, match="side must be"):
        stats.wilcoxon(D, np.zeros(d.shape[1]))


def test_wilcoxon_chunking_is_invisible(pair, monkeypatch):
    chosen, rejected, _ = pair
    D = stats.paired_difference(chosen, rejected)
    whole = stats.wilcoxon(D)
    monkeypatch.setattr(stats, "_CHUNK_NNZ", 7)
    for a, b in zip(whole, stats.wilcoxon(D)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_presence_effects_frequency_match_dense(pair):
    chosen, rejected, d = pair
    C, R = chosen.toarray() > 0, rejected.toarray() > 0
    b, c, p = stats.presence_test(chosen, rejected)
    np.testing.assert_array_equal(b, (C & ~R).sum(0))
    np.testing.assert_array_equal(c, (~C & R).sum(0))
    for j in range(d.shape[1]):
        ref = sps.binomtest(int(b[j]), int(b[j] + c[j]), 0.5).pvalue if b[j] + c[j] else 1.0
        assert p[j] == pytest.approx(ref, rel=1e-10)
    freq = (C.sum(0) + R.sum(0)) / (2 * len(d))
    np.testing.assert_allclose(stats.frequency(chosen, rejected), freq)

    eff = stats.effect_sizes(stats.paired_difference(chosen, rejected))
    np.testing.assert_allclose(eff["mean_diff"], d.mean(0), atol=1e-12)
    np.testing.assert_allclose(eff["std_diff"], d.std(0, ddof=1), atol=1e-12)
    sd = d.std(0, ddof=1)
    d_z = np.divide(d.mean(0), sd, out=np.zeros(d.shape[1]), where=sd > 0)
    np.testing.assert_allclose(eff["std_effect"], d_z, atol=1e-12)
    # every pair differs by the same amount: an infinite d_z on its side (0 only with no difference)
    same = stats.effect_sizes(sp.csc_array(np.array([[1.0, -2.0, 0.0]] * 5)))["std_effect"]
    assert same.tolist() == [np.inf, -np.inf, 0.0]
    np.testing.assert_allclose(eff["auroc"], ((d > 0).sum(0) + 0.5 * (d == 0).sum(0)) / len(d))


def test_length_adjusted_matches_lstsq(pair):
    chosen, rejected, d = pair
    rng = np.random.default_rng(3)
    length = rng.integers(-50, 80, size=len(d)).astype(float)
    effect, t, p = stats.length_adjusted(stats.paired_difference(chosen, rejected), length)
    X = np.column_stack([np.ones(len(d)), length])
    n = len(d)
    for j in range(d.shape[1]):
        coef, rss, *_ = np.linalg.lstsq(X, d[:, j], rcond=None)
        assert effect[j] == pytest.approx(coef[0], abs=1e-10)
        if not d[:, j].any():
            assert t[j] == 0 and p[j] == 1
            continue
        se = np.sqrt(rss[0] / (n - 2) * np.linalg.inv(X.T @ X)[0, 0])
        assert t[j] == pytest.approx(coef[0] / se, rel=1e-8)
        assert p[j] == pytest.approx(2 * sps.t.sf(abs(coef[0] / se), n - 2), rel=1e-6, abs=1e-12)
    with pytest.raises(ValueError, match="zero variance"):
        stats.length_adjusted(stats.paired_difference(chosen, rejected), np.full(n, 4.0))


@pytest.mark.parametrize("method", ["bh", "by"])
def test_fdr_matches_scipy(method):
    p = np.random.default_rng(0).uniform(size=500) ** 3
    p[:20] = p[20]  # ties
    np.testing.assert_allclose(adjust(p, method), sps.false_discovery_control(p, method=method))


def test_bonferroni_none_and_errors():
    p = np.array([0.01, 0.5, 0.001])
    np.testing.assert_allclose(adjust(p, "bonferroni"), [0.03, 1.0, 0.003])
    np.testing.assert_array_equal(adjust(p, "none"), p)
    assert adjust(np.array([]), "bh").size == 0
    with pytest.raises(ValueError, match="bh, by, bonferroni, none"):
        adjust(p, "holm")
    assert METHODS == ("bh", "by", "bonferroni", "none")


def test_planted_feature_found_with_direction():
    n, f = 400, 30
    chosen, rejected = _activations(n, f, 0.2, 10), _activations(n, f, 0.2, 11)
    chosen, rejected = chosen.tolil(), rejected.tolil()
    rng = np.random.default_rng(12)
    chosen[:, 3] = rng.exponential(2.0, (n, 1)) + 0.5  # higher in chosen
    rejected[:, 3] = rng.exponential(1.0, (n, 1))
    rejected[:, 8] = rng.exponential(2.0, (n, 1)) + 0.5  # higher in rejected
    chosen[:, 8] = rng.exponential(1.0, (n, 1))
    for test in ("wilcoxon", "sign"):
        table = HypothesisTest(test=test).run(chosen.tocsr(), rejected.tocsr())
        sig = table[table.significant].set_index("feature")
        assert set(sig.index) == {3, 8}
        assert sig.loc[3, "direction"] == "chosen" and sig.loc[8, "direction"] == "rejected"
        assert table.feature.iloc[:2].tolist() in ([3, 8], [8, 3])
        assert sig.loc[3, "auroc"] > 0.5 > sig.loc[8, "auroc"]


def test_null_gives_few_discoveries():
    for seed in range(4):
        chosen = _activations(300, 300, 0.05, 100 + seed, rounded=False)
        rejected = _activations(300, 300, 0.05, 200 + seed, rounded=False)
        table = HypothesisTest(min_effect=0.0).run(chosen, rejected)
        assert table.significant.sum() <= 3
        assert len(table) > 250


def test_table_layout_and_filtering(pair):
    chosen, rejected, d = pair
    table = HypothesisTest(min_frequency=0.0).run(chosen, rejected)
    assert list(table.columns) == [
        "feature", "direction", "effect", "auroc", "mean_diff", "p_value", "q_value",
        "significant", "frequency", "n_pos", "n_neg", "p_sign", "p_wilcoxon", "p_presence",
        "presence_chosen", "presence_rejected",
    ]
    assert len(table) == d.shape[1]
    assert (np.diff(table.p_value) >= 0).all()
    freq = stats.frequency(chosen, rejected)
    filtered = HypothesisTest(min_frequency=0.25).run(chosen, rejected)
    assert set(filtered.feature) == set(np.flatnonzero(freq >= 0.25)) and len(filtered) < len(table)


def test_length_control_removes_pure_length_confound():
    rng = np.random.default_rng(5)
    n = 500
    len_c = rng.integers(50, 400, n).astype(float)
    len_r = len_c - rng.normal(40, 60, n)  # chosen tends to be longer
    length_diff = len_c - len_r
    base_c, base_r = _activations(n, 20, 0.2, 6), _activations(n, 20, 0.2, 7)
    chosen, rejected = base_c.tolil(), base_r.tolil()
    chosen[:, 0] = (0.01 * len_c + rng.exponential(0.3, n))[:, None]
    rejected[:, 0] = (0.01 * len_r + rng.exponential(0.3, n))[:, None]
    chosen, rejected = chosen.tocsr(), rejected.tocsr()
    plain = HypothesisTest().run(chosen, rejected).set_index("feature")
    adjusted = HypothesisTest(control_length=True).run(chosen, rejected, length_diff)
    assert list(adjusted.columns[-2:]) == ["effect_unadjusted", "p_unadjusted"]
    adjusted = adjusted.set_index("feature")
    assert plain.loc[0, "significant"] and plain.loc[0, "direction"] == "chosen"
    assert not adjusted.loc[0, "significant"] and adjusted.loc[0, "p_value"] > 0.01
    assert adjusted.loc[0, "effect_unadjusted"] == pytest.approx(plain.loc[0, "effect"])
    with pytest.raises(ValueError, match="length_diff"):
        HypothesisTest(control_length=True).run(chosen, rejected)


@pytest.mark.parametrize(
    "kwargs, field",
    [({"test": "t"}, "test"), ({"correction": "holm"}, "correction"), ({"alpha": 0}, "alpha"),
     ({"alpha": 1.5}, "alpha"), ({"min_frequency": 1.0}, "min_frequency"),
     ({"min_frequency": -0.1}, "min_frequency"), ({"min_effect": -1}, "min_effect")],
)
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        HypothesisTest(**kwargs)


def test_run_input_errors():
    a = _activations(10, 5, 0.5, 0)
    with pytest.raises(ValueError, match="same shape"):
        HypothesisTest().run(a, _activations(10, 6, 0.5, 1))
    with pytest.raises(ValueError, match="n_pairs >= 2"):
        HypothesisTest().run(a[:1], a[:1])


def test_nan_activations_are_an_error():
    a, b = _activations(10, 5, 0.5, 0), _activations(10, 5, 0.5, 1)
    a.data[0] = np.nan
    with pytest.raises(ValueError, match=r"1 activations are NaN or infinite \(features \[\d\]\)"):
        HypothesisTest().run(a, b)


def test_the_test_must_point_the_way_the_effect_does(caplog):
    """A feature slightly lower in chosen in most pairs but much higher in a few has a positive mean
    (d_z) and a signed-rank test that favours rejected: not significant either way, and said."""
    n = 400
    rng = np.random.default_rng(1)
    rejected = np.column_stack([rng.exponential(1.0, n) + 1.0, rng.exponential(1.0, n)])
    chosen = rejected.copy()
    few = np.arange(n) < 60
    chosen[~few, 0] -= 0.1  # 340 pairs lean to rejected by a little
    chosen[few, 0] += 3.0  # 60 pairs lean to chosen by a lot
    chosen[:, 1] += 1.0  # a plain finding, and a perfect one: every pair differs by the same amount
    for test in ("wilcoxon", "sign"):
        with caplog.at_level("WARNING"):
            table = HypothesisTest(test=test).run(sp.csr_array(chosen), sp.csr_array(rejected)).set_index("feature")
        assert table.loc[0, "effect"] > 0.2 and table.loc[0, "q_value"] < 1e-10 and not table.loc[0, "significant"]
        assert "1 features pass alpha and min_effect, but their" in caplog.text
        assert table.loc[1, "effect"] == np.inf and table.loc[1, "direction"] == "chosen"
        assert table.loc[1, "significant"]
        caplog.clear()


def test_length_control_of_an_exact_fit():
    """A feature whose difference is exactly a + b * length: infinite t on its side, p = 0."""
    length = np.arange(12.0) - 4
    d = np.column_stack([0.5 + 0.1 * length, -0.5 + 0.1 * length, np.zeros(12)])
    D = stats.paired_difference(sp.csr_array(np.maximum(d, 0)), sp.csr_array(np.maximum(-d, 0)))
    effect, t, p = stats.length_adjusted(D, length)
    assert effect[:2] == pytest.approx([0.5, -0.5]) and t.tolist() == [np.inf, -np.inf, 0.0]
    assert p.tolist() == [0.0, 0.0, 1.0]
    assert stats.length_adjusted(D, length, side=np.array([1.0, 1.0, 1.0]))[2].tolist() == [0.0, 1.0, 1.0]


def _planted(n, seed, flip_8=False):
    """30 null features, feature 3 higher in chosen and feature 8 higher in rejected (or, with
    flip_8, in chosen: a finding that reverses on other pairs)."""
    chosen, rejected = _activations(n, 30, 0.2, seed).tolil(), _activations(n, 30, 0.2, seed + 1).tolil()
    rng = np.random.default_rng(seed + 2)
    chosen[:, 3] = rng.exponential(2.0, (n, 1)) + 0.5
    rejected[:, 3] = rng.exponential(1.0, (n, 1))
    high, low = rng.exponential(2.0, (n, 1)) + 0.5, rng.exponential(1.0, (n, 1))
    rejected[:, 8], chosen[:, 8] = (low, high) if flip_8 else (high, low)
    return chosen.tocsr(), rejected.tocsr()


def test_replication_tests_the_significant_hypotheses_again_on_other_pairs():
    test = HypothesisTest()
    table = test.run(*_planted(400, 10))
    assert set(table.loc[table.significant, "feature"]) == {3, 8}
    again = test.replication(table, *_planted(200, 20)).set_index("feature")
    assert set(again.index) == {3, 8}  # only the significant ones
    assert again["replicated"].all()
    assert again.loc[3, "heldout_effect"] > 0 > again.loc[8, "heldout_effect"]
    # the held-out numbers are the same test's on the other pairs, one-sided in the direction found
    # (half the two-sided p, as the held-out effect is on that side), corrected over the significant family
    other = test.run(*_planted(200, 20)).set_index("feature")
    assert again.loc[3, "heldout_p"] == pytest.approx(other.loc[3, "p_value"] / 2)
    assert again.loc[8, "heldout_p"] == pytest.approx(other.loc[8, "p_value"] / 2)
    assert again["heldout_q"].tolist() == pytest.approx(adjust(again["heldout_p"].to_numpy(), "bh").tolist())

    # on pairs where feature 8 favours the other side it is not replicated: its one-sided p is near 1,
    # although the two-sided test there is highly significant
    held = _planted(200, 20, flip_8=True)
    flipped = test.replication(table, *held).set_index("feature")
    assert test.run(*held).set_index("feature").loc[8, "p_value"] < 1e-6
    assert flipped.loc[8, "heldout_p"] > 0.99 and not flipped.loc[8, "replicated"] and flipped.loc[3, "replicated"]

    # on pairs with nothing planted, nothing replicates
    null = test.replication(table, _activations(200, 30, 0.2, 30), _activations(200, 30, 0.2, 31))
    assert not null["replicated"].any()


def test_replication_with_length_control_and_with_nothing_significant():
    test = HypothesisTest(control_length=True)
    rng = np.random.default_rng(60)
    chosen, rejected = _planted(300, 40)
    table = test.run(chosen, rejected, rng.normal(0, 10, 300))  # lengths unrelated to the features
    held_c, held_r = _planted(150, 50)
    held_length = rng.normal(0, 10, 150)
    again = test.replication(table, held_c, held_r, held_length)
    assert again["replicated"].all() and len(again) == table.significant.sum() > 0
    with pytest.raises(ValueError, match="length_diff"):
        test.replication(table, held_c, held_r)
    empty = test.replication(table.assign(significant=False), held_c, held_r, held_length)
    assert empty.empty and list(empty.columns) == ["feature", "heldout_effect", "heldout_p", "heldout_q", "replicated"]
