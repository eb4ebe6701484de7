"""The sections of the model-risk report, each written from tables and figure paths.

Each `*_section` takes what one section shows (the run's records, tables of
`report_tables`, PNGs that `report_figures` saved) and returns that
section's HTML; a section the run cannot support says why. Nothing here
computes a figure or draws one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from fedcredit.risk.baseline import LABELS, METRICS
from fedcredit.risk.report_html import fmt, html_table, image, note, pct, section
from fedcredit.risk.report_tables import CANDIDATES, HoldoutTables, personalisation_rows
from fedcredit.risk.rundir import Run

HOLDOUT_TITLES = {
    "holdout": "Hold-out performance of the final model (ROC, KS)",
    "calibration": "Calibration",
    "distributions": "Score distributions of good and bad loans",
    "gains": "Gains and lift by score decile",
}
BASELINE_TITLE = "Federated vs pooled and bank-alone baselines"
STABILITY_TITLE = "Stability across banks (population stability index)"


def summary_section(run: Run, model_sha256: str | None) -> str:
    """`model_sha256`: the SHA-256 of the run's model-final.keras as it is now (None: the file is missing)."""
    h = run.history
    recorded = h.model_final_sha256
    if model_sha256 is not None:
        check = (
            "matches model-final.keras"
            if model_sha256 == recorded
            else f"DOES NOT MATCH model-final.keras (its SHA-256 is {model_sha256})"
        )
    else:
        check = "model-final.keras is missing"
    rows = [
        ["run id", fmt(h.run_id)],
        ["status", (h.status or "not recorded") + (f" ({h.reason})" if h.reason else "")],
        ["strategy", _strategy_text(run)],
        ["rounds", f"{len(h.trained_rounds)} of {run.cfg.num_server_rounds}"],
        ["banks", ", ".join(f"{b} ({fmt(m.training_rows)} training rows)" for b, m in h.banks.items()) or "none"],
        [
            "best round (highest pooled validation AUC, with any one bank left out too; else the latest)",
            fmt(h.best_round),
        ],
        ["final model SHA-256", f"{recorded or 'not recorded'} ({check})"],
        ["schema SHA-256 (every bank's matched it)", h.schema_sha256 or "not recorded"],
        [
            "ignored config keys (not used by this strategy / privacy mode)",
            ", ".join(h.ignored_keys or []) or "none",
        ],
        ["run directory", str(run.dir)],
        ["seconds", fmt(h.seconds, 2)],
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


def baseline_missing(run: Run) -> str:
    return section(
        "baseline",
        BASELINE_TITLE,
        note(f"Not computed: run `fedcredit baseline {run.dir}` and then this report again."),
    )


def baseline_unreadable(path: Path, err: Exception) -> str:
    return section("baseline", BASELINE_TITLE, note(f"{path} cannot be read: {err}"))


def baseline_section(result: dict[str, Any], rows: list[list[Any]]) -> str:
    """`result`: baseline.json; `rows`: `report_tables.baseline_rows` of it."""
    intro = (
        f"<p>All models scored on the run's hold-out set ({result['holdout']['rows']} loans). Pooled and "
        f"bank-alone models: same architecture, {result['epochs']} epochs, seed {result['seed']} "
        "(from <code>baseline.json</code>). Worst: per column, the lowest AUC/Gini/KS and highest Brier/log loss.</p>"
    )
    return section(
        "baseline",
        BASELINE_TITLE,
        intro
        + html_table(
            ["model", "training rows", *[LABELS[k] for k in METRICS]],
            [[name, n, *[fmt(v) for v in values]] for name, n, *values in rows],
        ),
    )


def no_rounds_section() -> str:
    return section("rounds", "Training rounds", note("No round finished: nothing to plot."))


def rounds_section(
    run: Run, rounds: pd.DataFrame, banks: pd.DataFrame, rounds_png: Path, banks_png: Path | None
) -> str:
    """`rounds`, `banks`: `report_tables.rounds_table` and `bank_auc_table`; `banks_png`: None without bank figures."""
    body = ""
    if run.history.evaluation == "folded":
        body += note(
            "Evaluation was folded into training: each round's validation figures are of that round's global "
            "model, computed by the banks on their validation rows at the start of the next round (the last "
            "round's in one final evaluation message). Same model, same rows: the same figures as a separate "
            "evaluation."
        )
    body += image(rounds_png, "pooled AUC, KS and log loss per round")
    if banks_png is not None:
        body += image(banks_png, "each bank's AUC per round")
    rows = [
        [
            int(r["round"]),
            fmt(r["val_auc"]),
            fmt(r["val_ks"]),
            fmt(r["val_logloss"]),
            fmt(r["holdout_auc"]),
            int(r["trained"]),
            r["failed"] or "none",
            fmt(r["seconds"], 1),
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
            ["round", *banks.columns], [[int(i), *[fmt(v) for v in row]] for i, row in banks.iterrows()]
        )
    return section("rounds", "Training rounds", body)


def holdout_notes(why_not: str) -> list[str]:
    """The four hold-out sections when there are no hold-out scores: each says why."""
    return [section(k, t, note(why_not)) for k, t in HOLDOUT_TITLES.items()]


def performance_section(t: HoldoutTables, threshold: float, roc_png: Path, ks_png: Path) -> str:
    m = t.metrics
    rows = [
        ["loans (defaulted)", f"{m['num-examples']} ({pct(m['default-rate'])})"],
        ["mean PD", pct(m["mean-pd"])],
        ["AUC", fmt(m["auc"])],
        ["Gini", fmt(m["gini"])],
        ["KS", fmt(m["ks"])],
        ["Brier score", fmt(m["brier"])],
        ["log loss", fmt(m["logloss"])],
        ["expected calibration error", fmt(t.ece)],
        [
            f"at threshold {threshold:g}: accuracy / precision / recall",
            f"{fmt(m['accuracy'], 3)} / {fmt(m['precision'], 3)} / {fmt(m['recall'], 3)}",
        ],
    ]
    body = html_table(["metric", "value"], rows) + image(roc_png, "ROC curve") + image(ks_png, "KS curves")
    return section("holdout", HOLDOUT_TITLES["holdout"], body)


def calibration_section(t: HoldoutTables, png: Path) -> str:
    bins = t.bins
    body = (
        f"<p>Hold-out loans in {len(bins)} equal-count bins of predicted PD. Brier score {fmt(t.metrics['brier'])}; "
        f"expected calibration error (row-weighted mean |predicted - observed|) {fmt(t.ece)}.</p>"
        + image(png, "reliability plot")
        + html_table(
            ["bin", "PD range", "loans", "defaults", "mean predicted PD", "observed default rate", "95 % interval"],
            [
                [
                    int(b["bin"]),
                    f"{b['lower']:.3f} - {b['upper']:.3f}",
                    int(b["count"]),
                    int(b["bads"]),
                    pct(b["mean_pd"]),
                    pct(b["default_rate"]),
                    f"{pct(b['default_rate_low95'])} - {pct(b['default_rate_high95'])}",
                ]
                for _, b in bins.iterrows()
            ],
        )
    )
    return section("calibration", HOLDOUT_TITLES["calibration"], body)


def distributions_section(png: Path) -> str:
    return section("distributions", HOLDOUT_TITLES["distributions"], image(png, "score distributions"))


def gains_section(g: pd.DataFrame) -> str:
    """`g`: `curves.gains_table` of the hold-out scores."""
    body = (
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
                    pct(r["default_rate"]),
                    pct(r["capture"]),
                    pct(r["cum_goods"]),
                    fmt(r["ks"], 3),
                    fmt(r["lift"], 2),
                    fmt(r["cum_lift"], 2),
                ]
                for _, r in g.iterrows()
            ],
        )
    )
    return section("gains", HOLDOUT_TITLES["gains"], body)


