"""`fedcredit report RUN_DIR`: the model-risk report of a run, for a reviewer.

One self-contained `report.html` (plots embedded as base64 PNG, no external
files or scripts) plus the same plots as PNG files in `RUN_DIR/report/`:
training per round (pooled and per bank), ranking (ROC, KS), calibration
(reliability, Brier, expected calibration error), score distributions of
good and bad loans, gains and lift by decile, stability of each bank's score
distribution against the pooled one (PSI), the baselines of
`fedcredit baseline` when present, the run config, strategy, privacy figures
and the final model's SHA-256.

Hold-out sections need the run's hold-out set and stability needs its
simulated banks; a deployment run (holdout-eval=false, its own banks) has
neither, and those sections say so instead of failing. The command line is
`fedcredit.cli.report`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed (servers, CI)

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from fedcredit.federation.history import History, metric
from fedcredit.risk import curves as rm
from fedcredit.risk.baseline import LABELS, METRICS, table_rows
from fedcredit.risk.rundir import Run, RunDirError, holdout, load_final_model, simulated_banks, target_of

PNG_NAMES = ("rounds.png", "bank_auc.png", "roc.png", "ks.png", "calibration.png", "distributions.png", "psi.png")
BAD, GOOD = "#c0392b", "#2471a3"  # defaulted / repaid loans, the same colours in every plot
CALIBRATION_BINS = 10


@dataclass
class Scored:
    """The final model's scores of one set of loans with their labels."""

    scores: np.ndarray
    labels: np.ndarray


# --- plots ------------------------------------------------------------------------


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


# --- data from the run --------------------------------------------------------------


def _num(value: float | None) -> float:
    return math.nan if value is None else value


def rounds_table(history: History) -> pd.DataFrame:
    """One row per trained round: pooled validation and hold-out figures, banks trained, failures, seconds."""
    rows = []
    for entry in history.trained_rounds:
        rows.append(
            {
                "round": entry.round,
                "val_auc": _num(metric(entry.pooled, "auc")),
                "val_ks": _num(metric(entry.pooled, "ks")),
                "val_logloss": _num(metric(entry.pooled, "logloss")),
                "holdout_auc": _num(metric(entry.holdout, "auc")),
                "holdout_logloss": _num(metric(entry.holdout, "logloss")),
                "trained": len(entry.train.ok) if entry.train is not None else 0,
                "failed": ", ".join(f"{b}: {r}" for b, r in entry.failures.items()),
                "seconds": _num(entry.seconds),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "round",
            "val_auc",
            "val_ks",
            "val_logloss",
            "holdout_auc",
            "holdout_logloss",
            "trained",
            "failed",
            "seconds",
        ],
    )


def bank_auc_table(history: History) -> pd.DataFrame:
    """Rounds x banks: each bank's validation AUC (NaN where the bank did not report one)."""
    data: dict[str, dict[int, float]] = {}
    for entry in history.rounds:
        for bank, m in entry.bank_metrics.items():
            data.setdefault(bank, {})[entry.round] = _num(metric(m, "auc"))
    return pd.DataFrame(data).sort_index()


def has_holdout(run: Run) -> bool:
    return run.cfg.holdout_eval and any(e.holdout is not None for e in run.history.rounds)


def psi_table(model: Any, banks: list[Any], target: str) -> pd.DataFrame:
    """PSI of each bank's validation scores against all banks' validation scores pooled."""
    from fedcredit.core import metrics
    from fedcredit.core import model as mdl

    scored = {b.name: Scored(mdl.score(model, b.val), b.val[target].to_numpy().astype(bool)) for b in banks}
    pooled = np.concatenate([s.scores for s in scored.values()])
    rows = [
        {
            "bank": name,
            "rows": s.scores.size,
            "default_rate": float(s.labels.mean()),
            "mean_pd": float(s.scores.mean()),
            "auc": metrics.exact_auc(s.scores, s.labels),
            "psi": rm.psi(pooled, s.scores),
        }
        for name, s in scored.items()
    ]
    table = pd.DataFrame(rows)
    table["reading"] = [rm.psi_reading(v) for v in table["psi"]]
    return table


