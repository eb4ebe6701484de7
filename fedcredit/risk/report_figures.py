"""The figures of the model-risk report: matplotlib only, one PNG a function.

Each `plot_*` takes the data of one figure (tables of `report_tables`, parts
of the validation pack of `pack`, or binned scores), saves it as a PNG in `out_dir` under its own name (one
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

from fedcredit.core.binned import PSI_STABLE, PSI_UNSTABLE, Binned
from fedcredit.risk.monotone_figures import PNG_NAME as PD_PNG

PNG_NAMES = (
    "rounds.png",
    "bank_auc.png",
    "roc.png",
    "ks.png",
    "calibration.png",
    "distributions.png",
    "psi.png",
    PD_PNG,  # drawn by `monotone_figures`
)
BAD, GOOD = "#c0392b", "#2471a3"  # defaulted / repaid loans, the same colours in every plot
LINE = "#1f618d"


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


def plot_rounds(rounds: pd.DataFrame, out_dir: Path, intervals: list[dict[str, Any]] | None = None) -> Path:
    """AUC/KS and log loss per round; `intervals`: the pack's per-round AUCs, drawn as 95 % bands."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.3), layout="constrained")
    for key, alpha in (("validation-auc", 0.18), ("holdout-auc", 0.1)):
        points = [(r["round"], r[key]["low"], r[key]["high"]) for r in intervals or [] if r["round"] > 0]
        points = [p for p in points if p[1] is not None and np.isfinite(p[1])]
        if points:
            x, low, high = zip(*points)
            left.fill_between(x, low, high, color="#1f618d", alpha=alpha, lw=0, label=f"95 % interval, {key[:-4]}")
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


def plot_roc(packs: dict[str, dict[str, Any]], out_dir: Path) -> Path:
    """ROC of each set of loans (pooled validation, hold-out) from the pack's ROC points."""
    fig, ax = _figure(5.8, 5.2)
    for (label, pack), style in zip(packs.items(), ("-", "--")):
        auc = pack["auc"]
        ax.plot(
            pack["roc"]["fpr"],
            pack["roc"]["tpr"],
            style,
            color=LINE,
            lw=2,
            label=f"{label}: AUC {auc['value']:.3f} ({auc['low']:.3f} - {auc['high']:.3f})",
        )
    ax.plot([0, 1], [0, 1], ":", color="grey", label="random (AUC 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (share of repaid loans flagged)")
    ax.set_ylabel("true positive rate (share of defaults flagged)")
    ax.set_title("ROC curve of the final model (95 % DeLong interval)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, "roc.png")


def _top(b: Binned, quantile: float = 0.995) -> float:
    counts = b.bad + b.good
    cum = np.cumsum(counts) / max(int(counts.sum()), 1)
    return (int(np.searchsorted(cum, quantile)) + 1) * b.width


def plot_ks(b: Binned, pack: dict[str, Any], label: str, out_dir: Path) -> Path:
    """Cumulative share of each class scoring below each PD: KS is the widest gap."""
    edges = np.arange(1, b.bins + 1) * b.width
    cdf_bad, cdf_good = np.cumsum(b.bad) / max(b.n_bad, 1), np.cumsum(b.good) / max(b.n_good, 1)
    fig, ax = _figure()
    ax.step(edges, cdf_good, where="post", color=GOOD, label=f"repaid loans (n = {b.n_good})")
    ax.step(edges, cdf_bad, where="post", color=BAD, label=f"defaulted loans (n = {b.n_bad})")
    ks = pack["ks"]
    if ks["at-pd"] is not None:
        i = int(round(ks["at-pd"] / b.width)) - 1
        ax.vlines(
            ks["at-pd"],
            cdf_bad[i],
            cdf_good[i],
            color="black",
            lw=1.5,
            label=f"KS = {ks['value']:.3f} ({ks['low']:.3f} - {ks['high']:.3f}) at PD {ks['at-pd']:.3f}",
        )
    ax.set_xlim(0, _top(b))
    ax.set_ylim(0, 1.01)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("predicted probability of default")
    ax.set_ylabel("share of loans scoring below")
    ax.set_title(f"KS: cumulative score distributions, {label}")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, "ks.png")


