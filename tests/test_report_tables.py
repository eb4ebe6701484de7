"""The report's figures as plain data (`fedcredit.risk.report_tables`), from hand-made records."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from fedcredit.federation.history import History, PhaseRecord, RoundEntry
from fedcredit.risk import report_tables as rt

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
