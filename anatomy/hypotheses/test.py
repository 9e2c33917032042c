"""`HypothesisTest`: per-feature paired tests of "this feature separates chosen from rejected".

The dataclass is the config that the Hydra YAML instantiates; `run` applies it
to the pooled SAE activations of a preference dataset:

    from anatomy.hypotheses import HypothesisTest
    table = HypothesisTest(test="wilcoxon", correction="bh").run(chosen, rejected)
    table[table.significant]
    replication = HypothesisTest().replication(table, heldout_chosen, heldout_rejected)

`chosen` and `rejected` are sparse (n_pairs, n_features), row i holding the two
responses of pair i.  All features are tested at once (see `stats`); the
multiple-testing family is the features that pass `min_frequency`.  `replication`
tests the significant hypotheses again on other pairs (the held-out split),
one-sided in the direction found, so what the audit found is checked on pairs it
was not found on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import stats
from .correction import METHODS, adjust

log = logging.getLogger(__name__)

TESTS = ("wilcoxon", "sign")


@dataclass
class HypothesisTest:
    """Paired tests of 'this feature separates chosen from rejected', for every feature at once."""

    test: str = "wilcoxon"  # primary paired test: "wilcoxon" or "sign"
    correction: str = "bh"  # multiple-testing control: bh | by | bonferroni | none
    alpha: float = 0.05  # significance level on the corrected q-values
    min_frequency: float = 0.01  # test only features active in at least this fraction of responses
    min_effect: float = 0.2  # significant also needs |effect| >= this (standardized effect d_z)
    control_length: bool = False  # regress the chosen-rejected length difference out of each feature
    replicate: bool = True  # test each significant hypothesis again on the held-out pairs (`replication`)

    def __post_init__(self):
        if self.test not in TESTS:
            raise ValueError(f"test must be one of {', '.join(TESTS)}; got {self.test!r}")
        if self.correction not in METHODS:
            raise ValueError(
                f"correction must be one of {', '.join(METHODS)}; got {self.correction!r}"
            )
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must satisfy 0 < alpha < 1; got {self.alpha!r}")
        if not 0 <= self.min_frequency < 1:
            raise ValueError(
                f"min_frequency must satisfy 0 <= min_frequency < 1; got {self.min_frequency!r}"
            )
        if not self.min_effect >= 0:
            raise ValueError(f"min_effect must be >= 0; got {self.min_effect!r}")

    def run(self, chosen, rejected, length_diff=None) -> pd.DataFrame:
        """One row per tested feature, sorted by p_value then feature.

        Columns: feature, direction, effect, auroc, mean_diff, p_value, q_value,
        significant, frequency, n_pos, n_neg, p_sign, p_wilcoxon, p_presence,
        presence_chosen, presence_rejected, and with control_length also
        effect_unadjusted, p_unadjusted.  `effect` is d_z, or with
        control_length the length-adjusted mean difference over the residual
        sd; `p_value` is the primary test's, or with control_length the
        length-adjusted t test's.  `length_diff` (n_pairs,) is the token length
        of chosen minus rejected, required when control_length is on.
        """
        if getattr(chosen, "shape", None) != getattr(rejected, "shape", None):
            raise ValueError(
                "chosen and rejected must have the same shape (n_pairs, n_features); got "
                f"{getattr(chosen, 'shape', None)} and {getattr(rejected, 'shape', None)}"
            )
        if len(chosen.shape) != 2 or chosen.shape[0] < 2:
            raise ValueError(
                f"need a 2-D (n_pairs, n_features) input with n_pairs >= 2; got {chosen.shape}"
            )
        if self.control_length and length_diff is None:
            raise ValueError("control_length is on but no length_diff was given")

        freq = stats.frequency(chosen, rejected)
        tested = np.flatnonzero(freq >= self.min_frequency)
        D = stats.paired_difference(chosen, rejected)
        if len(tested) < D.shape[1]:
            D = D[:, tested]
        b, c, p_presence = stats.presence_test(chosen, rejected)
        t = self._paired(D, length_diff)
        effect, p_value, eff = t["effect"], t["p_value"], t["eff"]
        q_value = adjust(p_value, self.correction)
        # The test's evidence must point the way the effect does: a mean pulled one way by a few large
        # differences while most pairs lean the other gets a small p for the other side.
        agrees = (np.sign(effect) == np.sign(t["statistic"])) & (effect != 0)
        passes = (q_value <= self.alpha) & (np.abs(effect) >= self.min_effect)
        if (passes & ~agrees).any():
            log.warning("hypotheses: %d features pass alpha and min_effect, but their %s test points the other way "
                        "from their effect (a few large differences against most pairs): not significant",
                        int((passes & ~agrees).sum()), self.test if not self.control_length else "length-adjusted")

        table = pd.DataFrame(
            {
                "feature": tested.astype(np.int64),
                "direction": np.where(effect > 0, "chosen", np.where(effect < 0, "rejected", "neither")),
                "effect": effect,
                "auroc": eff["auroc"],
                "mean_diff": eff["mean_diff"],
                "p_value": p_value,
                "q_value": q_value,
                "significant": passes & agrees,
                "frequency": freq[tested],
                "n_pos": t["n_pos"].astype(np.int64),
                "n_neg": t["n_neg"].astype(np.int64),
                "p_sign": t["p_sign"],
                "p_wilcoxon": t["p_wilcoxon"],
                "p_presence": p_presence[tested],
                "presence_chosen": b[tested].astype(np.int64),
                "presence_rejected": c[tested].astype(np.int64),
                **t["extra"],
            }
        )
        order = np.lexsort((table["feature"].to_numpy(), table["p_value"].to_numpy()))
        return table.iloc[order].reset_index(drop=True)

    def _paired(self, D, length_diff, side=None) -> dict:
        """Per column of the paired differences D: `effect` (d_z, or with control_length the
        length-adjusted one), `p_value` (the primary test's: two-sided, or with `side`, +1 / -1 per
        column, one-sided in that direction), and the statistics behind them."""
        n_pos, n_neg, p_sign = stats.sign_test(D, side)
        _, z, p_wilcoxon = stats.wilcoxon(D, side)
        eff = stats.effect_sizes(D)
        effect = eff["std_effect"]
        p_value, statistic = (p_wilcoxon, z) if self.test == "wilcoxon" else (p_sign, n_pos - n_neg)
        extra = {}
        if self.control_length:
            fit = stats._length_ols(D, length_diff, side)
            extra = {"effect_unadjusted": effect, "p_unadjusted": p_value}
            intercept, sigma = fit["intercept"], fit["sigma"]
            effect = np.divide(intercept, sigma, out=stats._infinite(intercept), where=sigma > 0)
            p_value, statistic = fit["p"], fit["t"]
        return {"effect": effect, "p_value": p_value, "statistic": statistic, "n_pos": n_pos, "n_neg": n_neg,
                "p_sign": p_sign, "p_wilcoxon": p_wilcoxon, "eff": eff, "extra": extra}

    def replication(self, table: pd.DataFrame, chosen, rejected, length_diff=None) -> pd.DataFrame:
        """The significant hypotheses of `table`, tested again on other pairs (`chosen` / `rejected`:
        the held-out split's pooled activations, the same features): the same test and effect there,
        one-sided in the direction the discovery found (fixed before these pairs were seen, so a
        reversal scores p near 1), the same correction over the significant hypotheses (the
        replication family), and `replicated`: q <= alpha there with the effect on the same side.
        min_effect is the discovery's screen and is not asked again. -> one row per significant
        hypothesis: feature, heldout_effect, heldout_p, heldout_q, replicated."""
        features = table.loc[table["significant"], "feature"].to_numpy(dtype=np.int64)
        columns = ["feature", "heldout_effect", "heldout_p", "heldout_q", "replicated"]
        if len(features) == 0:
            return pd.DataFrame({c: [] for c in columns})
        if chosen.shape[0] < 2:
            raise ValueError(f"replication needs at least 2 pairs; got {chosen.shape[0]}")
        if self.control_length and length_diff is None:
            raise ValueError("control_length is on but no length_diff was given")
        found = table.set_index("feature").loc[features, "effect"].to_numpy()
        D = stats.paired_difference(chosen[:, features], rejected[:, features])
        t = self._paired(D, length_diff, side=np.where(found > 0, 1.0, -1.0))
        effect, p_value = t["effect"], t["p_value"]
        q_value = adjust(p_value, self.correction)
        return pd.DataFrame({"feature": features, "heldout_effect": effect, "heldout_p": p_value,
                             "heldout_q": q_value,
                             "replicated": (q_value <= self.alpha) & (np.sign(effect) == np.sign(found))})
