"""How model-best.keras is chosen: the highest pooled validation AUC, unless one bank's figures alone decide it."""

from __future__ import annotations

import numpy as np

from fedcredit.core import metrics
from fedcredit.federation.history import PhaseRecord, RoundEntry
from fedcredit.federation.rounds import best_round, leave_one_out_auc


def _round(number: int, pooled: float, loo: dict[str, float]) -> RoundEntry:
    return RoundEntry(
        number,
        train=PhaseRecord(),
        evaluate=PhaseRecord(pooled={"auc": pooled}, leave_one_out_auc=loo),
    )


def test_the_highest_pooled_auc_wins_when_every_leave_one_out_pool_agrees():
    rounds = [
        _round(1, 0.70, {"a": 0.69, "b": 0.71, "c": 0.70}),
        _round(2, 0.74, {"a": 0.73, "b": 0.75, "c": 0.74}),
        _round(3, 0.72, {"a": 0.71, "b": 0.73, "c": 0.72}),
    ]
    assert best_round(rounds) == 2


def test_a_round_that_one_banks_figures_alone_make_best_gives_way_to_the_latest():
    # Without bank "h" round 3 is best; with it round 1: h's figures alone would decide.
    rounds = [
        _round(1, 0.80, {"h": 0.70, "b": 0.82, "c": 0.81}),
        _round(2, 0.74, {"h": 0.73, "b": 0.75, "c": 0.74}),
        _round(3, 0.75, {"h": 0.76, "b": 0.74, "c": 0.75}),
        _round(4, 0.74, {"h": 0.75, "b": 0.73, "c": 0.74}),
    ]
    assert best_round(rounds) == 4


def test_ties_go_to_the_earlier_round_and_round_zero_and_unevaluated_rounds_never_count():
    rounds = [
        RoundEntry(0, evaluate=PhaseRecord(pooled={"auc": 0.99})),
        _round(1, 0.72, {}),
        _round(2, 0.72, {}),
        RoundEntry(3, train=PhaseRecord()),
    ]
    assert best_round(rounds) == 1
    assert best_round([RoundEntry(0)]) is None


def test_leave_one_out_pools_the_other_banks_summaries():
    def summary(bad: list[int], good: list[int]) -> dict:
        n, b = sum(bad) + sum(good), sum(bad)
        return {
            "num-examples": n, "num-bad": b, "tp": 0, "fp": 0, "tn": n - b, "fn": b,
            "sum-brier": 0.0, "sum-logloss": 0.0, "sum-score": 0.0, "hist-bad": bad, "hist-good": good,
        }  # fmt: skip

    perfect, useless = summary([0, 0, 5], [5, 0, 0]), summary([2, 2, 2], [2, 2, 2])
    loo = leave_one_out_auc({"p": perfect, "u": useless})
    assert loo == {"p": 0.5, "u": 1.0}
    assert leave_one_out_auc({"p": perfect}) == {}


def test_leave_one_out_equals_pooling_the_other_banks_afresh():
    rng = np.random.default_rng(0)

    def summary() -> dict:
        bad, good = rng.integers(0, 6, size=10).tolist(), rng.integers(0, 40, size=10).tolist()
        n, b = sum(bad) + sum(good), sum(bad)
        return {
            "num-examples": n, "num-bad": b, "tp": 0, "fp": 0, "tn": n - b, "fn": b,
            "sum-brier": 0.0, "sum-logloss": 0.0, "sum-score": 0.0, "hist-bad": bad, "hist-good": good,
        }  # fmt: skip

    summaries = {f"bank-{i}": summary() for i in range(25)}
    expected = {b: metrics.pooled([s for o, s in summaries.items() if o != b])["auc"] for b in summaries}
    assert leave_one_out_auc(summaries) == expected