def no_stability_section(why_not: str) -> str:
    return section("stability", STABILITY_TITLE, note(why_not))


def stability_section(table: pd.DataFrame, png: Path) -> str:
    """`table`: `report_tables.psi_table`; `png`: its plot."""
    intro = (
        "<p>Each simulated bank's validation rows scored with the final model, against all banks' validation "
        "rows pooled, on decile bins of the pooled scores. PSI below 0.1: stable; 0.1 to 0.25: shifted, "
        "monitor; above 0.25: unstable, investigate.</p>"
    )
    rows = [
        [
            r["bank"],
            int(r["rows"]),
            pct(r["default_rate"]),
            pct(r["mean_pd"]),
            fmt(r["auc"]),
            fmt(r["psi"]),
            r["reading"],
        ]
        for _, r in table.iterrows()
    ]
    return section(
        "stability",
        STABILITY_TITLE,
        intro
        + image(png, "PSI per bank")
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
    record = run.history.personalisation
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
    header = [
        "bank",
        "kept",
        *(f"val AUC {c}" for c in CANDIDATES),
        *(f"val KS {c}" for c in CANDIDATES),
        *(f"val Brier {c}" for c in CANDIDATES),
    ]
    t = personalisation_rows(record)
    rows = [[bank, kept, *map(fmt, values)] for bank, kept, *values in t.validation]
    body = text + (html_table(header, rows, numeric_from=2) if rows else "")
    if t.holdout:
        body += "<h3>Hold-out loans of each bank's own region</h3>" + html_table(
            ["bank", "kept", *(f"AUC {c}" for c in CANDIDATES)],
            [[bank, kept, *map(fmt, values)] for bank, kept, *values in t.holdout],
            numeric_from=2,
        )
    if t.pooled:
        body += "<h3>Pooled validation figures</h3>" + html_table(
            ["models", "AUC", "KS", "Brier"], [[name, *map(fmt, values)] for name, *values in t.pooled]
        )
    if record.get("failed"):
        body += note("Banks that did not personalise: " + "; ".join(f"{b}: {w}" for b, w in record["failed"].items()))
    return section("personalisation", title, body)