# --- HTML ------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f} %"


def html_table(header: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if i >= numeric_from else ""}">{_e(c)}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}"><figcaption>{_e(path.name)}</figcaption></figure>'


def note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>\n{body}\n</section>'


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; } th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { color: #777; font-size: .8em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .5em .8em; }
code, .mono { font-family: ui-monospace, monospace; font-size: .9em; word-break: break-all; }
nav a { margin-right: 1em; }
"""


def summary_section(run: Run) -> str:
    h = run.history
    recorded = h.model_final_sha256
    if run.model_path.is_file():
        actual = hashlib.sha256(run.model_path.read_bytes()).hexdigest()
        check = (
            "matches model-final.keras"
            if actual == recorded
            else f"DOES NOT MATCH model-final.keras (its SHA-256 is {actual})"
        )
    else:
        check = "model-final.keras is missing"
    rows = [
        ["run id", _fmt(h.run_id)],
        ["status", (h.status or "not recorded") + (f" ({h.reason})" if h.reason else "")],
        ["strategy", _strategy_text(run)],
        ["rounds", f"{len(h.trained_rounds)} of {run.cfg.num_server_rounds}"],
        ["banks", ", ".join(f"{b} ({_fmt(m.training_rows)} training rows)" for b, m in h.banks.items()) or "none"],
        ["best round (pooled validation AUC)", _fmt(h.best_round)],
        ["final model SHA-256", f"{recorded or 'not recorded'} ({check})"],
        ["schema SHA-256 (every bank's matched it)", h.schema_sha256 or "not recorded"],
        [
            "ignored config keys (not used by this strategy / privacy mode)",
            ", ".join(h.extra.get("ignored-keys") or []) or "none",
        ],
        ["run directory", str(run.dir)],
        ["seconds", _fmt(h.seconds, 2)],
    ]
    return section("summary", "Summary", html_table(["item", "value"], rows, numeric_from=2))


def _strategy_text(run: Run) -> str:
    """Strategy and privacy mechanism as recorded by the run (older runs: FedAvg)."""
    info = run.history.strategy
    if info is not None:
        privacy = info.privacy or "none"
        text = f"{info.name or 'fedavg'} (Flower {info.flower_class or '?'})"
        return text if privacy == "none" else f"{text}, differential privacy: {privacy}"
    return str(run.config.get("strategy.name") or "fedavg")


def baseline_section(run: Run) -> str:
    path = run.dir / "baseline.json"
    if not path.is_file():
        return section(
            "baseline",
            "Federated vs pooled and bank-alone baselines",
            note(f"Not computed: run `fedcredit baseline {run.dir}` and then this report again."),
        )
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        rows = [[name, n, *[_fmt(m.get(k)) for k in METRICS]] for name, n, m in table_rows(result)]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        return section(
            "baseline", "Federated vs pooled and bank-alone baselines", note(f"{path} cannot be read: {err}")
        )
    intro = (
        f"<p>All models scored on the run's hold-out set ({result['holdout']['rows']} loans). Pooled and "
        f"bank-alone models: same architecture, {result['epochs']} epochs, seed {result['seed']} "
        "(from <code>baseline.json</code>). Worst: per column, the lowest AUC/Gini/KS and highest Brier/log loss.</p>"
    )
    return section(
        "baseline",
        "Federated vs pooled and bank-alone baselines",
        intro + html_table(["model", "training rows", *[LABELS[k] for k in METRICS]], rows),
    )


def rounds_section(run: Run, out_dir: Path, pngs: list[Path]) -> str:
    rounds = rounds_table(run.history)
    if rounds.empty:
        return section("rounds", "Training rounds", note("No round finished: nothing to plot."))
    pngs.append(plot_rounds(rounds, out_dir))
    body = ""
    if run.history.extra.get("evaluation") == "folded":
        body += note(
            "Evaluation was folded into training: each round's validation figures are of that round's global "
            "model, computed by the banks on their validation rows at the start of the next round (the last "
            "round's in one final evaluation message). Same model, same rows: the same figures as a separate "
            "evaluation."
        )
    body += image(pngs[-1], "pooled AUC, KS and log loss per round")
    banks = bank_auc_table(run.history)
    if not banks.empty:
        pngs.append(plot_bank_auc(banks, rounds.set_index("round")["val_auc"], out_dir))
        body += image(pngs[-1], "each bank's AUC per round")
    rows = [
        [
            int(r["round"]),
            _fmt(r["val_auc"]),
            _fmt(r["val_ks"]),
            _fmt(r["val_logloss"]),
            _fmt(r["holdout_auc"]),
            int(r["trained"]),
            r["failed"] or "none",
            _fmt(r["seconds"], 1),
        ]
        for _, r in rounds.iterrows()
    ]
    body += html_table(
        [
            "round",
            "pooled val AUC",
            "pooled val KS",
            "pooled val log loss",
            "hold-out AUC",
            "banks trained",
            "failures",
            "seconds",
        ],
        rows,
    )
    if not banks.empty:
        body += "<p>Each bank's validation AUC:</p>" + html_table(
            ["round", *banks.columns], [[int(i), *[_fmt(v) for v in row]] for i, row in banks.iterrows()]
        )
    return section("rounds", "Training rounds", body)


def holdout_sections(run: Run, data: Scored | None, why_not: str, out_dir: Path, pngs: list[Path]) -> list[str]:
    """Hold-out performance, calibration, distributions and gains (or one note each why not)."""
    titles = {
        "holdout": "Hold-out performance of the final model (ROC, KS)",
        "calibration": "Calibration",
        "distributions": "Score distributions of good and bad loans",
        "gains": "Gains and lift by score decile",
    }
    if data is None:
        return [section(k, t, note(why_not)) for k, t in titles.items()]
    from fedcredit.core import metrics

    threshold = run.cfg.threshold
    m = metrics.exact(data.scores, data.labels, threshold)
    ece = rm.expected_calibration_error(data.scores, data.labels, CALIBRATION_BINS)
    rows = [
        ["loans (defaulted)", f"{m['num-examples']} ({_pct(m['default-rate'])})"],
        ["mean PD", _pct(m["mean-pd"])],
        ["AUC", _fmt(m["auc"])],
        ["Gini", _fmt(m["gini"])],
        ["KS", _fmt(m["ks"])],
        ["Brier score", _fmt(m["brier"])],
        ["log loss", _fmt(m["logloss"])],
        ["expected calibration error", _fmt(ece)],
        [
            f"at threshold {threshold:g}: accuracy / precision / recall",
            f"{_fmt(m['accuracy'], 3)} / {_fmt(m['precision'], 3)} / {_fmt(m['recall'], 3)}",
        ],
    ]
    pngs += [plot_roc(data, m["auc"], out_dir), plot_ks(data, out_dir)]
    perf = html_table(["metric", "value"], rows) + image(pngs[-2], "ROC curve") + image(pngs[-1], "KS curves")

    bins = rm.reliability_bins(data.scores, data.labels, CALIBRATION_BINS)
    pngs.append(plot_calibration(bins, m["brier"], ece, out_dir))
    calib = (
        f"<p>Hold-out loans in {len(bins)} equal-count bins of predicted PD. Brier score {_fmt(m['brier'])}; "
        f"expected calibration error (row-weighted mean |predicted - observed|) {_fmt(ece)}.</p>"
        + image(pngs[-1], "reliability plot")
        + html_table(
            ["bin", "PD range", "loans", "defaults", "mean predicted PD", "observed default rate", "95 % interval"],
            [
                [
                    int(b["bin"]),
                    f"{b['lower']:.3f} - {b['upper']:.3f}",
                    int(b["count"]),
                    int(b["bads"]),
                    _pct(b["mean_pd"]),
                    _pct(b["default_rate"]),
                    f"{_pct(b['default_rate_low95'])} - {_pct(b['default_rate_high95'])}",
                ]
                for _, b in bins.iterrows()
            ],
        )
    )

    pngs.append(plot_distributions(data, threshold, out_dir))
    dist = image(pngs[-1], "score distributions")

    g = rm.gains_table(data.scores, data.labels)
    gains = (
        "<p>Hold-out loans ranked by predicted PD, riskiest first, in ten equal groups. Capture: share of all "
        "defaults in this and riskier deciles. Lift: the decile's default rate over the overall rate.</p>"
        + html_table(
            [
                "decile",
                "PD range",
                "loans",
                "defaults",
                "default rate",
                "capture",
                "repaid loans so far",
                "KS",
                "lift",
                "cumulative lift",
            ],
            [
                [
                    int(r["decile"]),
                    f"{r['min_pd']:.3f} - {r['max_pd']:.3f}",
                    int(r["rows"]),
                    int(r["bads"]),
                    _pct(r["default_rate"]),
                    _pct(r["capture"]),
                    _pct(r["cum_goods"]),
                    _fmt(r["ks"], 3),
                    _fmt(r["lift"], 2),
                    _fmt(r["cum_lift"], 2),
                ]
                for _, r in g.iterrows()
            ],
        )
    )
    bodies = {"holdout": perf, "calibration": calib, "distributions": dist, "gains": gains}
    return [section(k, t, bodies[k]) for k, t in titles.items()]


def stability_section(table: pd.DataFrame | None, why_not: str, out_dir: Path, pngs: list[Path]) -> str:
    title = "Stability across banks (population stability index)"
    if table is None:
        return section("stability", title, note(why_not))
    pngs.append(plot_psi(table, out_dir))
    intro = (
        "<p>Each simulated bank's validation rows scored with the final model, against all banks' validation "
        "rows pooled, on decile bins of the pooled scores. PSI below 0.1: stable; 0.1 to 0.25: shifted, "
        "monitor; above 0.25: unstable, investigate.</p>"
    )
    rows = [
        [
            r["bank"],
            int(r["rows"]),
            _pct(r["default_rate"]),
            _pct(r["mean_pd"]),
            _fmt(r["auc"]),
            _fmt(r["psi"]),
            r["reading"],
        ]
        for _, r in table.iterrows()
    ]
    return section(
        "stability",
        title,
        intro
        + image(pngs[-1], "PSI per bank")
        + html_table(["bank", "validation loans", "default rate", "mean PD", "AUC", "PSI", "reading"], rows),
    )


def config_section(run: Run) -> str:
    rows = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in run.config.items()]
    return section("config", "Run configuration", html_table(["key", "value"], rows, numeric_from=2))


def privacy_section(run: Run) -> str:
    privacy = run.history.privacy
    secure = note(
        "Secure aggregation (SecAgg+) was on: the coordinator received only sums of the banks' statistics, "
        "updates and evaluation summaries, so the per-bank columns of this report are empty by design."
        if run.history.config.get("privacy.secure-aggregation")
        else "Secure aggregation was off: the coordinator saw each bank's statistics, updates and summaries."
    )
    if not privacy:
        return section("privacy", "Privacy", secure + note("No differential-privacy figures recorded for this run."))
    rows = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in privacy.items()]
    return section("privacy", "Privacy", secure + html_table(["item", "value"], rows, numeric_from=2))


def personalisation_section(run: Run) -> str:
    """Per bank: global, fine-tuned and local-only model on its own rows, and the one it kept."""
    record = run.history.extra.get("personalisation")
    title = "Personalisation"
    if not record:
        return section(
            "personalisation",
            title,
            note("Personalisation was off (personalize.epochs = 0) or the run stopped before it."),
        )
    settings = record.get("settings", {})
    text = note(
        f"After the last round each bank fine-tuned the final global model on its own training rows "
        f"({settings.get('epochs')} epoch(s), layers: {settings.get('layers')}, learning rate "
        f"{settings.get('learning-rate')}), trained a local-only model on its rows alone, and kept the best of the "
        "three by its validation AUC. The kept models stay at the banks; these are their own figures."
    )
    if record.get("secure"):
        counts = record.get("kept-counts") or {}
        text += note(
            "Secure mode: the coordinator saw only sums, so there is no per-bank table (each bank's figures are in "
            "its own log). Banks that kept each model: "
            + (", ".join(f"{m}: {n}" for m, n in counts.items()) or record.get("not-summed", "none"))
            + "."
        )
    candidates = ("global", "personalised", "local-only")
    header = [
        "bank",
        "kept",
        *(f"val AUC {c}" for c in candidates),
        *(f"val KS {c}" for c in candidates),
        *(f"val Brier {c}" for c in candidates),
    ]
    rows = []
    for bank, r in (record.get("banks") or {}).items():
        val = r.get("validation", {})
        rows.append(
            [bank, r.get("kept"), *(_fmt(val.get(c, {}).get(m)) for m in ("auc", "ks", "brier") for c in candidates)]
        )
    body = text + (html_table(header, rows, numeric_from=2) if rows else "")
    holdout_rows = [
        [bank, r.get("kept"), *(_fmt(r["holdout"].get(c, {}).get("auc")) for c in candidates)]
        for bank, r in (record.get("banks") or {}).items()
        if r.get("holdout")
    ]
    if holdout_rows:
        body += "<h3>Hold-out loans of each bank's own region</h3>" + html_table(
            ["bank", "kept", *(f"AUC {c}" for c in candidates)], holdout_rows, numeric_from=2
        )
    pooled = record.get("pooled-validation") or {}
    if pooled:
        body += "<h3>Pooled validation figures</h3>" + html_table(
            ["models", "AUC", "KS", "Brier"],
            [[name, _fmt(m.get("auc")), _fmt(m.get("ks")), _fmt(m.get("brier"))] for name, m in pooled.items()],
        )
    if record.get("failed"):
        body += note("Banks that did not personalise: " + "; ".join(f"{b}: {w}" for b, w in record["failed"].items()))
    return section("personalisation", title, body)


def _try(what: Callable[[], Any]) -> tuple[Any, str]:
    """(value, '') or (None, why not) for a section that may not be possible for this run."""
    try:
        return what(), ""
    except RunDirError as err:
        return None, str(err)


def build(run: Run, out_dir: Path) -> tuple[str, list[Path]]:
    """(HTML text, PNG files written)."""
    from fedcredit.core import model as mdl

    out_dir.mkdir(exist_ok=True)
    for name in PNG_NAMES:  # a previous report's plots must not linger
        (out_dir / name).unlink(missing_ok=True)
    pngs: list[Path] = []
    target, no_model = _try(lambda: target_of(run))
    model = None
    if target is not None:
        model, no_model = _try(lambda: load_final_model(run))

    data, why_not = None, no_model
    if model is not None and not has_holdout(run):
        why_not = (
            "No hold-out set in this run (holdout-eval=false, as in a deployment, where the coordinator holds "
            "no data): hold-out figures are not available."
        )
    elif model is not None:
        test, why_not = _try(lambda: holdout(run))
        if test is not None:
            data = Scored(mdl.score(model, test), test[target].to_numpy().astype(bool))

    psi, why_not_psi = None, no_model
    if model is not None:
        banks, why_not_psi = _try(lambda: simulated_banks(run))
        if banks is not None:
            psi = psi_table(model, banks, target)
        else:
            why_not_psi = f"Not available: {why_not_psi}"

    title = f"Model-risk report: run {run.history.run_id or run.dir.name}"
    nav = " ".join(
        f'<a href="#{k}">{k}</a>'
        for k in (
            "summary",
            "baseline",
            "rounds",
            "holdout",
            "calibration",
            "distributions",
            "gains",
            "stability",
            "personalisation",
            "config",
            "privacy",
        )
    )
    parts = [
        summary_section(run),
        baseline_section(run),
        rounds_section(run, out_dir, pngs),
        *holdout_sections(run, data, why_not, out_dir, pngs),
        stability_section(psi, why_not_psi, out_dir, pngs),
        personalisation_section(run),
        config_section(run),
        privacy_section(run),
    ]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n<h1>{_e(title)}</h1>\n"
        f"<p>Generated {_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} by <code>fedcredit report</code> from "
        f"<code>{_e(run.dir)}</code>.</p><nav>{nav}</nav>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    return page, pngs


def write(run: Run) -> tuple[Path, int, list[Path]]:
    """Build the report of `run` into its directory: (report.html, its size in bytes, PNG files)."""
    page, pngs = build(run, run.dir / "report")
    out = run.dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a report
    return out, len(page.encode("utf-8")), pngs
