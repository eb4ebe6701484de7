"""The report's sections on defensible decisions: reasons for declines, and monotonicity.

Written from the pack's `reasons` and `monotonicity` parts
(`fedcredit.risk.decisions`) and the partial-dependence PNG; a part the run
lacks says why. Nothing here computes a figure.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from fedcredit.risk.report_html import fmt, html_table, image, note, pci, section


def _frequency_table(part: dict[str, Any], threshold: float) -> str:
    rows = part["rows"]
    body = (
        f"<p>Rows: {html.escape(part['described'])}. Declined at PD {threshold:g} or above: {rows['declined']} of "
        f"{rows['loans']} loans ({pci(part['declined-rate'])}), {rows['no-reason']} of them without a reason "
        f"({pci(part['no-reason-share'])}).</p>"
    )
    given = [r for r in part["table"] if r["any"]]
    body += html_table(
        ["feature", "statement on a notice", "reason 1", "share of declines (95 %)", "any reason", "share (95 %)"],
        [
            [r["feature"], r["statement"], r["first"], pci(r["first-share"]), r["any"], pci(r["any-share"])]
            for r in given
        ],
        numeric_from=2,
    )
    never = [r["feature"] for r in part["table"] if not r["any"]]
    if never:
        body += f"<p>Never a reason for these declines: {html.escape(', '.join(never))}.</p>"
    return body


def reasons_section(pack: dict[str, Any]) -> str:
    part = pack.get("reasons") or {}
    title = "Reasons for declines"
    threshold = part.get("threshold", pack["run"]["threshold"])
    body = (
        f"<p>For the loans the final model declines (PD at or above {threshold:g}), how often each feature is the "
        "first reason a notice gives and how often it is any of them, as a share of the declined loans with its 95 % "
        "Wilson interval. Each bank explained its own validation loans and sent only these counts; the coordinator "
        "summed them.</p>"
    )
    if part.get("rule"):
        body += f"<p>How reasons are chosen: {html.escape(part['rule'])}</p>"
    if part.get("why"):
        body += note(part["why"])
    if part.get("validation"):
        body += "<h3>Pooled validation loans</h3>" + _frequency_table(part["validation"], threshold)
    elif not part.get("why"):
        body += note("No pooled reason counts.")
    if part.get("holdout"):
        body += "<h3>Hold-out set</h3>" + _frequency_table(part["holdout"], threshold)
    if part.get("banks"):
        body += "<p>Per bank (its validation loans):</p>" + html_table(
            ["bank", "validation loans", "declined", "without a reason", "most frequent first reasons"],
            [
                [b["bank"], b["loans"], b["declined"], b["no-reason"], ", ".join(b["top-first-reasons"]) or "none"]
                for b in part["banks"]
            ],
            numeric_from=1,
        )
    body += note(
        "What this cannot show: a reason says which value raised this applicant's PD against the lowest-risk value, "
        "not what caused the default; counts come from the banks, checked only for consistency with each other and "
        "with what the banks sent before (their validation rows, their final-round score histograms)."
    )
    return section("reasons", title, body)


def monotonicity_section(pack: dict[str, Any], png: Path | None) -> str:
    part = pack.get("monotonicity") or {}
    title = "Monotonicity: the PD moves only the declared way"
    body = (
        "<p>For every constraint the schema declares ([monotone]), the PD as the feature moves over its grid (41 "
        "values over the federation's mean +- 4 standard deviations within its bounds, or every rank of an ordered "
        "category), the other values kept. A row violates the constraint when its PD moves against the direction "
        f"by more than {fmt(part.get('tolerance', 1e-6), 6)} between neighbouring grid values. The model holds the "
        "constraints by construction; this is the evidence. A property of the model on the grid: no interval.</p>"
    )
    if "checks" not in part:
        body += note(part.get("why") or "Not checked.")
    else:
        s = part["summary"]
        status = "pass" if s["held"] == s["constraints"] else "fail"
        body += (
            f'<p><span class="verdict {status}">{status.upper()}</span> {s["held"]} of {s["constraints"]} '
            f"declared constraints hold on every row checked. Rows: {html.escape(part['rows'])}.</p>"
        )
        body += html_table(
            ["feature", "direction", "grid points", "rows checked", "violations", "largest violation (PD)", "status"],
            [
                [
                    c["feature"],
                    c["direction"],
                    c["grid_points"],
                    c["rows_checked"],
                    c["violations"],
                    fmt(float(c["largest_violation"]), 6),
                    c["status"],
                ]
                for c in part["checks"]
            ],
            numeric_from=2,
            status_column=6,
        )
        if not part.get("holdout-rows"):
            body += note(
                "No loan rows at the coordinator (a deployment): the check above is the typical applicant's; the "
                "check over real loans runs at each bank on its own validation loans (below)."
            )
    banks = part.get("banks")
    if banks:
        broken = {f: n for f, n in banks["violations"].items() if n}
        body += f"<p>At the banks: {html.escape(banks['described'])}; {banks['rows']} loans in all: " + (
            "no declared constraint broken on any of them.</p>"
            if not broken
            else "rows breaking a constraint: "
            + html.escape(", ".join(f"{f} {n}" for f, n in broken.items()))
            + ".</p>"
        )
        if banks.get("per-bank"):
            body += html_table(
                ["bank", "validation loans checked", "(row, constraint) violations"],
                [[b, c["rows"], c["violations"]] for b, c in banks["per-bank"].items()],
            )
    else:
        body += note("No checks from the banks: the run has no reason counts (reasons.json).")
    curves = part.get("partial-dependence")
    if png is not None and curves:
        body += (
            f"<p>Partial dependence of the {len({r['feature'] for r in curves['table']})} features whose PD swings "
            f"most over their known range (mean +- 2 standard deviations): {html.escape(curves['rows'])}.</p>"
        )
        body += image(png, "partial dependence of the strongest features")
    return section("monotonicity", title, body)
