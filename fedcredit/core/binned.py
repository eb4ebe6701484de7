"""Model-risk figures of binned scores: what the coordinator has of the banks' rows.

Every bank sends, per evaluation, how many of its validation loans of each
class scored in each of `histogram-bins` equal-width PD bins on [0, 1]
(`fedcredit.core.metrics.summarise`). Summed over banks these histograms are
the pooled validation rows with each PD rounded down to its bin's lower
edge: every figure here is exact for those rounded scores, and differs from
the row-level one only through loans of both classes sharing a bin (AUC,
KS) or through the position of a score inside its bin (mean PD, at most
half a bin width). The same functions serve the hold-out set, binned the
same way, so both packs are read the same way.

Intervals (95 %, two-sided):

* AUC: DeLong, DeLong and Clarke-Pearson (1988). Its structural components
  need only each loan's share of the other class scoring below / above it,
  which a histogram gives exactly (ties are the same bin, counted half), so
  the histogram variance equals the row-level DeLong variance of the binned
  scores. Normal approximation; loans independent.
* KS and PSI: bootstrap, resampling each histogram (multinomial, sizes
  fixed) with a fixed seed, so the same histograms always give the same
  interval; percentile interval shifted by the bootstrap's bias (both
  figures are inflated by sampling noise).
* Default rates (calibration bands, approval and bad rates): Wilson score
  intervals, honest for the few defaults a band holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcredit.core import metrics

Z95 = 1.959963984540054
BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_SEED = 20  # fixed: the report is a pure function of the run directory
# Shares below this count as this in PSI: an empty band would make the index infinite.
PSI_FLOOR = 1e-4
# Conventional PSI reading (credit-scoring practice): below 0.1 stable, 0.1-0.25 shifted, above 0.25 unstable.
PSI_STABLE, PSI_UNSTABLE = 0.1, 0.25
# PD cut-offs of the threshold trade-off table (the run's `threshold` is added).
CUTOFFS = (0.02, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


@dataclass(frozen=True, eq=False)
class Binned:
    """Counts of defaulted (`bad`) and repaid (`good`) loans per PD bin; bin i is [i / bins, (i + 1) / bins)."""

    bad: np.ndarray
    good: np.ndarray

    def __post_init__(self) -> None:
        bad, good = np.asarray(self.bad, dtype=np.int64).ravel(), np.asarray(self.good, dtype=np.int64).ravel()
        if bad.size != good.size or bad.size == 0:
            raise ValueError(f"class histograms of {bad.size} and {good.size} bins: they must have the same, > 0")
        if (bad < 0).any() or (good < 0).any():
            raise ValueError("a histogram count is negative")
        object.__setattr__(self, "bad", bad)
        object.__setattr__(self, "good", good)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Binned) and np.array_equal(self.bad, other.bad) and np.array_equal(self.good, other.good)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside

    @classmethod
    def of_scores(cls, scores: np.ndarray, labels: np.ndarray, bins: int) -> Binned:
        """Row-level scores binned exactly as a bank bins its validation scores."""
        s = metrics.summarise(scores, labels, 0.5, bins)
        return cls(np.asarray(s["hist-bad"]), np.asarray(s["hist-good"]))

    @classmethod
    def total(cls, parts: list[Binned]) -> Binned:
        return cls(np.sum([p.bad for p in parts], axis=0), np.sum([p.good for p in parts], axis=0))

    @property
    def bins(self) -> int:
        return self.bad.size

    @property
    def width(self) -> float:
        return 1.0 / self.bins

    @property
    def n_bad(self) -> int:
        return int(self.bad.sum())

    @property
    def n_good(self) -> int:
        return int(self.good.sum())

    @property
    def rows(self) -> int:
        return self.n_bad + self.n_good

    @property
    def both_classes(self) -> bool:
        return self.n_bad > 0 and self.n_good > 0

    def mean_pd(self) -> float:
        """Mean PD with each score at its bin's midpoint (within half a bin width of the true mean)."""
        mids = (np.arange(self.bins) + 0.5) * self.width
        n = self.rows
        return float(((self.bad + self.good) * mids).sum() / n) if n else math.nan


@dataclass(frozen=True)
class Estimate:
    """A figure with its 95 % interval (`se`: standard error where the method has one)."""

    value: float
    low: float
    high: float
    se: float = math.nan
    method: str = ""

    def to_json(self) -> dict[str, float | str]:
        return {"value": self.value, "low": self.low, "high": self.high, "se": self.se, "method": self.method}


NAN = Estimate(math.nan, math.nan, math.nan)


