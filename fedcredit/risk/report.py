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

This module reads the run (final model, hold-out set, simulated banks,
baseline.json), scores it and puts the report together, one `Section` (its
HTML and the PNGs it shows) at a time: the figures as data are
`report_tables`, their plots `report_figures`, the HTML `report_sections`
and `report_html`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedcredit.risk import report_figures as figures
from fedcredit.risk import report_sections as sections
from fedcredit.risk import report_tables as tables
from fedcredit.risk.report_figures import PNG_NAMES
from fedcredit.risk.report_html import page
from fedcredit.risk.report_tables import Scored
from fedcredit.risk.rundir import Run, RunDirError, holdout, load_final_model, simulated_banks, target_of

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


def score_banks(model: Any, banks: list[Any], target: str) -> dict[str, Scored]:
    """Each simulated bank's validation rows scored with `model`, by bank name."""
    from fedcredit.core import model as mdl

    return {b.name: Scored(mdl.score(model, b.val), b.val[target].to_numpy().astype(bool)) for b in banks}


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


def rounds(run: Run, out_dir: Path) -> Section:
    table = tables.rounds_table(run.history)
    if table.empty:
        return Section(sections.no_rounds_section())
    rounds_png = figures.plot_rounds(table, out_dir)
    banks = tables.bank_auc_table(run.history)
    banks_png = None if banks.empty else figures.plot_bank_auc(banks, table.set_index("round")["val_auc"], out_dir)
    pngs = (rounds_png,) if banks_png is None else (rounds_png, banks_png)
    return Section(sections.rounds_section(run, table, banks, rounds_png, banks_png), pngs)


def holdout_sections(run: Run, data: Scored | None, why_not: str, out_dir: Path) -> list[Section]:
    """Hold-out performance, calibration, distributions and gains (or one note each why not)."""
    if data is None:
        return [Section(text) for text in sections.holdout_notes(why_not)]
    threshold = run.cfg.threshold
    t = tables.holdout_tables(data, threshold)
    roc, ks = figures.plot_roc(data, t.metrics["auc"], out_dir), figures.plot_ks(data, out_dir)
    calibration = figures.plot_calibration(t.bins, t.metrics["brier"], t.ece, out_dir)
    distributions = figures.plot_distributions(data, threshold, out_dir)
    return [
        Section(sections.performance_section(t, threshold, roc, ks), (roc, ks)),
        Section(sections.calibration_section(t, calibration), (calibration,)),
        Section(sections.distributions_section(distributions), (distributions,)),
        Section(sections.gains_section(t.gains)),
    ]


def stability(table: pd.DataFrame | None, why_not: str, out_dir: Path) -> Section:
    if table is None:
        return Section(sections.no_stability_section(why_not))
    png = figures.plot_psi(table, out_dir)
    return Section(sections.stability_section(table, png), (png,))


def build(run: Run, out_dir: Path) -> tuple[str, list[Path]]:
    """(HTML text, PNG files written)."""
    from fedcredit.core import model as mdl

    out_dir.mkdir(exist_ok=True)
    for name in PNG_NAMES:  # a previous report's plots must not linger
        (out_dir / name).unlink(missing_ok=True)
    target, no_model = _try(lambda: target_of(run))
    model = None
    if target is not None:
        model, no_model = _try(lambda: load_final_model(run))

    data, why_not = None, no_model
    if model is not None and not tables.has_holdout(run):
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
            psi = tables.psi_table(score_banks(model, banks, target))
        else:
            why_not_psi = f"Not available: {why_not_psi}"

    parts = [
        Section(sections.summary_section(run, _model_sha256(run))),
        baseline(run),
        rounds(run, out_dir),
        *holdout_sections(run, data, why_not, out_dir),
        stability(psi, why_not_psi, out_dir),
        Section(sections.personalisation_section(run)),
        Section(sections.config_section(run)),
        Section(sections.privacy_section(run)),
    ]
    return page(run, [s.html for s in parts]), [png for s in parts for png in s.figures]


def write(run: Run) -> tuple[Path, int, list[Path]]:
    """Build the report of `run` into its directory: (report.html, its size in bytes, PNG files)."""
    page, pngs = build(run, run.dir / "report")
    out = run.dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a report
    return out, len(page.encode("utf-8")), pngs
