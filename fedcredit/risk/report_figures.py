"""The figures of the model-risk report: matplotlib only, one PNG a function.

Each `plot_*` takes the data of one figure (tables of `report_tables`, or
scores with labels), saves it as a PNG in `out_dir` under its own name (one
of PNG_NAMES) and returns the path. The colours of defaulted and repaid
loans are the same in every figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed (servers, CI)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from fedcredit.risk import curves as rm
from fedcredit.risk.report_tables import Scored

PNG_NAMES = ("rounds.png", "bank_auc.png", "roc.png", "ks.png", "calibration.png", "distributions.png", "psi.png")
BAD, GOOD = "#c0392b", "#2471a3"  # defaulted / repaid loans, the same colours in every plot


def _figure(width: float = 7.5, height: float = 4.3) -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    return fig, ax


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    path = out_dir / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _round_axis(ax: Any) -> None:
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def plot_rounds(rounds: pd.DataFrame, out_dir: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.3), layout="constrained")
    left.plot(rounds["round"], rounds["val_auc"], "o-", color="#1f618d", label="AUC, pooled validation")
    left.plot(rounds["round"], rounds["val_ks"], "s-", color="#b9770e", label="KS, pooled validation")
    if rounds["holdout_auc"].notna().any():
        left.plot(rounds["round"], rounds["holdout_auc"], "o--", color="#1f618d", alpha=0.55, label="AUC, hold-out")
    left.set_title("Ranking per round")
    left.set_ylabel("AUC / KS")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8)
    _round_axis(left)
    right.plot(rounds["round"], rounds["val_logloss"], "o-", color="#6c3483", label="pooled validation")
    if rounds["holdout_logloss"].notna().any():
        right.plot(rounds["round"], rounds["holdout_logloss"], "o--", color="#6c3483", alpha=0.55, label="hold-out")
    right.set_title("Log loss per round (lower is better)")
    right.set_ylabel("log loss")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8)
    _round_axis(right)
    return _save(fig, out_dir, "rounds.png")


def plot_bank_auc(bank_auc: pd.DataFrame, pooled: pd.Series, out_dir: Path) -> Path:
    many = bank_auc.shape[1] > 12
    fig, ax = _figure(10.5 if many else 8.5 if bank_auc.shape[1] > 4 else 7.5, 5.2 if many else 4.3)
    styles = ("-", "--", "-.", ":")  # the colour cycle has ten colours: more banks also differ in line style
    for i, bank in enumerate(bank_auc.columns):
        ax.plot(bank_auc.index, bank_auc[bank], marker="o", ms=4, ls=styles[(i // 10) % 4], label=bank)
    ax.plot(pooled.index, pooled.to_numpy(), color="black", ls="--", lw=2.5, label="pooled")
    ax.set_title("Each bank's validation AUC per round")
    ax.set_ylabel("AUC on the bank's validation rows")
    _round_axis(ax)
    ax.legend(
        title="bank", fontsize=7 if many else 8, ncol=2 if many else 1, loc="center left", bbox_to_anchor=(1.01, 0.5)
    )
    return _save(fig, out_dir, "bank_auc.png")


def plot_roc(data: Scored, auc: float, out_dir: Path) -> Path:
    fpr, tpr, _ = rm.roc_curve(data.scores, data.labels)
    fig, ax = _figure(5.6, 5.0)
    ax.plot(fpr, tpr, color="#1f618d", lw=2, label=f"final model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="random (AUC 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (share of repaid loans flagged)")
    ax.set_ylabel("true positive rate (share of defaults flagged)")
    ax.set_title("ROC curve, hold-out set")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, "roc.png")


def plot_ks(data: Scored, out_dir: Path) -> Path:
    curve = rm.ks_curve(data.scores, data.labels)
    fig, ax = _figure()
    ax.step(curve.thresholds, curve.cdf_good, where="post", color=GOOD, label="repaid loans")
    ax.step(curve.thresholds, curve.cdf_bad, where="post", color=BAD, label="defaulted loans")
    i = int(np.searchsorted(curve.thresholds, curve.at))
    ax.vlines(
        curve.at,
        curve.cdf_bad[i],
        curve.cdf_good[i],
        color="black",
        lw=1.5,
        label=f"KS = {curve.ks:.3f} at PD {curve.at:.3f}",
    )
    ax.set_xlim(0, float(np.quantile(data.scores, 0.995)))
    ax.set_ylim(0, 1.01)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("predicted probability of default (threshold)")
    ax.set_ylabel("share of loans scoring at or below")
    ax.set_title("KS: cumulative score distributions, hold-out set")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, "ks.png")


def plot_calibration(bins: pd.DataFrame, brier: float, ece: float, out_dir: Path) -> Path:
    """Reliability plot on square-root axes: most deciles of a credit model sit below a PD of 5 %,
    where linear axes would pile them on top of each other; the diagonal stays straight."""
    fig, ax = _figure(6.2, 5.4)
    top = 1.1 * float(max(bins["mean_pd"].max(), bins["default_rate_high95"].max()))
    for axis in ("x", "y"):
        getattr(ax, f"set_{axis}scale")("function", functions=(np.sqrt, np.square))
    ax.plot([0, top], [0, top], ":", color="grey", label="perfect calibration")
    err = np.vstack(
        [bins["default_rate"] - bins["default_rate_low95"], bins["default_rate_high95"] - bins["default_rate"]]
    )
    ax.errorbar(
        bins["mean_pd"],
        bins["default_rate"],
        yerr=err,
        fmt="o",
        color="#1f618d",
        ecolor="#7fb3d5",
        capsize=2,
        label="score decile, 95 % interval",
    )
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ticks = [t for t in (0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0) if t <= top]
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel("mean predicted PD in the decile (square-root scale)")
    ax.set_ylabel("observed default rate in the decile (square-root scale)")
    ax.set_title(f"Calibration, hold-out set\nBrier {brier:.4f}, expected calibration error {ece:.4f}")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, "calibration.png")


def plot_distributions(data: Scored, threshold: float, out_dir: Path) -> Path:
    fig, ax = _figure()
    top = float(np.quantile(data.scores, 0.995))
    edges = np.linspace(0, max(top, threshold * 1.1), 41)
    for mask, colour, name in ((~data.labels, GOOD, "repaid"), (data.labels, BAD, "defaulted")):
        weights = np.full(int(mask.sum()), 1.0 / max(int(mask.sum()), 1))
        ax.hist(
            np.minimum(data.scores[mask], edges[-1]),
            bins=edges,
            weights=weights,
            histtype="stepfilled",
            alpha=0.35,
            color=colour,
            edgecolor=colour,
            lw=1.5,
            label=f"{name} loans (n = {int(mask.sum())})",
        )
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"decision threshold {threshold:g}")
    ax.set_ylim(0, 1.35 * ax.get_ylim()[1])  # headroom: the legend never covers a bar
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("predicted probability of default (last bin includes higher PDs)")
    ax.set_ylabel("share of the class's loans")
    ax.set_title("Score distributions of repaid and defaulted loans, hold-out set")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, "distributions.png")


def plot_psi(table: pd.DataFrame, out_dir: Path) -> Path:
    fig, ax = _figure(min(max(6.0, 1.0 + 0.8 * len(table)), 12.0), 4.3)
    colours = [
        "#27ae60" if v < rm.PSI_STABLE else "#f39c12" if v < rm.PSI_UNSTABLE else "#c0392b" for v in table["psi"]
    ]
    ax.bar(table["bank"], table["psi"], color=colours)
    ax.axhline(rm.PSI_STABLE, color="#f39c12", ls="--", lw=1, label=f"{rm.PSI_STABLE}: shifted, monitor")
    ax.axhline(rm.PSI_UNSTABLE, color="#c0392b", ls="--", lw=1, label=f"{rm.PSI_UNSTABLE}: unstable, investigate")
    ax.set_ylim(0, max(rm.PSI_UNSTABLE * 1.3, float(table["psi"].max()) * 1.4))
    ax.set_xlabel("bank")
    ax.set_ylabel("PSI against the pooled scores")
    ax.set_title("Score stability: each bank's validation scores vs all banks' pooled")
    ax.legend(loc="upper right", fontsize=8)
    ax.tick_params(axis="x", labelrotation=30 if len(table) > 4 else 0, labelsize=8 if len(table) > 12 else 10)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_dir, "psi.png")
