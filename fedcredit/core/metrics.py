"""Credit-risk metrics that can be pooled across banks without pooling rows.

A bank reports, for its validation rows, a histogram of predicted default
probabilities per class, sums for Brier score and log loss, and the confusion
counts at the decision threshold. Summed over banks these give the pooled
ROC AUC, KS, Brier, log loss, accuracy, precision, recall and F1 of the
federation as if all validation rows were in one place (AUC and KS up to the
histogram's bin width). Averaging per-bank AUCs would not: AUC is not additive.

One kernel (`roc_curve`, `auc_ks`) serves the pooled metrics, the exact ones
and the risk curves: a pooled histogram is just weighted scores (bin index,
weighted by its count), so both go through scikit-learn's ROC curve.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

EPS = 1e-7
# Keys of a bank's evaluate reply. All of them, always: Flower rejects a round whose replies differ.
COUNT_KEYS = ("num-examples", "num-bad", "tp", "fp", "tn", "fn")
SUM_KEYS = ("sum-brier", "sum-logloss", "sum-score")
HIST_KEYS = ("hist-bad", "hist-good")


def binary_arrays(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores as float64 and labels as bool (True = defaulted), flat and of equal length."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.size != labels.size:
        raise ValueError(f"{scores.size} scores but {labels.size} labels: pass one label per score")
    return scores, labels


def roc_curve(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, threshold) at every distinct score, riskiest first.

    A loan is flagged when its score is at or above the threshold; the first
    point (threshold +inf) flags nobody. scikit-learn's `roc_curve` with all
    points kept; rates of a class that is absent are NaN (no warning).
    """
    scores, labels = binary_arrays(scores, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return skm.roc_curve(labels, scores, sample_weight=weights, drop_intermediate=False)


def auc_ks(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """(ROC AUC with ties counted half, KS), optionally row-weighted; NaN when they are undefined.

    KS is the largest gap between the two classes' score distributions, i.e.
    max |tpr - fpr| over the ROC thresholds. NaN, not an exception, for one
    class or non-finite scores (a diverged model): a round's metrics must not fail.
    """
    scores, labels = binary_arrays(scores, labels)
    w = np.ones(scores.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if not (w[labels].sum() > 0 and w[~labels].sum() > 0 and np.isfinite(scores).all()):
        return math.nan, math.nan
    fpr, tpr, _ = roc_curve(scores, labels, weights)
    return float(skm.auc(fpr, tpr)), float(np.max(np.abs(tpr - fpr)))


def histogram_auc_ks(hist_bad: np.ndarray, hist_good: np.ndarray) -> tuple[float, float]:
    """`auc_ks` of binned scores: each bin index weighted by its count of bad and of good loans."""
    hist_bad, hist_good = np.asarray(hist_bad).ravel(), np.asarray(hist_good).ravel()
    bins = np.arange(hist_bad.size)
    return auc_ks(
        np.r_[bins, bins], np.r_[np.ones(bins.size, bool), np.zeros(bins.size, bool)], np.r_[hist_bad, hist_good]
    )


def auc_standard_error(auc: float, n_bad: int, n_good: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC from n_bad defaulted and n_good repaid loans.

    A bank's validation set holds a few dozen defaults: two models' AUCs on it
    differ by this much by chance alone. NaN when the AUC is undefined.
    """
    if not math.isfinite(auc) or n_bad < 1 or n_good < 1:
        return math.nan
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_bad - 1) * (q1 - auc * auc) + (n_good - 1) * (q2 - auc * auc)) / (n_bad * n_good)
    return math.sqrt(max(var, 0.0))


def delong(score_sets: Sequence[np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(AUCs, their covariance matrix) of models that scored the same loans; DeLong et al. (1988).

    Row-level, with midranks for ties (Sun and Xu, 2014): the reference the
    histogram version (`fedcredit.core.binned.delong_auc`) is checked against,
    and the paired comparison of two models on one hold-out set (their
    errors are correlated, which an unpaired test would ignore).
    """
    from scipy.stats import rankdata

    labels = np.asarray(labels).ravel().astype(bool)
    m, n = int(labels.sum()), int((~labels).sum())
    if m < 2 or n < 2:
        k = len(score_sets)
        return np.full(k, math.nan), np.full((k, k), math.nan)
    aucs, v10, v01 = [], [], []
    for scores in score_sets:
        scores = np.asarray(scores, dtype=np.float64).ravel()
        x, y = scores[labels], scores[~labels]
        tz = rankdata(np.r_[x, y])
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - rankdata(x)) / n)  # each default's share of repaid loans below it (ties half)
        v01.append(1 - (tz[m:] - rankdata(y)) / m)  # each repaid loan's share of defaults above it
    cov = np.atleast_2d(np.cov(np.array(v10))) / m + np.atleast_2d(np.cov(np.array(v01))) / n
    return np.array(aucs), cov


def exact_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of rows held in one place (Mann-Whitney, ties counted half); NaN for one class."""
    return auc_ks(scores, labels)[0]


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def threshold_metrics(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    return {
        "accuracy": _safe_div(tp + tn, tp + fp + tn + fn),
        "precision": precision,
        "recall": recall,
        "f1": _safe_div(2 * precision * recall, precision + recall),
    }


def summarise(
    scores: np.ndarray, labels: np.ndarray, threshold: float, bins: int
) -> dict[str, int | float | list[int]]:
    """One bank's shareable summary of its scores: counts, sums, histograms."""
    scores, labels = binary_arrays(scores, labels)
    p = np.clip(scores, EPS, 1 - EPS)
    pred = scores >= threshold
    edges = np.linspace(0.0, 1.0, bins + 1)
    hist_bad, _ = np.histogram(scores[labels], bins=edges)
    hist_good, _ = np.histogram(scores[~labels], bins=edges)
    return {
        "num-examples": int(scores.size),
        "num-bad": int(labels.sum()),
        "tp": int(np.sum(pred & labels)),
        "fp": int(np.sum(pred & ~labels)),
        "tn": int(np.sum(~pred & ~labels)),
        "fn": int(np.sum(~pred & labels)),
        "sum-brier": float(np.sum((scores - labels) ** 2)),
        "sum-logloss": float(-np.sum(labels * np.log(p) + (~labels) * np.log(1 - p))),
        "sum-score": float(scores.sum()),
        "hist-bad": [int(x) for x in hist_bad],
        "hist-good": [int(x) for x in hist_good],
    }


def group_histograms(scores: np.ndarray, labels: np.ndarray, index: np.ndarray, n_groups: int, bins: int) -> list[int]:
    """Per group (`index`: each row's group), the defaulted then the repaid loans' histogram, flat.

    Counts only: the coordinator learns how many validation loans of each
    group scored in each bin, never which loan is in which group.
    """
    scores, labels = binary_arrays(scores, labels)
    index = np.asarray(index, dtype=np.int64).ravel()
    if index.size != scores.size or (index.size and not 0 <= index.min() <= index.max() < n_groups):
        raise ValueError(f"{index.size} group indices in 0 .. {n_groups - 1} expected, one per score")
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = np.zeros((n_groups, 2, bins), dtype=np.int64)
    for g in range(n_groups):
        mine = index == g
        out[g, 0] = np.histogram(scores[mine & labels], bins=edges)[0]
        out[g, 1] = np.histogram(scores[mine & ~labels], bins=edges)[0]
    return [int(x) for x in out.ravel()]


def _report(totals: Mapping[str, int | float], auc: float, ks: float) -> dict[str, float | int]:
    """The metrics of summed counts and sums, with AUC and KS computed by the caller."""
    n = int(totals["num-examples"])
    return {
        "num-examples": n,
        "default-rate": _safe_div(totals["num-bad"], n),
        "mean-pd": _safe_div(totals["sum-score"], n),
        "auc": auc,
        "gini": 2 * auc - 1,
        "ks": ks,
        "brier": _safe_div(totals["sum-brier"], n),
        "logloss": _safe_div(totals["sum-logloss"], n),
        **threshold_metrics(*(int(totals[k]) for k in ("tp", "fp", "tn", "fn"))),
    }


def pooled(summaries: Sequence[Mapping[str, int | float | list[int]]]) -> dict[str, float | int]:
    """Pooled metrics from summed bank summaries (never an average of bank metrics)."""
    if not summaries:
        raise ValueError("no evaluation summaries to pool")
    sizes = {len(s[k]) for s in summaries for k in HIST_KEYS}
    if len(sizes) > 1:
        raise ValueError(
            f"bank summaries have histograms of {sorted(sizes)} bins: every bank must use the same "
            "histogram-bins in the run config"
        )
    totals: dict[str, int | float] = {k: sum(int(s[k]) for s in summaries) for k in COUNT_KEYS}
    totals.update({k: sum(float(s[k]) for s in summaries) for k in SUM_KEYS})
    hist_bad, hist_good = (np.sum([np.asarray(s[k], dtype=np.int64) for s in summaries], axis=0) for k in HIST_KEYS)
    return _report(totals, *histogram_auc_ks(hist_bad, hist_good))


def exact(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | int]:
    """The same metrics as `pooled`, from rows held in one place: AUC and KS exact, not binned."""
    return _report(summarise(scores, labels, threshold, bins=1), *auc_ks(scores, labels))


def bank_figures(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One bank's figures, all from its histograms and counts: never the AUC it merely states."""
    return pooled([summary])


def histogram_auc_bounds(hist_bad: np.ndarray, hist_good: np.ndarray) -> tuple[float, float]:
    """The interval in which the exact AUC of any scores with these histograms lies.

    Pairs of a bad and a good loan in different bins are ordered as their bins
    are; only pairs within one bin (counted half in the binned AUC) can go
    either way, so the exact AUC is the binned one give or take half their share.
    """
    bad, good = np.asarray(hist_bad, dtype=float).ravel(), np.asarray(hist_good, dtype=float).ravel()
    pairs = bad.sum() * good.sum()
    if not pairs:
        return math.nan, math.nan
    auc = histogram_auc_ks(bad, good)[0]
    ties = float((bad * good).sum() / pairs)
    return auc - ties / 2, auc + ties / 2
