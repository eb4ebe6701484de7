"""The report's figures as plain data (`fedcredit.risk.report_tables`), from hand-made records."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedcredit.core import metrics
from fedcredit.core.config import RunConfig
from fedcredit.federation.history import History, PhaseRecord, RoundEntry
from fedcredit.risk import curves as rm
from fedcredit.risk import report_tables as rt
from fedcredit.risk.rundir import Run

ROOT = Path(__file__).resolve().parents[1]


def _history() -> History:
    """Round 0 (hold-out only), a round with a training failure and an evaluation refusal, one never evaluated."""
    return History(
        rounds=[
            RoundEntry(0, holdout={"auc": 0.5, "logloss": 0.7}),
            RoundEntry(
                1,
                holdout={"auc": 0.61, "logloss": 0.3},
                train=PhaseRecord(ok=["a", "b"], failed={"c": "out of memory"}),
                evaluate=PhaseRecord(
                    ok=["a"],
                    refused={"b": "wrong length"},
                    pooled={"auc": 0.6, "ks": 0.2, "logloss": 0.25},
                    banks={"a": {"auc": 0.58}, "b": {"auc": float("nan")}},
                ),
                seconds=2.5,
            ),
            RoundEntry(2, train=PhaseRecord(ok=["a"]), evaluate=PhaseRecord(banks={"c": {"auc": 0.7}})),
        ]
    )


def test_rounds_table_has_one_row_per_trained_round():
    t = rt.rounds_table(_history())
    assert list(t["round"]) == [1, 2]  # round 0 is the initial model, not a trained round
    first, second = t.iloc[0], t.iloc[1]
    assert (first["val_auc"], first["val_ks"], first["val_logloss"]) == (0.6, 0.2, 0.25)
    assert (first["holdout_auc"], first["holdout_logloss"], first["seconds"]) == (0.61, 0.3, 2.5)
    assert first["trained"] == 2 and first["failed"] == "c: out of memory, b: wrong length"
    assert second["trained"] == 1 and second["failed"] == ""
    assert all(math.isnan(second[k]) for k in ("val_auc", "val_ks", "holdout_auc", "seconds"))


def test_rounds_table_of_a_run_without_rounds_is_empty_with_its_columns():
    t = rt.rounds_table(History(rounds=[RoundEntry(0)]))
    assert t.empty and list(t.columns)[:3] == ["round", "val_auc", "val_ks"] and "failed" in t.columns


def test_bank_auc_table_is_rounds_by_banks_with_nan_where_not_reported():
    t = rt.bank_auc_table(_history())
    assert list(t.index) == [1, 2] and sorted(t.columns) == ["a", "b", "c"]
    assert t.loc[1, "a"] == 0.58 and t.loc[2, "c"] == 0.7
    assert math.isnan(t.loc[1, "b"]) and math.isnan(t.loc[2, "a"]) and math.isnan(t.loc[1, "c"])
    assert rt.bank_auc_table(History()).empty


@pytest.mark.parametrize(
    "holdout_eval,rounds,expected",
    [
        (True, [RoundEntry(0, holdout={"auc": 0.5})], True),
        (True, [RoundEntry(0), RoundEntry(1)], False),  # asked for, never computed
        (False, [RoundEntry(0, holdout={"auc": 0.5})], False),
    ],
)
def test_has_holdout(holdout_eval, rounds, expected):
    run = Run(Path("run"), {}, RunConfig(holdout_eval=holdout_eval), History(rounds=rounds))
    assert rt.has_holdout(run) is expected


def _scored(seed: int, n: int = 2000, shift: float = 0.0) -> rt.Scored:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.1
    scores = 1 / (1 + np.exp(-(rng.normal(-2.5 + shift, 1.0, n) + 1.5 * labels)))
    return rt.Scored(scores, labels)


def test_holdout_tables_are_the_curves_kernels_at_the_threshold():
    data = _scored(0)
    t = rt.holdout_tables(data, 0.2)
    assert t.metrics == metrics.exact(data.scores, data.labels, 0.2)
    assert t.ece == rm.expected_calibration_error(data.scores, data.labels, rt.CALIBRATION_BINS)
    assert len(t.bins) == rt.CALIBRATION_BINS and t.bins["count"].sum() == data.scores.size
    assert len(t.gains) == 10 and t.gains["bads"].sum() == data.labels.sum()
    assert rt.holdout_tables(data, 0.2, n_bins=4).bins.shape[0] == 4


def test_psi_table_reads_each_bank_against_all_banks_pooled():
    same, moved = _scored(1), _scored(2, n=200, shift=2.0)
    t = rt.psi_table({"a": same, "b": rt.Scored(same.scores.copy(), same.labels.copy()), "moved": moved})
    assert list(t["bank"]) == ["a", "b", "moved"]
    a = t.iloc[0]
    assert a["rows"] == same.scores.size and a["default_rate"] == pytest.approx(same.labels.mean())
    assert a["mean_pd"] == pytest.approx(same.scores.mean())
    assert a["auc"] == metrics.exact_auc(same.scores, same.labels)
    pooled = np.concatenate([same.scores, same.scores, moved.scores])
    assert list(t["psi"]) == [rm.psi(pooled, s) for s in (same.scores, same.scores, moved.scores)]
    assert t.loc[0, "psi"] < rm.PSI_STABLE < rm.PSI_UNSTABLE < t.loc[2, "psi"]
    assert list(t["reading"]) == ["stable", "stable", "unstable: investigate"]


def _baseline() -> dict:
    m = {"auc": 0.7, "gini": 0.4, "ks": 0.3, "brier": 0.05, "logloss": 0.2}
    return {
        "federated": {"training-rows": 10, **m},
        "pooled": {"training-rows": 10, **m, "auc": 0.75},
        "bank-alone": {"banks": {"x": {"training-rows": 4, "auc": 0.6}}, "mean": m, "worst": m},
    }


def test_baseline_rows_in_display_order_with_none_where_a_metric_is_absent():
    rows = rt.baseline_rows(_baseline())
    assert [r[0] for r in rows] == [
        "federated (final model)",
        "pooled (all banks' rows)",
        "bank alone: x",
        "bank alone: mean",
        "bank alone: worst",
    ]
    assert rows[1] == ["pooled (all banks' rows)", "10", 0.75, 0.4, 0.3, 0.05, 0.2]
    assert rows[2] == ["bank alone: x", "4", 0.6, None, None, None, None]
    assert rows[3][1] == ""


@pytest.mark.parametrize(
    "broken,error",
    [
        ({"pooled": None}, TypeError),
        ({"bank-alone": {}}, KeyError),
        ({"bank-alone": {"banks": {}, "mean": [0.7], "worst": {}}}, AttributeError),  # a metric entry no mapping
    ],
)
def test_baseline_rows_of_a_malformed_record_raise(broken, error):
    with pytest.raises(error):
        rt.baseline_rows({**_baseline(), **broken})


def test_personalisation_rows():
    fig = {"auc": 0.6, "ks": 0.3, "brier": 0.1}
    record = {
        "banks": {
            "a": {
                "kept": "personalised",
                "validation": {"global": fig, "personalised": {"auc": 0.7}, "local-only": {"ks": 0.2}},
                "holdout": {"global": {"auc": 0.55}, "local-only": {"auc": 0.5}},
            },
            "b": {"kept": "global"},
        },
        "pooled-validation": {"kept": fig},
    }
    t = rt.personalisation_rows(record)
    # metric-major: AUC of global, personalised, local-only, then KS of each, then Brier of each
    assert t.validation == [
        ["a", "personalised", 0.6, 0.7, None, 0.3, None, 0.2, 0.1, None, None],
        ["b", "global", *[None] * 9],
    ]
    assert t.holdout == [["a", "personalised", 0.55, None, 0.5]]  # only banks with hold-out figures
    assert t.pooled == [["kept", 0.6, 0.3, 0.1]]
    assert rt.personalisation_rows({"secure": True}) == rt.PersonalisationRows([], [], [])


def test_tables_and_html_import_neither_matplotlib_nor_tensorflow():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import fedcredit.risk.report_tables, fedcredit.risk.report_sections, fedcredit.risk.report_html\n"
        "print([m for m in ('matplotlib', 'tensorflow', 'keras') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-2] == "[]", result.stdout
