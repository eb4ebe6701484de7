"""Pooled metrics from bank summaries against scikit-learn on all rows."""

from __future__ import annotations

import warnings

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
    assert metrics.auc_ks(s, y) == pytest.approx((roc_auc_score(y, s), np.max(tpr - fpr)), abs=1e-12)
    assert metrics.exact_auc(s, y) == exact["auc"]
    pred = s >= 0.5
    assert exact["brier"] == pytest.approx(brier_score_loss(y, s), rel=1e-9)
    assert exact["logloss"] == pytest.approx(log_loss(y, np.clip(s, metrics.EPS, 1 - metrics.EPS)), rel=1e-9)
    assert exact["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert exact["f1"] == pytest.approx(f1_score(y, pred))
    assert exact["mean-pd"] == pytest.approx(s.mean()) and exact["default-rate"] == pytest.approx(y.mean())


def _bin_of(scores: np.ndarray, bins: int) -> np.ndarray:
    """The histogram bin `summarise` puts each score in: [low, high), the last one closed."""
    return np.minimum(np.searchsorted(np.linspace(0.0, 1.0, bins + 1), scores, side="right") - 1, bins - 1)


@pytest.mark.parametrize("seed,bins", [(5, 20), (6, 2000)])
def test_pooled_auc_ks_are_those_of_all_banks_binned_scores(seed, bins):
    banks = _banks(seed, n_banks=5)
    pooled = metrics.pooled([metrics.summarise(s, y, 0.1, bins) for s, y in banks])
    binned = np.concatenate([_bin_of(s, bins) for s, _ in banks])
    y = np.concatenate([b[1] for b in banks])
    fpr, tpr, _ = roc_curve(y, binned)
    assert (pooled["auc"], pooled["ks"]) == pytest.approx(metrics.auc_ks(binned, y), abs=1e-12)
    assert pooled["auc"] == pytest.approx(roc_auc_score(y, binned), abs=1e-12)
    assert pooled["ks"] == pytest.approx(np.max(tpr - fpr), abs=1e-12)


def test_pairs_in_one_histogram_bin_count_half():
    # Goods at 0.1 (bin 1) and 0.6 (bin 2), bads at 0.7 and 0.8 (bin 2): of the four bad-good pairs
    # two are ranked right and two share a bin, so AUC = (2 + 2 * 0.5) / 4; the CDFs part by 0.5 after bin 1.
    s, y = np.array([0.1, 0.6, 0.7, 0.8]), np.array([0, 0, 1, 1])
    pooled = metrics.pooled([metrics.summarise(s, y, 0.5, 2)])
    assert pooled["auc"] == pytest.approx(0.75) and pooled["ks"] == pytest.approx(0.5)
    assert metrics.exact(s, y, 0.5)["auc"] == 1.0 and metrics.exact(s, y, 0.5)["ks"] == 1.0


def test_weights_count_as_repeated_rows():
    rng = np.random.default_rng(8)
    s, y, w = np.round(rng.random(300), 2), rng.random(300) < 0.3, rng.integers(0, 4, 300)
    assert metrics.auc_ks(s, y, w) == pytest.approx(metrics.auc_ks(np.repeat(s, w), np.repeat(y, w)), abs=1e-12)


def test_ks_of_a_model_ranking_backwards_is_the_gap_not_zero():
    rng = np.random.default_rng(9)
    y = rng.random(500) < 0.2
    s = rng.random(500) * 0.6 + 0.3 * y
    auc, ks = metrics.auc_ks(s, y)
    assert metrics.auc_ks(1 - s, y) == pytest.approx((1 - auc, ks), abs=1e-12)


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
    s, y = np.array([0.1, 0.2]), np.array([0, 0])
    pooled = metrics.pooled([metrics.summarise(s, y, 0.5, 10)])
    exact = metrics.exact(s, y, 0.5)
    for m in (pooled, exact):
        assert np.isnan(m["auc"]) and np.isnan(m["ks"]) and np.isnan(m["gini"])
        assert m["num-examples"] == 2 and m["accuracy"] == 1.0
    assert np.isnan(metrics.exact_auc(s, y))
    assert all(np.isnan(metrics.auc_ks(np.array([0.1, 0.2, 0.3]), np.array([0, 0, 1]), np.array([1, 1, 0]))))
    assert all(np.isnan(metrics.auc_ks(np.array([], dtype=float), np.array([], dtype=bool))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's warning for a missing class is not passed on
        fpr, tpr, _ = metrics.roc_curve(s, y)
    assert np.isnan(tpr).all() and fpr[-1] == 1.0


def test_a_diverged_model_gives_nan_auc_not_an_exception():
    s, y = np.array([0.1, np.nan, 0.3, 0.4]), np.array([0, 1, 0, 1])
    assert all(np.isnan(metrics.auc_ks(s, y)))
    assert np.isnan(metrics.exact(s, y, 0.5)["auc"])


def test_mismatched_inputs_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        metrics.exact(np.array([0.1, 0.2, 0.3]), np.array([0, 1]), 0.5)
    a = metrics.summarise(np.array([0.1, 0.9]), np.array([0, 1]), 0.5, 10)
    b = metrics.summarise(np.array([0.1, 0.9]), np.array([0, 1]), 0.5, 20)
    with pytest.raises(ValueError, match="histogram-bins"):
        metrics.pooled([a, b])


def test_summary_values_are_plain_python_for_metric_records():
    summary = metrics.summarise(np.array([0.1, 0.9]), np.array([0, 1]), 0.5, 10)
    for value in summary.values():
        assert type(value) in (int, float) or all(type(v) is int for v in value)


def test_auc_standard_error_matches_the_spread_of_auc_over_resamples():
    rng = np.random.default_rng(0)
    aucs = []
    for _ in range(400):
        s = np.r_[rng.normal(0.6, 1, 30), rng.normal(0, 1, 500)]
        aucs.append(metrics.exact_auc(s, np.r_[np.ones(30), np.zeros(500)]))
    se = metrics.auc_standard_error(float(np.mean(aucs)), 30, 500)
    assert se == pytest.approx(np.std(aucs), rel=0.2)
    assert metrics.auc_standard_error(float("nan"), 30, 500) != metrics.auc_standard_error(0.7, 30, 500)
    assert metrics.auc_standard_error(0.7, 300, 5000) < se  # more loans, less chance in the AUC


@pytest.mark.parametrize("bins", [10, 50, 200, 2000])
def test_the_exact_auc_lies_within_the_bounds_its_histograms_give(bins):
    rng = np.random.default_rng(bins)
    for _ in range(20):
        y = rng.random(400) < 0.15
        s = np.clip(rng.normal(0.2 + 0.15 * y, 0.1), 0, 1)
        summary = metrics.summarise(s, y, 0.1, bins)
        low, high = metrics.histogram_auc_bounds(summary["hist-bad"], summary["hist-good"])
        assert low - 1e-12 <= metrics.exact_auc(s, y) <= high + 1e-12
    assert high - low < {10: 0.3, 50: 0.1, 200: 0.03, 2000: 0.005}[bins]  # finer bins, tighter bounds


def test_a_perfect_ranking_claimed_over_overlapping_histograms_is_outside_the_bounds():
    low, high = metrics.histogram_auc_bounds([1, 2, 3], [3, 2, 1])
    assert high < 1.0 and low > 0.0
