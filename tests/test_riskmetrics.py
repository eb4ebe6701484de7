"""Model-risk curves and tables against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve as sk_roc_curve

from fedcredit.core import metrics
from fedcredit.risk import curves as rm


def _scores(seed: int, n: int = 3000, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.08
    s = 1 / (1 + np.exp(-(rng.normal(-3.0, 1.0, n) + 1.3 * y)))
    if ties:
        s = np.round(s, 2)  # many equal scores, as a coarse scorecard gives
    return s, y


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True)])
def test_roc_curve_matches_sklearn(seed, ties):
    s, y = _scores(seed, ties=ties)
    fpr, tpr, thr = rm.roc_curve(s, y)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(metrics.exact_auc(s, y), abs=1e-12)


@pytest.mark.parametrize("seed,ties", [(2, False), (3, True)])
def test_ks_curve_peak_is_the_ks_statistic(seed, ties):
    s, y = _scores(seed, ties=ties)
    curve = rm.ks_curve(s, y)
    fpr, tpr, _ = sk_roc_curve(y, s)
    assert curve.ks == pytest.approx(np.max(tpr - fpr))
    assert curve.ks == pytest.approx(metrics.auc_ks(s, y)[1])
    assert curve.cdf_bad[-1] == curve.cdf_good[-1] == 1.0
    # The peak is where the curves are furthest apart, at a real score.
    i = int(np.searchsorted(curve.thresholds, curve.at))
    assert curve.cdf_good[i] - curve.cdf_bad[i] == pytest.approx(curve.ks)


def test_ks_curve_by_hand():
    # At or below 0.1 / 0.2 / 0.3 / 0.4: bads 0, 1/2, 1/2, 1 and goods 1/2, 1/2, 1, 1. The gap is 0.5 at
    # 0.1 and at 0.3: the lowest threshold is reported.
    curve = rm.ks_curve(np.array([0.3, 0.1, 0.4, 0.2]), np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(curve.thresholds, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(curve.cdf_bad, [0, 0.5, 0.5, 1])
    np.testing.assert_allclose(curve.cdf_good, [0.5, 0.5, 1, 1])
    assert curve.ks == pytest.approx(0.5) and curve.at == 0.1


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_reliability_bins_match_sklearn_calibration_curve(strategy):
    s, y = _scores(4)
    bins = rm.reliability_bins(s, y, n_bins=10, strategy=strategy)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=10, strategy=strategy)
    np.testing.assert_allclose(bins["default_rate"], prob_true)
    np.testing.assert_allclose(bins["mean_pd"], prob_pred)
    assert bins["count"].sum() == len(s)
    assert (bins["default_rate_low95"] <= bins["default_rate"]).all()
    assert (bins["default_rate"] <= bins["default_rate_high95"]).all()


def test_expected_calibration_error():
    rng = np.random.default_rng(5)
    s = rng.uniform(0.01, 0.3, 200_000)
    calibrated = rng.random(s.size) < s
    assert rm.expected_calibration_error(s, calibrated) < 0.005
    # Every PD twice too high: the error is the mean overstatement, here mean(s).
    assert rm.expected_calibration_error(2 * s, calibrated) == pytest.approx(s.mean(), rel=0.02)
    # One bin: |constant PD - default rate|.
    assert rm.expected_calibration_error(np.full(10, 0.3), np.r_[np.ones(1), np.zeros(9)], n_bins=1) == pytest.approx(
        0.2
    )


def test_psi_of_identical_distributions_is_zero_and_grows_with_shift():
    s, _ = _scores(6)
    assert rm.psi(s, s) == 0.0
    assert rm.psi(s, s.copy()[::-1]) == 0.0
    rng = np.random.default_rng(6)
    same_population = rng.choice(s, 3000)
    values = [rm.psi(s, np.clip(s * k, 0, 1)) for k in (1.2, 1.5, 2.5)]
    assert rm.psi(s, same_population) < rm.PSI_STABLE
    assert values == sorted(values) and values[-1] > rm.PSI_UNSTABLE
    assert rm.psi_reading(values[-1]) == "unstable: investigate"


def test_psi_by_hand():
    reference = np.r_[np.zeros(50), np.ones(50)]  # two bins of 50 % each
    actual = np.r_[np.zeros(25), np.ones(75)]
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert rm.psi(reference, actual, n_bins=2) == pytest.approx(expected)
    # An empty bin is floored, not infinite.
    assert math.isfinite(rm.psi(reference, np.ones(10), n_bins=2))


def test_gains_table_by_hand():
    s = np.arange(20, dtype=float) / 20  # distinct scores, riskiest last
    y = np.zeros(20, dtype=bool)
    y[[19, 18, 17, 5]] = True  # three defaults in the riskiest decile pair, one low
    t = rm.gains_table(s, y, n_bins=10)
    assert t["rows"].tolist() == [2] * 10
    assert t["bads"].tolist() == [2, 1, 0, 0, 0, 0, 0, 1, 0, 0]
    assert t["max_pd"].iloc[0] == pytest.approx(0.95)
    assert t["capture"].tolist()[:3] == pytest.approx([0.5, 0.75, 0.75])
    assert t["lift"].iloc[0] == pytest.approx(1.0 / 0.2)  # decile default rate 100 % vs 20 % overall
    assert t["capture"].iloc[-1] == t["cum_goods"].iloc[-1] == t["cum_population"].iloc[-1] == pytest.approx(1.0)


def test_gains_table_totals_and_ks():
    s, y = _scores(7, n=2003)
    t = rm.gains_table(s, y)
    assert t["rows"].sum() == len(s) and t["rows"].max() - t["rows"].min() <= 1
    assert t["bads"].sum() == y.sum()
    assert (t["min_pd"].iloc[:-1].to_numpy() >= t["max_pd"].iloc[1:].to_numpy()).all()  # riskiest first
    assert np.average(t["lift"], weights=t["rows"]) == pytest.approx(1.0)
    # Decile cut points are some of the KS curve's thresholds: never a larger gap.
    assert t["ks"].max() <= metrics.auc_ks(s, y)[1] + 1e-12


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="both"):
        rm.ks_curve(np.linspace(0, 1, 20), np.zeros(20))
    with pytest.raises(ValueError, match="both"):
        rm.gains_table(np.linspace(0, 1, 20), np.ones(20))