def delong_auc(b: Binned) -> Estimate:
    """AUC (ties counted half) with DeLong's standard error, from the two class histograms."""
    m, n = b.n_bad, b.n_good
    if m < 2 or n < 2:
        return NAN
    bad, good = b.bad.astype(np.float64), b.good.astype(np.float64)
    good_below = np.cumsum(good) - good  # repaid loans in lower bins
    bad_above = bad.sum() - np.cumsum(bad)  # defaulted loans in higher bins
    v10 = (good_below + 0.5 * good) / n  # per bin: a defaulted loan's share of repaid loans it outranks
    v01 = (bad_above + 0.5 * bad) / m  # per bin: a repaid loan's share of defaulted loans that outrank it
    auc = float((bad * v10).sum() / m)
    s10 = float((bad * (v10 - auc) ** 2).sum() / (m - 1))
    s01 = float((good * (v01 - auc) ** 2).sum() / (n - 1))
    se = math.sqrt(max(s10 / m + s01 / n, 0.0))
    return Estimate(auc, max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se), se, "DeLong")


def _cdfs(bad: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of each class scoring in or below each bin (the last axis holds the bins)."""
    cb, cg = np.cumsum(bad, axis=-1, dtype=np.float64), np.cumsum(good, axis=-1, dtype=np.float64)
    return cb / cb[..., -1:], cg / cg[..., -1:]


def _bootstrap(value: float, replicates: np.ndarray, method: str, top: float = math.inf) -> Estimate:
    """Percentile interval of the replicates, shifted by their bias (mean - value), within [0, top].

    KS and PSI are maxima / sums of squares of sampling noise, so resampled
    values sit above the figure itself: unshifted, the percentile interval
    of a small sample can miss the figure entirely.
    """
    bias = float(replicates.mean()) - value
    low, high = np.percentile(replicates, [2.5, 97.5]) - bias
    return Estimate(value, float(np.clip(low, 0.0, top)), float(np.clip(high, 0.0, top)), method=method)


def ks(b: Binned) -> tuple[float, float]:
    """(KS, the PD edge where it occurs): the largest gap between the classes' cumulative shares."""
    if not b.both_classes:
        return math.nan, math.nan
    cb, cg = _cdfs(b.bad, b.good)
    gap = np.abs(cg - cb)
    i = int(np.argmax(gap))
    return float(gap[i]), (i + 1) * b.width


def _occupied(b: Binned) -> tuple[np.ndarray, np.ndarray]:
    """The histograms without bins empty in both classes: cumulative shares do not change there."""
    keep = (b.bad + b.good) > 0
    return b.bad[keep], b.good[keep]


def _resample(counts: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    n = int(counts.sum())
    return rng.multinomial(n, counts / n, size=size) if n else np.zeros((size, counts.size), dtype=np.int64)


def ks_estimate(b: Binned, replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """KS with a percentile-bootstrap interval (each class resampled from its own histogram)."""
    value, _ = ks(b)
    if not math.isfinite(value):
        return NAN
    bad, good = _occupied(b)
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, replicates, 200):  # bounded memory: 200 replicates x occupied bins at a time
        size = min(200, replicates - start)
        cb, cg = _cdfs(_resample(bad, rng, size), _resample(good, rng, size))
        out.append(np.abs(cg - cb).max(axis=1))
    return _bootstrap(value, np.concatenate(out), f"bias-corrected bootstrap, {replicates} replicates", 1.0)


def wilson(successes: np.ndarray | float, n: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """95 % Wilson score interval of a proportion (NaN where n is 0)."""
    k, n = np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        z2 = Z95 * Z95
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def rate(successes: int, n: int) -> Estimate:
    """A proportion with its Wilson interval."""
    low, high = wilson(successes, n)
    return Estimate(successes / n if n else math.nan, float(low), float(high), method="Wilson")


def roc(b: Binned) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) flagging loans at or above each bin edge, riskiest first."""
    fpr = np.r_[0.0, np.cumsum(b.good[::-1]) / max(b.n_good, 1)]
    tpr = np.r_[0.0, np.cumsum(b.bad[::-1]) / max(b.n_bad, 1)]
    return fpr, tpr


def band_edges(counts: np.ndarray, n_bands: int = 10) -> np.ndarray:
    """Bin indices where ~equal-count bands of `counts` start (the first is 0; ties merge bands).

    A band holds whole bins, so a bin holding more than a band's share of the
    loans makes its band larger and leaves fewer bands.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return np.array([0])
    cum = np.cumsum(counts) / total
    cuts = np.searchsorted(cum, np.arange(1, n_bands) / n_bands, side="left") + 1
    return np.unique(np.r_[0, cuts[cuts < counts.size]])


def _band_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(np.asarray(values, dtype=np.float64), starts)


def calibration(b: Binned, n_bands: int = 10) -> pd.DataFrame:
    """Per PD band (~equal counts, lowest PD first): loans, defaults, mean PD, observed rate and its interval.

    `within`: the band's mean PD lies inside the 95 % interval of its observed default rate.
    """
    starts = band_edges(b.bad + b.good, n_bands)
    ends = np.r_[starts[1:], b.bins]
    mids = (np.arange(b.bins) + 0.5) * b.width
    rows = _band_sums(b.bad + b.good, starts)
    bads = _band_sums(b.bad, starts)
    sum_pd = _band_sums((b.bad + b.good) * mids, starts)
    keep = rows > 0
    low, high = wilson(bads[keep], rows[keep])
    table = pd.DataFrame(
        {
            "band": np.arange(1, keep.sum() + 1),
            "pd_low": starts[keep] * b.width,
            "pd_high": ends[keep] * b.width,
            "rows": rows[keep].astype(np.int64),
            "bads": bads[keep].astype(np.int64),
            "mean_pd": sum_pd[keep] / rows[keep],
            "default_rate": bads[keep] / rows[keep],
            "low95": low,
            "high95": high,
        }
    )
    table["within"] = (table["mean_pd"] >= table["low95"]) & (table["mean_pd"] <= table["high95"])
    return table


def calibration_in_the_large(b: Binned) -> Estimate:
    """Observed default rate minus mean PD, with the Wilson interval of the observed rate shifted by the mean PD."""
    if not b.rows:
        return NAN
    observed = rate(b.n_bad, b.rows)
    mean = b.mean_pd()
    return Estimate(observed.value - mean, observed.low - mean, observed.high - mean, method="Wilson")


def score_bands(b: Binned, n_bands: int = 10) -> pd.DataFrame:
    """Gains, lift and KS by score band, riskiest band first (bands of whole bins, ~equal counts).

    `capture`: share of all defaults in this and riskier bands; `cum_goods`:
    the same for repaid loans; `ks`: their gap; `lift`: the band's default
    rate over the overall one; `cum_bad_rate`: default rate of this and riskier bands.
    """
    if not b.both_classes:
        raise ValueError("score bands need both defaulted and repaid loans")
    rev_bad, rev_good = b.bad[::-1], b.good[::-1]  # riskiest bin first
    starts = band_edges(rev_bad + rev_good, n_bands)
    ends = np.r_[starts[1:], b.bins]
    bads, goods = _band_sums(rev_bad, starts), _band_sums(rev_good, starts)
    t = pd.DataFrame(
        {
            "band": np.arange(1, starts.size + 1),
            "pd_low": (b.bins - ends) * b.width,
            "pd_high": (b.bins - starts) * b.width,
            "rows": (bads + goods).astype(np.int64),
            "bads": bads.astype(np.int64),
        }
    )
    t = t[t["rows"] > 0].reset_index(drop=True)
    t["band"] = np.arange(1, len(t) + 1)
    overall = b.n_bad / b.rows
    cum_rows, cum_bads = t["rows"].cumsum(), t["bads"].cumsum()
    t["default_rate"] = t["bads"] / t["rows"]
    t["cum_population"] = cum_rows / b.rows
    t["capture"] = cum_bads / b.n_bad
    t["cum_goods"] = (cum_rows - cum_bads) / b.n_good
    t["ks"] = t["capture"] - t["cum_goods"]
    t["lift"] = t["default_rate"] / overall
    t["cum_bad_rate"] = cum_bads / cum_rows
    t["cum_lift"] = t["cum_bad_rate"] / overall
    return t


def edge_of(cutoff: float, bins: int) -> int:
    """The first bin a loan scoring `cutoff` falls in: loans in it and above are flagged."""
    return min(max(int(math.floor(cutoff * bins + 1e-9)), 0), bins)


def threshold_table(b: Binned, cutoffs: tuple[float, ...] | list[float]) -> pd.DataFrame:
    """Per PD cut-off (flag at or above it): approval rate, bad rate among approved, defaults caught.

    The cut-off a histogram can apply is the lower edge of the bin it falls
    in (`applied`); with 2,000 bins every multiple of 0.0005 is exact.
    """
    rows = []
    for cutoff in sorted(set(cutoffs)):
        k = edge_of(cutoff, b.bins)
        approved_bad, approved_good = int(b.bad[:k].sum()), int(b.good[:k].sum())
        approved = approved_bad + approved_good
        caught = b.n_bad - approved_bad
        approval, bad_rate, caught_share = rate(approved, b.rows), rate(approved_bad, approved), rate(caught, b.n_bad)
        rows.append(
            {
                "cutoff": cutoff,
                "applied": k * b.width,
                "approved": approved,
                "approval_rate": approval.value,
                "approval_low95": approval.low,
                "approval_high95": approval.high,
                "bad_rate_approved": bad_rate.value,
                "bad_rate_low95": bad_rate.low,
                "bad_rate_high95": bad_rate.high,
                "defaults_caught": caught_share.value,
                "caught_low95": caught_share.low,
                "caught_high95": caught_share.high,
                "good_declined": (b.n_good - approved_good) / b.n_good if b.n_good else math.nan,
            }
        )
    return pd.DataFrame(rows)


def _psi(reference: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """PSI of band counts (the last axis holds the bands)."""
    r = np.maximum(reference / reference.sum(axis=-1, keepdims=True), PSI_FLOOR)
    a = np.maximum(actual / actual.sum(axis=-1, keepdims=True), PSI_FLOOR)
    return ((a - r) * np.log(a / r)).sum(axis=-1)


def psi_estimate(
    actual: np.ndarray,
    reference: np.ndarray,
    n_bands: int = 10,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
) -> Estimate:
    """PSI of `actual` counts per bin against `reference`, on the reference's ~decile bands, bootstrapped.

    Bands are fixed by the reference (as in credit-scoring practice); both
    sets of counts are resampled for the interval.
    """
    actual, reference = np.asarray(actual, dtype=np.int64), np.asarray(reference, dtype=np.int64)
    if actual.sum() == 0 or reference.sum() == 0:
        return NAN
    starts = band_edges(reference, n_bands)
    return psi_of_bands(np.add.reduceat(actual, starts), np.add.reduceat(reference, starts), replicates, seed)


def psi_of_bands(
    a: np.ndarray, r: np.ndarray, replicates: int = BOOTSTRAP_REPLICATES, seed: int = BOOTSTRAP_SEED
) -> Estimate:
    """PSI of counts already in bands (`a` against the reference `r`), with its bootstrap interval."""
    a, r = np.asarray(a, dtype=np.int64), np.asarray(r, dtype=np.int64)
    if a.sum() == 0 or r.sum() == 0:
        return NAN
    value = float(_psi(r.astype(np.float64), a.astype(np.float64)))
    rng = np.random.default_rng(seed)
    reps = _psi(_resample(r, rng, replicates).astype(np.float64), _resample(a, rng, replicates).astype(np.float64))
    return _bootstrap(value, reps, f"bias-corrected bootstrap, {replicates} replicates")


def coarse_distribution(b: Binned, n_bins: int = 40, top: float | None = None) -> pd.DataFrame:
    """Each class's share of loans in `n_bins` equal bins up to `top` (the last one takes higher PDs too).

    `top` defaults to the bin edge at or above the 99.5 % quantile of all
    scores, so the picture shows where the loans are.
    """
    counts = b.bad + b.good
    if top is None:
        cum = np.cumsum(counts) / max(counts.sum(), 1)
        top = (int(np.searchsorted(cum, 0.995)) + 1) * b.width
    fine_edges = np.arange(b.bins) * b.width
    coarse = np.minimum((fine_edges / top * n_bins).astype(np.int64), n_bins - 1)
    bad = np.bincount(coarse, weights=b.bad, minlength=n_bins)
    good = np.bincount(coarse, weights=b.good, minlength=n_bins)
    return pd.DataFrame(
        {
            "pd_low": np.arange(n_bins) * top / n_bins,
            "pd_high": np.arange(1, n_bins + 1) * top / n_bins,
            "bad_share": bad / max(b.n_bad, 1),
            "good_share": good / max(b.n_good, 1),
        }
    )


def difference(a: Estimate, b: Estimate) -> dict[str, float | bool]:
    """a - b, its standard error treating the two as independent, and whether |a - b| exceeds it.

    Independence is an assumption: for two models scored on the same loans
    the errors are positively correlated, so this standard error is too
    large (the comparison is conservative).
    """
    se = math.sqrt(a.se**2 + b.se**2) if math.isfinite(a.se) and math.isfinite(b.se) else math.nan
    diff = a.value - b.value
    return {"difference": diff, "se": se, "beyond_se": bool(math.isfinite(se) and abs(diff) > se)}


def psi_reading(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if value < PSI_STABLE:
        return "stable"
    return "shifted: monitor" if value < PSI_UNSTABLE else "unstable: investigate"
