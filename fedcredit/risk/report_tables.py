"""The figures of the model-risk report as plain data: no plotting, no HTML.

Small pure functions in the style of scikit-learn's `metrics`: each takes a
run's history, scores with labels, or a record the run wrote, and returns a
DataFrame, a dict or lists of rows, unformatted. The curve kernels
(reliability bins, gains, PSI) live in `fedcredit.risk.curves`; these put
them together the way the report's sections read them. `report_figures`
draws them and `report_html` writes them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedcredit.core import metrics
from fedcredit.federation.history import History, metric
from fedcredit.risk import curves as rm
from fedcredit.risk.baseline import METRICS, table_rows
from fedcredit.risk.rundir import Run

CALIBRATION_BINS = 10
CANDIDATES = ("global", "personalised", "local-only")  # the three models a bank compares when it personalises
PERSONALISATION_METRICS = ("auc", "ks", "brier")


@dataclass
class Scored:
    """The final model's scores of one set of loans with their labels."""

    scores: np.ndarray
    labels: np.ndarray


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


def has_holdout(run: Run) -> bool:
    return run.cfg.holdout_eval and any(e.holdout is not None for e in run.history.rounds)


@dataclass(frozen=True)
class HoldoutTables:
    """What the hold-out sections show of one set of scores."""

    metrics: dict[str, Any]  # `fedcredit.core.metrics.exact` at the decision threshold
    ece: float  # expected calibration error over `bins`
    bins: pd.DataFrame  # reliability bins (`curves.reliability_bins`)
    gains: pd.DataFrame  # gains and lift by decile (`curves.gains_table`)


def holdout_tables(data: Scored, threshold: float, n_bins: int = CALIBRATION_BINS) -> HoldoutTables:
    """Exact metrics, calibration and gains of the final model's hold-out scores."""
    return HoldoutTables(
        metrics=metrics.exact(data.scores, data.labels, threshold),
        ece=rm.expected_calibration_error(data.scores, data.labels, n_bins),
        bins=rm.reliability_bins(data.scores, data.labels, n_bins),
        gains=rm.gains_table(data.scores, data.labels),
    )


def psi_table(scored: dict[str, Scored]) -> pd.DataFrame:
    """Per bank: rows, default rate, mean PD, AUC and the PSI of its scores against all banks' scores pooled."""
    pooled = np.concatenate([s.scores for s in scored.values()])
    rows = [
        {
            "bank": name,
            "rows": s.scores.size,
            "default_rate": float(s.labels.mean()),
            "mean_pd": float(s.scores.mean()),
            "auc": metrics.exact_auc(s.scores, s.labels),
            "psi": rm.psi(pooled, s.scores),
        }
        for name, s in scored.items()
    ]
    table = pd.DataFrame(rows)
    table["reading"] = [rm.psi_reading(v) for v in table["psi"]]
    return table


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
