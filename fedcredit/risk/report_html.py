"""HTML building blocks of the model-risk report, and the page that holds its sections.

Escaped text, number formatting, tables, notes, embedded PNGs (base64: the
page needs no other file) and `page`, which puts the sections written by
`report_sections` into one self-contained document (no scripts, no
external files).
"""

from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path
from typing import Any

from fedcredit.risk.rundir import Run

SECTIONS = (  # the ids of the sections in page order: the links at the top of the page
    "verdict",
    "summary",
    "data",
    "model",
    "performance",
    "calibration",
    "distributions",
    "gains",
    "rounds",
    "banks",
    "fairness",
    "reasons",
    "monotonicity",
    "baseline",
    "personalisation",
    "privacy",
    "config",
    "limitations",
    "signoff",
)


def _e(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)


def pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f} %"


def ci(estimate: dict[str, Any] | None, digits: int = 4) -> str:
    """A figure with its 95 % interval, e.g. "0.7518 (0.7020 - 0.8016)"."""
    if not estimate or not _finite(estimate.get("value")):
        return "n/a"
    value = f"{estimate['value']:.{digits}f}"
    if not (_finite(estimate.get("low")) and _finite(estimate.get("high"))):
        return value
    return f"{value} ({estimate['low']:.{digits}f} - {estimate['high']:.{digits}f})"


def pci(estimate: dict[str, Any] | None) -> str:
    """A rate with its 95 % interval, in percent."""
    if not estimate or not _finite(estimate.get("value")):
        return "n/a"
    value = pct(estimate["value"])
    if not (_finite(estimate.get("low")) and _finite(estimate.get("high"))):
        return value
    return f"{value} ({100 * estimate['low']:.1f} - {100 * estimate['high']:.1f} %)"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def html_table(
    header: list[str], rows: list[list[Any]], numeric_from: int = 1, status_column: int | None = None, css: str = ""
) -> str:
    """`status_column`: that column's cells (pass, borderline, fail, not judged) get their colour."""

    def cls(i: int, cell: Any) -> str:
        if i == status_column:
            return str(cell).replace(" ", "-")
        return "num" if i >= numeric_from else ""

    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{cls(i, c)}">{_e(c)}</td>' for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    table_class = f' class="{css}"' if css else ""
    return f"<table{table_class}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
.verdict { font-size: 1.25em; padding: .6em 1em; border-radius: 4px; display: inline-block; font-weight: 600; }
.pass { background: #e3f4e8; color: #1e6b34; } .borderline { background: #fff3d6; color: #7a5300; }
.fail { background: #fbe3e1; color: #8e1f16; } .not-judged { background: #eee; color: #555; }
td.pass, td.borderline, td.fail, td.not-judged { font-weight: 600; }
.signoff td { height: 2.2em; min-width: 9em; }
code, .mono { font-family: ui-monospace, monospace; font-size: .9em; word-break: break-all; }
nav a { margin-right: 1em; }
"""


def page(run: Run, parts: list[str]) -> str:
    """The whole report: title, when and from where it was generated, links to the sections, the sections."""
    title = f"Model-risk report: run {run.history.run_id or run.dir.name}"
    nav = " ".join(f'<a href="#{k}">{k}</a>' for k in SECTIONS)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n<h1>{_e(title)}</h1>\n"
        f"<p>Generated {_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} by <code>fedcredit report</code> from "
        f"<code>{_e(run.dir)}</code>.</p><nav>{nav}</nav>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
