"""Credit-risk metrics that can be pooled across banks without pooling rows.

A bank reports, for its validation rows, a histogram of predicted default
probabilities per class, sums for Brier score and log loss, and the confusion
counts at the decision threshold. Summed over banks these give the pooled
ROC AUC, KS, Brier, log loss, accuracy, precision, recall and F1 of the
federation as if all validation rows were in one place (AUC and KS up to the
histogram's bin width). Averaging per-bank AUCs would not: AUC is not additive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

EPS = 1e-7
# Keys of a bank's evaluate reply. All of them, always: Flower rejects a round whose replies differ.
COUNT_KEYS = ("num-examples", "num-bad", "tp", "fp", "tn", "fn")
SUM_KEYS = ("sum-brier", "sum-logloss", "sum-score")
HIST_KEYS = ("hist-bad", "hist-good")


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


def summarise(scores: np.ndarray, labels: np.ndarray, threshold: float, bins: int) -> dict[str, int | float | list[int]]:
    """One bank's shareable summary of its scores: counts, sums, histograms."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
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


def _auc_ks_from_hist(hist_bad: np.ndarray, hist_good: np.ndarray) -> tuple[float, float]:
    n_bad, n_good = hist_bad.sum(), hist_good.sum()
    if n_bad == 0 or n_good == 0:
        return math.nan, math.nan
    good_below = np.cumsum(hist_good) - hist_good
    # Pairs in the same bin count half, as ties do in the exact statistic.
    auc = float(np.sum(hist_bad * (good_below + 0.5 * hist_good)) / (n_bad * n_good))
    ks = float(np.max(np.abs(np.cumsum(hist_bad) / n_bad - np.cumsum(hist_good) / n_good)))
    return auc, ks


def pooled(summaries: Sequence[Mapping[str, int | float | list[int]]]) -> dict[str, float | int]:
    """Pooled metrics from summed bank summaries (never an average of bank metrics)."""
    if not summaries:
        raise ValueError("no evaluation summaries to pool")
    total = {k: sum(int(s[k]) for s in summaries) for k in COUNT_KEYS}
    sums = {k: sum(float(s[k]) for s in summaries) for k in SUM_KEYS}
    hist_bad = np.sum([np.asarray(s["hist-bad"], dtype=np.int64) for s in summaries], axis=0)
    hist_good = np.sum([np.asarray(s["hist-good"], dtype=np.int64) for s in summaries], axis=0)
    n = total["num-examples"]
    auc, ks = _auc_ks_from_hist(hist_bad, hist_good)
    return {
        "num-examples": n,
        "default-rate": _safe_div(total["num-bad"], n),
        "mean-pd": _safe_div(sums["sum-score"], n),
        "auc": auc,
        "gini": 2 * auc - 1,
        "ks": ks,
        "brier": _safe_div(sums["sum-brier"], n),
        "logloss": _safe_div(sums["sum-logloss"], n),
        **threshold_metrics(total["tp"], total["fp"], total["tn"], total["fn"]),
    }


def exact_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted half."""
    labels = np.asarray(labels).ravel().astype(bool)
    n_bad, n_good = int(labels.sum()), int((~labels).sum())
    if n_bad == 0 or n_good == 0:
        return math.nan
    ranks = pd.Series(np.asarray(scores, dtype=np.float64).ravel()).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - n_bad * (n_bad + 1) / 2) / (n_bad * n_good))


def exact_ks(scores: np.ndarray, labels: np.ndarray) -> float:
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.all() or not labels.any():
        return math.nan
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order]
    last_of_value = np.r_[s[1:] != s[:-1], True]
    cdf_bad = np.cumsum(y)[last_of_value] / y.sum()
    cdf_good = np.cumsum(~y)[last_of_value] / (~y).sum()
    return float(np.max(np.abs(cdf_bad - cdf_good)))


def exact(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | int]:
    """The same metrics as `pooled`, computed exactly from rows held in one place."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    p = np.clip(scores, EPS, 1 - EPS)
    pred = scores >= threshold
    auc = exact_auc(scores, labels)
    n = scores.size
    return {
        "num-examples": int(n),
        "default-rate": _safe_div(labels.sum(), n),
        "mean-pd": _safe_div(scores.sum(), n),
        "auc": auc,
        "gini": 2 * auc - 1,
        "ks": exact_ks(scores, labels),
        "brier": _safe_div(np.sum((scores - labels) ** 2), n),
        "logloss": _safe_div(-np.sum(labels * np.log(p) + (~labels) * np.log(1 - p)), n),
        **threshold_metrics(int(np.sum(pred & labels)), int(np.sum(pred & ~labels)),
                            int(np.sum(~pred & ~labels)), int(np.sum(~pred & labels))),
    }
