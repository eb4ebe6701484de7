"""`fedcredit report RUN_DIR`: the model-risk report of a run, for a validator.

One self-contained `report.html` (plots embedded as base64 PNG, no external
files or scripts), the same plots as PNG files in `RUN_DIR/report/`, and
`report.json`: every figure of the report as data (the validation pack of
`fedcredit.risk.pack`), for a bank's own model inventory.

Every run gets the whole pack, a deployment's and a secure one's included:
it is built from the score histograms the banks sent (scores/), never from
rows, so the coordinator needs no data. Sections: headline verdict against
the consortium's limits, summary, data, model specification, performance
(ROC, KS), calibration, score distributions, gains and threshold
trade-offs, rounds, per bank and stability (plain mode only), fair lending,
reasons for declines, monotonicity, baselines, personalisation, privacy,
config, limitations and intended use, sign-off. The report reads the run
directory alone (model-final.keras for its architecture and digest, the
monotonicity check and, in a simulation, the hold-out loans' reasons), so
rebuilding it gives the same report.json.
The command line is `fedcredit.cli.report`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedcredit.core.binned import Binned
from fedcredit.federation.outputs import write_json
from fedcredit.federation.scores import RoundScores, ScoresError, read_scores
from fedcredit.risk import decisions, pack
from fedcredit.risk import report_decisions as decision_views
from fedcredit.risk import report_figures as figures
from fedcredit.risk import report_sections as sections
from fedcredit.risk import report_tables as tables
from fedcredit.risk import report_validation as views
from fedcredit.risk.monotone_figures import plot_partial_dependence
from fedcredit.risk.report_figures import PNG_NAMES
from fedcredit.risk.report_html import page
from fedcredit.risk.rundir import Run, RunDirError, load_final_model, target_of

__all__ = ["PNG_NAMES", "Section", "build", "write"]


@dataclass(frozen=True)
class Section:
    """One section of the report: its HTML and the PNG files it shows, in the order it shows them."""

    html: str
    figures: tuple[Path, ...] = ()


def _try(what: Callable[[], Any]) -> tuple[Any, str]:
    """(value, '') or (None, why not) for a section that may not be possible for this run."""
    try:
        return what(), ""
    except RunDirError as err:
        return None, str(err)


def _model_sha256(run: Run) -> str | None:
    return hashlib.sha256(run.model_path.read_bytes()).hexdigest() if run.model_path.is_file() else None


def model_info(model: Any) -> dict[str, Any]:
    """Parameter count and the layers of the released model, as a validator reads them."""
    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        config = layer.get_config()
        detail = ", ".join(
            f"{k}={config[k]}" for k in ("units", "activation", "rate", "output_mode") if k in config and config[k]
        )
        layers.append(f"{layer.name}: {kind}" + (f"({detail})" if detail else ""))
    return {"parameters": int(model.count_params()), "inputs": len(model.inputs), "summary": "; ".join(layers)}


def baseline(run: Run) -> Section:
    path = run.dir / "baseline.json"
    if not path.is_file():
        return Section(sections.baseline_missing(run))
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        rows = tables.baseline_rows(result)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        return Section(sections.baseline_unreadable(path, err))
    return Section(sections.baseline_section(result, rows))


def rounds(run: Run, out_dir: Path, the_pack: dict[str, Any]) -> Section:
    table = tables.rounds_table(run.history)
    if table.empty:
        return Section(sections.no_rounds_section())
    rounds_png = figures.plot_rounds(table, out_dir, the_pack["rounds"]["rounds"])
    banks = tables.bank_auc_table(run.history)
    banks_png = None if banks.empty else figures.plot_bank_auc(banks, table.set_index("round")["val_auc"], out_dir)
    pngs = (rounds_png,) if banks_png is None else (rounds_png, banks_png)
    return Section(sections.rounds_section(run, table, banks, rounds_png, banks_png, the_pack["rounds"]), pngs)


def monotonicity(the_pack: dict[str, Any], out_dir: Path) -> Section:
    """The monotonicity section, with the partial-dependence figure of the strongest features."""
    curves = (the_pack["monotonicity"] or {}).get("partial-dependence")
    png = None
    if curves and curves["table"]:
        title = (
            "Mean probability of default over the hold-out loans as one feature moves, their other values kept"
            if the_pack["monotonicity"].get("holdout-rows")
            else "Probability of default of the typical applicant as one feature moves"
        )
        png = plot_partial_dependence(pd.DataFrame(curves["table"]), out_dir, curves["directions"], title)
    return Section(decision_views.monotonicity_section(the_pack, png), (png,) if png else ())


def pack_sections(the_pack: dict[str, Any], scores: dict[int, RoundScores], out_dir: Path) -> list[Section]:
    """Performance, calibration, distributions and gains of the pooled validation loans (and the hold-out set)."""
    packs = {
        label: part
        for label, part in ((views.VALIDATION, the_pack["validation"]), (views.HOLDOUT, the_pack["holdout"]))
        if part is not None
    }
    if not packs:
        return [
            Section(views.performance_section(the_pack, None, None)),
            Section(views.calibration_section(the_pack, None)),
            Section(views.distributions_section(the_pack, None)),
            Section(views.gains_section(the_pack)),
        ]
    final = the_pack["run"]["final-round"]
    label, first = next(iter(packs.items()))
    source = scores[final].pooled if label == views.VALIDATION else scores[max(scores)].holdout
    roc = figures.plot_roc(packs, out_dir)
    ks = figures.plot_ks(Binned(*source), first, label, out_dir)  # type: ignore[misc]
    calibration = figures.plot_calibration(packs, out_dir)
    distributions = figures.plot_distributions(packs, the_pack["run"]["threshold"], out_dir)
    return [
        Section(views.performance_section(the_pack, roc, ks), (roc, ks)),
        Section(views.calibration_section(the_pack, calibration), (calibration,)),
        Section(views.distributions_section(the_pack, distributions), (distributions,)),
        Section(views.gains_section(the_pack)),
    ]


def intended_use(run: Run) -> dict[str, str]:
    path = run.dir / views.INTENDED_USE_FILE
    if path.is_file():
        return {"source": f"the consortium's ({path.name})", "text": path.read_text(encoding="utf-8")}
    return {"source": "the template (not yet edited)", "text": views.INTENDED_USE_TEMPLATE}


def make_pack(run: Run) -> tuple[dict[str, Any], dict[int, RoundScores]]:
    """The validation pack of a run directory, and the histograms it was built from."""
    try:
        scores = read_scores(run.dir)
        scores_note = None
    except ScoresError as err:
        scores, scores_note = {}, str(err)
    info: dict[str, Any] | None = None
    model = None
    target, why = _try(lambda: target_of(run))
    if target is not None:
        model, why = _try(lambda: load_final_model(run))
        info = model_info(model) if model is not None else {"why": why}
    else:
        info = {"why": why}
    reasons, reasons_why = _try(lambda: decisions.reasons_part(run, model))
    mono, mono_why = _try(lambda: decisions.monotonicity_part(run, model, why))
    the_pack = pack.build(
        run,
        scores,
        info,
        _model_sha256(run),
        pack.profile_part(run.dir),
        reasons or {"why": reasons_why},
        mono or {"why": mono_why},
    )
    the_pack["intended-use"] = intended_use(run)
    if scores_note or not scores:
        the_pack["limitations"].insert(
            0,
            scores_note
            or "This run kept no score histograms (scores/): it predates them or stopped before an evaluation, so "
            "the validation pack is empty.",
        )
    return the_pack, scores


def build(run: Run, out_dir: Path) -> tuple[str, list[Path], dict[str, Any]]:
    """(HTML text, PNG files written, the validation pack)."""
    out_dir.mkdir(exist_ok=True)
    for name in PNG_NAMES:  # a previous report's plots must not linger
        (out_dir / name).unlink(missing_ok=True)
    the_pack, scores = make_pack(run)
    per_bank = the_pack["banks"]["banks"]
    psi_png = figures.plot_psi(per_bank, out_dir) if any(b.get("psi") for b in per_bank) else None
    csi = (the_pack["data"].get("profile") or {}).get("csi")
    parts = [
        Section(views.verdict_section(the_pack)),
        Section(sections.summary_section(run, _model_sha256(run))),
        Section(views.data_section(the_pack)),
        Section(views.model_section(the_pack)),
        *pack_sections(the_pack, scores, out_dir),
        rounds(run, out_dir, the_pack),
        Section(views.banks_section(the_pack, psi_png, csi), (psi_png,) if psi_png else ()),
        Section(views.fairness_section(the_pack)),
        Section(decision_views.reasons_section(the_pack)),
        monotonicity(the_pack, out_dir),
        baseline(run),
        Section(sections.personalisation_section(run, the_pack["personalisation"])),
        Section(sections.privacy_section(run)),
        Section(sections.config_section(run)),
        Section(views.limitations_section(the_pack)),
        Section(views.signoff_section(the_pack)),
    ]
    return page(run, [s.html for s in parts]), [png for s in parts for png in s.figures], the_pack


def write(run: Run) -> tuple[Path, int, list[Path]]:
    """Build the report of `run` into its directory: (report.html, its size in bytes, PNG files).

    report.json beside it holds the same figures (the validation pack): a
    pure function of the run directory, byte for byte the same when rebuilt.
    """
    page, pngs, the_pack = build(run, run.dir / "report")
    write_json(run.dir / "report.json", the_pack)
    out = run.dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a report
    return out, len(page.encode("utf-8")), pngs