def plot_calibration(packs: dict[str, dict[str, Any]], out_dir: Path) -> Path:
    """Observed default rate against mean PD per band, with Wilson intervals, on square-root axes.

    Most bands of a credit model sit below a PD of 5 %, where linear axes
    would pile them on top of each other; the diagonal stays straight.
    """
    fig, ax = _figure(6.4, 5.6)
    bands = {label: pd.DataFrame(pack["calibration"]) for label, pack in packs.items() if pack["calibration"]}
    top = 1.1 * max(float(max(t["mean_pd"].max(), t["high95"].max())) for t in bands.values())
    for axis in ("x", "y"):
        getattr(ax, f"set_{axis}scale")("function", functions=(np.sqrt, np.square))
    ax.plot([0, top], [0, top], ":", color="grey", label="perfect calibration")
    for (label, t), (marker, colour) in zip(bands.items(), (("o", LINE), ("s", "#b9770e"))):
        err = np.maximum(np.vstack([t["default_rate"] - t["low95"], t["high95"] - t["default_rate"]]), 0)
        ax.errorbar(
            t["mean_pd"],
            t["default_rate"],
            yerr=err,
            fmt=marker,
            color=colour,
            ecolor=colour,
            alpha=0.85,
            capsize=3,
            label=f"{label}: PD band, 95 % interval",
        )
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ticks = [t for t in (0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0) if t <= top]
    if top > 0.2:  # 1 % and 2 % would overlap
        ticks.remove(0.01)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("mean predicted PD in the band (square-root scale)")
    ax.set_ylabel("observed default rate in the band (square-root scale)")
    ax.set_title("Calibration by PD band (~equal numbers of loans)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, "calibration.png")


def plot_distributions(packs: dict[str, dict[str, Any]], threshold: float, out_dir: Path) -> Path:
    """Each class's share of loans per PD bin, one panel per set of loans."""
    fig, axes = plt.subplots(1, len(packs), figsize=(6.2 * len(packs), 4.3), layout="constrained", squeeze=False)
    for ax, (label, pack) in zip(axes[0], packs.items()):
        t = pd.DataFrame(pack["distribution"])
        width = float(t["pd_high"].iloc[0] - t["pd_low"].iloc[0])
        for column, colour, name in (("good_share", GOOD, "repaid"), ("bad_share", BAD, "defaulted")):
            ax.bar(t["pd_low"], t[column], width=width, align="edge", alpha=0.45, color=colour, edgecolor=colour)
            ax.step(t["pd_low"], t[column], where="post", color=colour, lw=1.2, label=f"{name} loans")
        ax.axvline(threshold, color="black", ls="--", lw=1, label=f"decision threshold {threshold:g}")
        ax.set_xlim(0, float(t["pd_high"].iloc[-1]))
        ax.set_ylim(0, 1.3 * float(max(t["good_share"].max(), t["bad_share"].max(), 1e-9)))
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("predicted probability of default (last bar includes higher PDs)")
        ax.set_ylabel("share of the class's loans")
        ax.set_title(f"{label} ({pack['rows']['loans']} loans)", fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    return _save(fig, out_dir, "distributions.png")


def plot_psi(banks: list[dict[str, Any]], out_dir: Path) -> Path:
    """Each bank's score PSI against the other banks, with its bootstrap interval and the no-shift level."""
    rows = [b for b in banks if b.get("psi")]
    fig, ax = _figure(min(max(6.0, 1.0 + 0.8 * len(rows)), 12.0), 4.3)
    values = np.array([b["psi"]["value"] for b in rows])
    colours = ["#27ae60" if v < PSI_STABLE else "#f39c12" if v < PSI_UNSTABLE else "#c0392b" for v in values]
    x = np.arange(len(rows))
    ax.bar(x, values, color=colours, label="PSI")
    err = np.vstack(
        [
            np.maximum(values - [b["psi"]["low"] for b in rows], 0),
            np.maximum([b["psi"]["high"] for b in rows] - values, 0),
        ]
    )
    ax.errorbar(x, values, yerr=err, fmt="none", ecolor="black", capsize=4, label="95 % bootstrap interval")
    ax.scatter(x, [b["psi"]["no-shift-95"] for b in rows], marker="_", s=400, color="#555", label="no-shift 95 % level")
    ax.axhline(PSI_STABLE, color="#f39c12", ls="--", lw=1, label=f"{PSI_STABLE}: shifted, monitor")
    ax.axhline(PSI_UNSTABLE, color="#c0392b", ls="--", lw=1, label=f"{PSI_UNSTABLE}: unstable, investigate")
    high = max([PSI_UNSTABLE * 1.3, *(1.15 * b["psi"]["high"] for b in rows)])
    ax.set_ylim(0, high)
    ax.set_xticks(x, [b["bank"] for b in rows])
    ax.set_xlabel("bank")
    ax.set_ylabel("PSI of the bank's validation scores")
    ax.set_title("Score stability: each bank vs the other banks")
    ax.legend(loc="upper right", fontsize=7)
    ax.tick_params(axis="x", labelrotation=30 if len(rows) > 4 else 0, labelsize=8 if len(rows) > 12 else 10)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_dir, "psi.png")
