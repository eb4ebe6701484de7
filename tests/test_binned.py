"""Figures of binned scores (`fedcredit.core.binned`) against row-level definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcredit.core import binned as bn
from fedcredit.core import metrics

BINS = 2000


def _loans(seed: int, n: int = 3000, shift: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.12
    scores = np.clip(rng.beta(2, 14, n) + labels * rng.random(n) * shift, 0, 1 - 1e-9)
    return scores, labels


def _bin_index(scores: np.ndarray, bins: int = BINS) -> np.ndarray:
    return np.minimum((scores * bins).astype(np.int64), bins - 1)


def _brute_force_delong(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """DeLong's structural components by comparing every pair (the definition, O(m n))."""
    x, y = scores[labels], scores[~labels]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    auc = psi.mean()
    return float(auc), math.sqrt(v10.var(ddof=1) / x.size + v01.var(ddof=1) / y.size)


def test_row_level_delong_is_the_pairwise_definition_with_ties():
    scores, labels = _loans(1, n=400)
    scores = np.round(scores, 2)  # many ties
    aucs, cov = metrics.delong([scores], labels)
    auc, se = _brute_force_delong(scores, labels)
    assert aucs[0] == pytest.approx(auc, abs=1e-12) and math.sqrt(cov[0, 0]) == pytest.approx(se, rel=1e-10)


def test_histogram_delong_equals_row_level_delong_of_the_binned_scores():
    scores, labels = _loans(2)
    b = bn.Binned.of_scores(scores, labels, BINS)
    est = bn.delong_auc(b)
    aucs, cov = metrics.delong([_bin_index(scores)], labels)
    assert est.value == pytest.approx(aucs[0], abs=1e-12)
    assert est.se == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-9)
    assert est.low == pytest.approx(est.value - 1.959964 * est.se, abs=1e-6)


def test_histogram_delong_is_close_to_the_row_level_one_and_to_a_bootstrap():
    scores, labels = _loans(3)
    est = bn.delong_auc(bn.Binned.of_scores(scores, labels, BINS))
    aucs, cov = metrics.delong([scores], labels)
    low, high = metrics.histogram_auc_bounds(
        *(np.histogram(scores[c], np.linspace(0, 1, BINS + 1))[0] for c in (labels, ~labels))
    )
    assert low <= aucs[0] <= high and abs(est.value - aucs[0]) <= (high - low) / 2 + 1e-12
    assert est.se == pytest.approx(math.sqrt(cov[0, 0]), rel=0.02)  # the bins' ties change the variance a little
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(400):
        i = rng.integers(0, scores.size, scores.size)
        boot.append(metrics.exact_auc(scores[i], labels[i]))
    assert est.se == pytest.approx(float(np.std(boot, ddof=1)), rel=0.15)


def test_ks_equals_the_binned_rows_and_is_within_one_bins_share_of_the_exact_ks():
    scores, labels = _loans(4)
    b = bn.Binned.of_scores(scores, labels, BINS)
    value, at = bn.ks(b)
    assert value == pytest.approx(metrics.auc_ks(_bin_index(scores), labels)[1], abs=1e-12)
    exact = metrics.auc_ks(scores, labels)[1]
    worst_bin = float(np.max(b.bad / b.n_bad + b.good / b.n_good))
    assert value <= exact + 1e-12 and exact - value <= worst_bin
    below = scores < at
    assert abs(below[~labels].mean() - below[labels].mean()) == pytest.approx(value, abs=1e-12)


def test_ks_interval_is_reproducible_and_covers_the_figure():
    b = bn.Binned.of_scores(*_loans(5, n=800), BINS)
    first, again = bn.ks_estimate(b), bn.ks_estimate(b)
    assert first == again and first.low <= first.value <= first.high and first.high - first.low > 0.01
    assert bn.ks_estimate(b, seed=1) != first  # the seed, not chance, makes it reproducible


def test_wilson_intervals_match_published_values():
    low, high = bn.wilson(np.array([0, 5, 10]), np.array([10, 10, 10]))
    assert low == pytest.approx([0.0, 0.2366, 0.7225], abs=1e-4)
    assert high == pytest.approx([0.2775, 0.7634, 1.0], abs=1e-4)


