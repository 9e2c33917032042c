"""Per-feature hypothesis tests: does an SAE feature separate chosen from rejected responses?

    from anatomy.hypotheses import HypothesisTest
    table = HypothesisTest().run(chosen, rejected)   # one row per tested feature

`stats` holds the vectorized paired statistics, `correction` the multiple-testing control.
"""

from .test import HypothesisTest

__all__ = ["HypothesisTest"]
