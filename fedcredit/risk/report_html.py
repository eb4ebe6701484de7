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


def _e(value: Any) -> str:
    return html.escape(str(value))


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)


def pct(value: float) -> str:
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
