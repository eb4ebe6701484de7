"""Pooled metrics from bank summaries against scikit-learn on all rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from fedcredit.core import metrics


def _banks(seed: int, n_banks: int = 4):
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n_banks):
        n = int(rng.integers(200, 900))
        y = rng.random(n) < 0.06 + 0.02 * b
        # Skewed scores in (0, 1) that concentrate at low PDs, as a credit model's do.
        s = 1 / (1 + np.exp(-(rng.normal(-3.0, 1.0, n) + 1.2 * y)))
        out.append((s, y))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_metrics_match_sklearn_on_all_rows(seed):
    banks = _banks(seed)
    threshold = 0.1
    pooled = metrics.pooled([metrics.summarise(s, y, threshold, 2000) for s, y in banks])
    s = np.concatenate([b[0] for b in banks])
    y = np.concatenate([b[1] for b in banks])
    pred = s >= threshold
    fpr, tpr, _ = roc_curve(y, s)
    assert pooled["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-3)
    assert pooled["ks"] == pytest.approx(np.max(tpr - fpr), abs=2e-3)
    assert pooled["gini"] == pytest.approx(2 * pooled["auc"] - 1)
    assert pooled["brier"] == pytest.approx(brier_score_loss(y, s), rel=1e-9)
    assert pooled["logloss"] == pytest.approx(log_loss(y, s), rel=1e-6)
    assert pooled["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert pooled["precision"] == pytest.approx(precision_score(y, pred))
    assert pooled["recall"] == pytest.approx(recall_score(y, pred))
    assert pooled["f1"] == pytest.approx(f1_score(y, pred))
    assert pooled["num-examples"] == len(y) and pooled["default-rate"] == pytest.approx(y.mean())


@pytest.mark.parametrize("seed", [3, 4])
def test_exact_metrics_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(1000) < 0.1
    s = np.round(rng.random(1000) * 0.5 + 0.3 * y, 2)  # many ties
    fpr, tpr, _ = roc_curve(y, s)
    exact = metrics.exact(s, y, 0.5)
    assert exact["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert exact["ks"] == pytest.approx(np.max(tpr - fpr), abs=1e-12)


def test_pooling_is_not_averaging():
    """Two banks with good AUC each, but offset scores: pooled AUC must show it."""
    a = (np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1]))
    b = (np.array([0.6, 0.7, 0.8, 0.9]), np.array([0, 0, 1, 1]))
    pooled = metrics.pooled([metrics.summarise(s, y, 0.5, 100) for s, y in (a, b)])
    assert metrics.exact_auc(*a) == 1.0 and metrics.exact_auc(*b) == 1.0
    s = np.concatenate([a[0], b[0]])
    y = np.concatenate([a[1], b[1]])
    assert pooled["auc"] == pytest.approx(roc_auc_score(y, s)) and pooled["auc"] < 0.9


def test_single_class_gives_nan_auc_not_an_exception():
    summary = metrics.summarise(np.array([0.1, 0.2]), np.array([0, 0]), 0.5, 10)
    assert np.isnan(metrics.pooled([summary])["auc"])
    assert np.isnan(metrics.exact_auc(np.array([0.1, 0.2]), np.array([0, 0])))


def test_summary_values_are_plain_python_for_metric_records():
    summary = metrics.summarise(np.array([0.1, 0.9]), np.array([0, 1]), 0.5, 10)
    for value in summary.values():
        assert type(value) in (int, float) or all(type(v) is int for v in value)
