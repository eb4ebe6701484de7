"""Model-risk metrics of one set of scores held in one place (hold-out set, a bank's rows).

Curves and tables a model-risk reviewer reads besides AUC: ROC and KS curves,
reliability bins and expected calibration error (is a PD of 8 % really 8 %?),
gains and lift by score decile (how many defaults the riskiest tenth
catches) and the population stability index (has a bank's score
distribution moved away from the pooled one?). Labels are 1 for a defaulted
loan; scores are probabilities of default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcredit.core import binned as bn
from fedcredit.core import metrics

# The PSI floor and readings are the binned figures' (one definition for scores and features).
PSI_FLOOR, PSI_STABLE, PSI_UNSTABLE, psi_reading = bn.PSI_FLOOR, bn.PSI_STABLE, bn.PSI_UNSTABLE, bn.psi_reading


# The ROC kernel shared with the pooled and exact metrics (re-exported: the report plots it).
roc_curve = metrics.roc_curve


@dataclass(frozen=True)
class KSCurve:
    """Cumulative share of bad and of good loans scoring at or below each threshold."""

    thresholds: np.ndarray
    cdf_bad: np.ndarray
    cdf_good: np.ndarray
    ks: float  # the largest gap between the two
    at: float  # the threshold where it occurs


def ks_curve(scores: np.ndarray, labels: np.ndarray) -> KSCurve:
    """The KS curves, read off the ROC curve: loans at or below a score are those the next higher one does not flag."""
    fpr, tpr, thresholds = roc_curve(scores, labels)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        raise ValueError("KS needs both defaulted and repaid loans")
    gap = np.abs(tpr - fpr)[-2::-1]  # the same gaps as metrics.auc_ks, lowest score first
    i = int(np.argmax(gap >= gap.max() - 1e-12))  # equal gaps (up to rounding): the lowest threshold
    return KSCurve(thresholds[:0:-1], 1 - tpr[-2::-1], 1 - fpr[-2::-1], float(gap[i]), float(thresholds[-1 - i]))


def _bin_ids(scores: np.ndarray, n_bins: int, strategy: str) -> tuple[np.ndarray, np.ndarray]:
    """(bin of each score, edges); scikit-learn's `calibration_curve` binning."""
    if strategy == "quantile":
        edges = np.percentile(scores, np.linspace(0, 100, n_bins + 1))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    return np.searchsorted(edges[1:-1], scores), edges


def _wilson(bads: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95 % Wilson interval of a default rate: honest for the few defaults a bin holds."""
    p = bads / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def reliability_bins(
    scores: np.ndarray, labels: np.ndarray, n_bins: int = 10, strategy: str = "quantile"
) -> pd.DataFrame:
    """Mean predicted PD against observed default rate per score bin (empty bins left out).

    Quantile bins (equal counts) by default: a credit model's PDs crowd
    below 0.2, where equal-width bins would leave most bins empty.
    """
    scores, labels = metrics.binary_arrays(scores, labels)
    ids, edges = _bin_ids(scores, n_bins, strategy)
    count = np.bincount(ids, minlength=n_bins)
    sum_pd = np.bincount(ids, weights=scores, minlength=n_bins)
    bads = np.bincount(ids, weights=labels.astype(np.float64), minlength=n_bins)
    keep = count > 0
    low, high = _wilson(bads[keep], count[keep])
    return pd.DataFrame(
        {
            "bin": np.arange(1, n_bins + 1)[keep],
            "lower": edges[:-1][keep],
            "upper": edges[1:][keep],
            "count": count[keep],
            "bads": bads[keep].astype(np.int64),
            "mean_pd": sum_pd[keep] / count[keep],
            "default_rate": bads[keep] / count[keep],
            "default_rate_low95": low,
            "default_rate_high95": high,
        }
    )


def expected_calibration_error(
    scores: np.ndarray, labels: np.ndarray, n_bins: int = 10, strategy: str = "quantile"
) -> float:
    """Row-weighted mean gap between predicted PD and observed default rate over the bins."""
    bins = reliability_bins(scores, labels, n_bins, strategy)
    weights = bins["count"] / bins["count"].sum()
    return float(np.sum(weights * np.abs(bins["mean_pd"] - bins["default_rate"])))


def decile_edges(reference: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Inner edges of the reference scores' quantile bins (ties merge bins, so maybe fewer)."""
    reference = np.asarray(reference, dtype=np.float64).ravel()
    if reference.size == 0:
        raise ValueError("no reference scores to cut into bins")
    return np.unique(np.percentile(reference, np.linspace(0, 100, n_bins + 1))[1:-1])


def bin_shares(scores: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """Share of scores in each bin (a score on an edge belongs to the lower bin)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("no scores to bin")
    return np.bincount(np.searchsorted(inner_edges, scores), minlength=inner_edges.size + 1) / scores.size


def psi(reference: np.ndarray, actual: np.ndarray, n_bins: int = 10) -> float:
    """Population stability index of `actual` against `reference`, on the reference's decile bins.

    PSI = sum over bins of (a - r) * ln(a / r) with a, r the bin shares
    (floored at PSI_FLOOR so an empty bin does not make it infinite).
    """
    edges = decile_edges(reference, n_bins)
    r = np.maximum(bin_shares(reference, edges), PSI_FLOOR)
    a = np.maximum(bin_shares(actual, edges), PSI_FLOOR)
    return float(np.sum((a - r) * np.log(a / r)))


def gains_table(scores: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Gains and lift by score decile, riskiest decile first.

    Rows are ranked by score (ties in input order) and cut into `n_bins`
    groups of equal size (sizes differ by at most one). `capture` is the
    cumulative share of all defaults caught by flagging down to this decile;
    `lift` is the decile's default rate over the overall one.
    """
    scores, labels = metrics.binary_arrays(scores, labels)
    n, n_bad = scores.size, int(labels.sum())
    if n < n_bins:
        raise ValueError(f"{n} rows cannot be cut into {n_bins} deciles")
    if n_bad == 0 or n_bad == n:
        raise ValueError("gains need both defaulted and repaid loans")
    rows = []
    for i, idx in enumerate(np.array_split(np.argsort(-scores, kind="stable"), n_bins), start=1):
        rows.append(
            {
                "decile": i,
                "rows": idx.size,
                "min_pd": scores[idx].min(),
                "max_pd": scores[idx].max(),
                "mean_pd": scores[idx].mean(),
                "bads": int(labels[idx].sum()),
            }
        )
    t = pd.DataFrame(rows)
    t["default_rate"] = t["bads"] / t["rows"]
    cum_rows, cum_bads = t["rows"].cumsum(), t["bads"].cumsum()
    cum_goods = cum_rows - cum_bads
    t["cum_population"] = cum_rows / n
    t["capture"] = cum_bads / n_bad
    t["cum_goods"] = cum_goods / (n - n_bad)
    t["ks"] = t["capture"] - t["cum_goods"]
    overall = n_bad / n
    t["lift"] = t["default_rate"] / overall
    t["cum_lift"] = (cum_bads / cum_rows) / overall
    return t