def test_calibration_bands_count_the_rows_between_their_edges():
    scores, labels = _loans(6)
    b = bn.Binned.of_scores(scores, labels, BINS)
    table = bn.calibration(b)
    assert table["rows"].sum() == scores.size and table["bads"].sum() == labels.sum()
    assert 8 <= len(table) <= 10 and table["rows"].max() < 2 * scores.size / 10
    for band in table.itertuples():
        inside = (scores >= band.pd_low - 1e-12) & (scores < band.pd_high - 1e-12)
        assert inside.sum() == band.rows and labels[inside].sum() == band.bads
        assert abs(scores[inside].mean() - band.mean_pd) <= 0.5 / BINS + 1e-12  # a bin's midpoint stands for its scores
        assert band.low95 <= band.default_rate <= band.high95


def test_score_bands_are_the_gains_table_of_the_rows_riskiest_first():
    scores, labels = _loans(7)
    t = bn.score_bands(bn.Binned.of_scores(scores, labels, BINS))
    assert t["pd_high"].is_monotonic_decreasing and t["rows"].sum() == scores.size
    for band in t.itertuples():
        inside = (scores >= band.pd_low - 1e-12) & (scores < band.pd_high - 1e-12)
        assert inside.sum() == band.rows and labels[inside].sum() == band.bads
        riskier = scores >= band.pd_low - 1e-12
        assert band.capture == pytest.approx(labels[riskier].sum() / labels.sum())
        assert band.cum_bad_rate == pytest.approx(labels[riskier].mean())
    assert t["capture"].iloc[-1] == pytest.approx(1.0) and t["ks"].max() == pytest.approx(
        bn.ks(bn.Binned.of_scores(scores, labels, BINS))[0], abs=0.05
    )


def test_threshold_table_counts_approvals_below_the_cutoff():
    scores, labels = _loans(8)
    b = bn.Binned.of_scores(scores, labels, BINS)
    t = bn.threshold_table(b, [0.1, 0.05, 0.12345]).set_index("cutoff")
    for _, row in t.iterrows():
        approved = scores < row["applied"]
        assert row["approved"] == approved.sum()
        assert row["bad_rate_approved"] == pytest.approx(labels[approved].mean())
        assert row["defaults_caught"] == pytest.approx(labels[~approved].sum() / labels.sum())
    assert t.loc[0.1, "applied"] == pytest.approx(0.1) and t.loc[0.12345, "applied"] == pytest.approx(0.123)
    # the confusion counts a bank sends at its threshold are the same cut
    s = metrics.summarise(scores, labels, 0.1, BINS)
    assert t.loc[0.1, "approved"] == s["tn"] + s["fn"]


def test_psi_is_zero_for_the_same_loans_and_grows_with_a_shift():
    scores, labels = _loans(9)
    b = bn.Binned.of_scores(scores, labels, BINS)
    counts = b.bad + b.good
    same = bn.psi_estimate(counts, counts)
    assert same.value == pytest.approx(0.0, abs=1e-12) and same.low == 0.0
    shifted = bn.Binned.of_scores(np.clip(scores + 0.03, 0, 1 - 1e-9), labels, BINS)
    moved = bn.psi_estimate(shifted.bad + shifted.good, counts)
    assert moved.value > 0.1 and moved.low <= moved.value <= moved.high
    assert moved == bn.psi_estimate(shifted.bad + shifted.good, counts)


def test_undefined_figures_are_nan_not_errors():
    b = bn.Binned(np.zeros(10, dtype=int), np.r_[5, np.zeros(9, dtype=int)])
    assert math.isnan(bn.delong_auc(b).value) and math.isnan(bn.ks_estimate(b).value)
    with pytest.raises(ValueError, match="negative"):
        bn.Binned(np.r_[-1, 0], np.r_[0, 0])
    with pytest.raises(ValueError, match="same"):
        bn.Binned(np.zeros(3), np.zeros(4))
