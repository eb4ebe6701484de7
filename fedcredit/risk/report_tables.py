"""The figures of the model-risk report as plain data: no plotting, no HTML.

Small pure functions in the style of scikit-learn's `metrics`: each takes a
run's history or a record the run wrote, and returns a DataFrame or lists
of rows, unformatted. The validation pack's figures are `fedcredit.risk.pack`.
`report_figures` draws them and `report_html` writes them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from fedcredit.federation.history import History, metric
from fedcredit.risk.baseline import METRICS, table_rows

CANDIDATES = ("global", "personalised", "local-only")  # the three models a bank compares when it personalises
PERSONALISATION_METRICS = ("auc", "ks", "brier")


def _num(value: float | None) -> float:
    return math.nan if value is None else value


def rounds_table(history: History) -> pd.DataFrame:
    """One row per trained round: pooled validation and hold-out figures, banks trained, failures, seconds."""
    rows = []
    for entry in history.trained_rounds:
        rows.append(
            {
                "round": entry.round,
                "val_auc": _num(metric(entry.pooled, "auc")),
                "val_ks": _num(metric(entry.pooled, "ks")),
                "val_logloss": _num(metric(entry.pooled, "logloss")),
                "holdout_auc": _num(metric(entry.holdout, "auc")),
                "holdout_logloss": _num(metric(entry.holdout, "logloss")),
                "trained": len(entry.train.ok) if entry.train is not None else 0,
                "failed": ", ".join(f"{b}: {r}" for b, r in entry.failures.items()),
                "seconds": _num(entry.seconds),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "round",
            "val_auc",
            "val_ks",
            "val_logloss",
            "holdout_auc",
            "holdout_logloss",
            "trained",
            "failed",
            "seconds",
        ],
    )


def bank_auc_table(history: History) -> pd.DataFrame:
    """Rounds x banks: each bank's validation AUC (NaN where the bank did not report one)."""
    data: dict[str, dict[int, float]] = {}
    for entry in history.rounds:
        for bank, m in entry.bank_metrics.items():
            data.setdefault(bank, {})[entry.round] = _num(metric(m, "auc"))
    return pd.DataFrame(data).sort_index()


def baseline_rows(result: dict[str, Any]) -> list[list[Any]]:
    """`baseline.json` as rows: model, training rows, then each of `baseline.METRICS` (None where absent).

    Raises KeyError, TypeError or AttributeError when the record lacks a part or has the wrong shape.
    """
    return [[name, n, *[m.get(k) for k in METRICS]] for name, n, m in table_rows(result)]


@dataclass(frozen=True)
class PersonalisationRows:
    """The personalisation record as rows (figures None where the bank did not report them)."""

    validation: list[list[Any]]  # bank, kept, then AUC, KS, Brier of each candidate (metric-major)
    holdout: list[list[Any]]  # bank, kept, hold-out AUC of each candidate: banks with hold-out figures only
    pooled: list[list[Any]]  # models, AUC, KS, Brier of the pooled validation summaries


def personalisation_rows(record: dict[str, Any]) -> PersonalisationRows:
    banks = record.get("banks") or {}
    validation = []
    for bank, r in banks.items():
        val = r.get("validation", {})
        validation.append(
            [bank, r.get("kept"), *(val.get(c, {}).get(m) for m in PERSONALISATION_METRICS for c in CANDIDATES)]
        )
    holdout = [
        [bank, r.get("kept"), *(r["holdout"].get(c, {}).get("auc") for c in CANDIDATES)]
        for bank, r in banks.items()
        if r.get("holdout")
    ]
    pooled = [
        [name, *(m.get(k) for k in PERSONALISATION_METRICS)]
        for name, m in (record.get("pooled-validation") or {}).items()
    ]
    return PersonalisationRows(validation, holdout, pooled)
