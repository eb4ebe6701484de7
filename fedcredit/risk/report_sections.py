"""The sections of the model-risk report, each written from tables and figure paths.

Each `*_section` takes what one section shows (the run's records, tables of
`report_tables`, parts of the validation pack, PNGs that `report_figures`
saved) and returns that section's HTML; a section the run cannot support
says why. Nothing here computes a figure or draws one. The validation
pack's own sections are `report_validation`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from fedcredit.risk.baseline import LABELS, METRICS
from fedcredit.risk.report_html import ci, fmt, html_table, image, note, section
from fedcredit.risk.report_tables import CANDIDATES, personalisation_rows
from fedcredit.risk.rundir import Run

BASELINE_TITLE = "Federated vs pooled and bank-alone baselines"


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
            "consortium roster SHA-256 (every reply was signed by a bank on it)",
            h.roster_sha256 or "none: replies were not signed (no roster in the app)",
        ],
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
    table = html_table(
        ["model", "training rows", *[LABELS[k] for k in METRICS]],
        [[name, n, *[fmt(v) for v in values]] for name, n, *values in rows],
    )
    compared = [
        (name, m)
        for name, m in [("pooled (all banks' rows)", result["pooled"]), *bank_alone(result)]
        if "auc-minus-federated" in m
    ]
    if compared:
        table += (
            "<p>AUC against the federated model on the same hold-out loans: paired DeLong standard error of the "
            "difference (the two models' errors are correlated; independent loans assumed). Two standard errors "
            "is about a 5 % two-sided test.</p>"
            + html_table(
                ["model", "AUC minus federated", "standard error", "larger than 1 SE", "larger than 2 SE"],
                [
                    [
                        name,
                        fmt(m["auc-minus-federated"]),
                        fmt(m["se"]),
                        "yes" if m["beyond-se"] else "no",
                        "yes" if m["beyond-2-se"] else "no",
                    ]
                    for name, m in compared
                ],
            )
        )
    return section("baseline", BASELINE_TITLE, intro + table)


def bank_alone(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"bank alone: {name}", m) for name, m in result["bank-alone"]["banks"].items()]


def no_rounds_section() -> str:
    return section("rounds", "Training rounds", note("No round finished: nothing to plot."))


def rounds_section(
    run: Run,
    rounds: pd.DataFrame,
    banks: pd.DataFrame,
    rounds_png: Path,
    banks_png: Path | None,
    pack_rounds: dict[str, Any] | None = None,
) -> str:
    """`rounds`, `banks`: `report_tables.rounds_table` and `bank_auc_table`; `pack_rounds`: the pack's round part."""
    body = ""
    if run.history.evaluation == "folded":
        body += note(
            "Evaluation was folded into training: each round's validation figures are of that round's global "
            "model, computed by the banks on their validation rows at the start of the next round (the last "
            "round's in one final evaluation message). Same model, same rows: the same figures as a separate "
            "evaluation."
        )
    pr = pack_rounds or {"rounds": [], "rule": "", "best-round": run.history.best_round}
    intervals = {r["round"]: r for r in pr["rounds"]}
    body += (
        f"<p>How the best round was chosen: {html.escape(pr['rule'])} Best round: {fmt(pr['best-round'])}; final "
        f"round (model-final.keras): {fmt(pr.get('final-round'))}.</p>"
    )
    comparison = pr.get("best-vs-final")
    if comparison:
        body += note(
            f"Best minus final round, pooled validation AUC: {comparison['difference']:+.4f} (standard error "
            f"{comparison['se']:.4f}, {comparison['method']}): "
            + (
                "larger than its standard error."
                if comparison["beyond_se"]
                else "smaller than its standard error: the two rounds cannot be told apart on these loans."
            )
        )
    top = pr.get("highest-vs-final")
    if top:
        body += note(
            f"Round {pr['highest-validation-auc-round']} had the highest pooled validation AUC; it minus the final "
            f"round's: {top['difference']:+.4f} (standard error {top['se']:.4f}): "
            + (
                "larger than its standard error."
                if top["beyond_se"]
                else "smaller than its standard error, so the rounds' validation AUCs do not tell them apart."
            )
        )
    body += image(rounds_png, "pooled AUC, KS and log loss per round")
    if banks_png is not None:
        body += image(banks_png, "each bank's AUC per round")
    rows = [
        [
            int(r["round"]),
            ci(intervals.get(int(r["round"]), {}).get("validation-auc")) if intervals else fmt(r["val_auc"]),
            fmt(r["val_ks"]),
            fmt(r["val_logloss"]),
            ci(intervals.get(int(r["round"]), {}).get("holdout-auc")) if intervals else fmt(r["holdout_auc"]),
            int(r["trained"]),
            r["failed"] or "none",
            fmt(r["seconds"], 1),
        ]
        for _, r in rounds.iterrows()
    ]
    body += html_table(
        [
            "round",
            "pooled val AUC (95 % DeLong)",
            "pooled val KS",
            "pooled val log loss",
            "hold-out AUC (95 % DeLong)",
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


def personalisation_section(run: Run, comparisons: list[dict[str, Any]] | None = None) -> str:
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
    if comparisons:
        body += (
            "<h3>Is a bank's own model better than the global one?</h3><p>Validation AUC minus the global model's on "
            "the bank's own validation loans; standard error from Hanley and McNeil's formula for each AUC, treated as "
            "independent (the same loans make the true one smaller, so this is conservative).</p>"
            + html_table(
                ["bank", "model", "AUC minus global", "standard error", "larger than 1 SE"],
                [
                    [c["bank"], c["model"], fmt(c["difference"]), fmt(c["se"]), "yes" if c["beyond_se"] else "no"]
                    for c in comparisons
                ],
                numeric_from=2,
            )
        )
    if record.get("failed"):
        body += note("Banks that did not personalise: " + "; ".join(f"{b}: {w}" for b, w in record["failed"].items()))
    return section("personalisation", title, body)
