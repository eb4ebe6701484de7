"""The validation-pack sections of the model-risk report, written from the pack (`fedcredit.risk.pack`).

Headline verdict, data, model, performance, calibration, distributions,
gains and thresholds, per bank and stability, limitations and intended
use, sign-off. Each takes parts of the pack (and the PNGs `report_figures`
saved) and returns HTML; a part the run lacks says why. Nothing here
computes a figure.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from fedcredit.risk.report_html import ci, fmt, html_table, image, note, pci, pct, section

VALIDATION, HOLDOUT = "pooled validation", "hold-out"
INTENDED_USE_FILE = "intended-use.md"
INTENDED_USE_TEMPLATE = """\
## Intended use
- Purpose: probability of default (PD) of consumer instalment loan applications, to rank and decide
  applications at the decision threshold the consortium agreed (edit: the product, channel and decision it serves).
- Population: applicants like those in the banks' training data (edit: products, regions, vintages, score range).
- Users: credit officers and automated decisioning at the member banks (edit).

## Not intended for
- Populations, products or economic conditions the training data does not cover (edit).
- Decisions on a single applicant without the reasons and the review process of the bank (edit).

## Conditions of use
- Monitor score stability (PSI) and calibration per bank every (edit: month / quarter); revalidate when a bank
  joins or leaves, or when the PSI exceeds the consortium's limit.
- Owner: (edit: name, role). Validator: (edit: name, role). Next review: (edit: date).
"""
SIGNOFF_ROLES = (
    "Model owner (consortium)",
    "Independent model validator",
    "Privacy officer of each member bank",
    "Approving committee",
)


def _title(label: str) -> str:
    return "Pooled validation loans" if label == VALIDATION else "Hold-out set"


def _packs(pack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The sets of loans the pack describes, pooled validation first."""
    return {
        label: part
        for label, part in ((VALIDATION, pack["validation"]), (HOLDOUT, pack["holdout"]))
        if part is not None
    }


def verdict_section(pack: dict[str, Any]) -> str:
    v = pack["verdict"]
    overall = v["overall"]
    body = f'<p><span class="verdict {overall.replace(" ", "-")}">Verdict: {html.escape(overall.upper())}</span></p>'
    body += (
        "<p>Each check compares a figure and its 95 % interval with the limit the consortium set in the run config: "
        "<b>pass</b> when the whole interval meets it, <b>borderline</b> when the figure meets it but the interval "
        "does not, <b>fail</b> when the figure does not; monotonicity is a property of the model on the grid, with no "
        "interval: pass or fail. A verdict is evidence for the validator, not an approval.</p>"
    )
    if v.get("why"):
        body += note(f"Not judged: {v['why']}.")
    rows = []
    for c in v["checks"]:
        figure = ci(c) if "value" in c else c.get("result") or c.get("why", "n/a")
        rows.append([c["check"], c["figure"], c["rule"], figure, c["status"], c.get("rows", "")])
    body += html_table(["check", "figure", "limit", "value (95 % interval)", "status", "rows"], rows, 9, 4)
    val = pack["validation"]
    if val is not None:
        at = val["at-threshold"]
        key = [
            ["loans (defaults)", f"{val['rows']['loans']} ({val['rows']['defaults']})"],
            ["AUC (DeLong)", ci(val["auc"])],
            ["Gini", ci(val["gini"])],
            ["KS (bootstrap)", ci(val["ks"])],
            ["default rate (Wilson)", pci(val["default-rate"])],
            ["mean PD", pct(val["mean-pd"])],
            [
                f"approval rate at PD < {pack['run']['threshold']:g}",
                pci(_est(at, "approval_rate", "approval_low95", "approval_high95")),
            ],
            [
                "bad rate among approved",
                pci(_est(at, "bad_rate_approved", "bad_rate_low95", "bad_rate_high95")),
            ],
        ]
        body += f"<p>Key figures: {html.escape(val['rows']['described'])}.</p>" + html_table(
            ["figure", "value (95 % interval)"], key
        )
    rounds = pack["rounds"]
    if rounds["not-meaningful"]:
        body += note(
            f"The best round ({rounds['best-round']}) and the final round ({rounds['final-round']}) differ in pooled "
            "validation AUC by less than one standard error: the choice between them is not supported by the data."
        )
    return section("verdict", "Headline", body)


def _est(row: dict[str, Any], value: str, low: str, high: str) -> dict[str, Any]:
    return {"value": row.get(value), "low": row.get(low), "high": row.get(high)}


def data_section(pack: dict[str, Any]) -> str:
    d = pack["data"]
    body = ""
    if d.get("hidden"):
        body += note(d["hidden"])
    rows = [
        [
            b["bank"],
            fmt(b["training-rows"]),
            fmt(b["validation-rows"]),
            fmt(b["validation-defaults"]),
            pct(b["validation-defaults"] / b["validation-rows"]) if b["validation-rows"] else "n/a",
        ]
        for b in d["banks"]
    ]
    if d["pooled-validation"]:
        p = d["pooled-validation"]
        rows.append(["all banks", fmt(d["training-rows"]), p["rows"], p["defaults"], pct(p["defaults"] / p["rows"])])
    body += html_table(["bank", "training loans", "validation loans", "validation defaults", "default rate"], rows)
    if d["statistics-failed"]:
        body += note(
            "Banks whose statistics were not used: " + "; ".join(f"{b}: {w}" for b, w in d["statistics-failed"].items())
        )
    body += (
        f"<p>Numeric features ({len(d['numeric-features'])}): {html.escape(', '.join(d['numeric-features']))}.</p>"
        f"<p>Categorical features ({len(d['categorical-features'])}), values known to the model (categories seen in "
        f"fewer than {d['min-category-count']} training loans over all banks score as unknown): "
        + html.escape(", ".join(f"{c} ({n})" for c, n in d["categorical-features"].items()))
        + ".</p>"
    )
    body += profile_tables(d.get("profile"))
    return section("data", "Data", body)


def profile_tables(profile: dict[str, Any] | None) -> str:
    """Default rates per split and missing / unknown shares per feature, from the banks' profiles (profile.json)."""
    if not profile:
        return note(
            "No feature profile in this run (profile.json): missing rates, unknown-category shares and per-feature "
            "stability need the banks' binned feature counts."
        )
    out = ""
    table = profile.get("table") or []
    if table:
        out += "<h3>Rows, defaults and missing values per bank and split</h3>" + html_table(
            ["bank", "split", "loans", "defaults", "default rate", "features with missing values (share)"],
            [
                [
                    r["bank"],
                    r["split"],
                    r["rows"],
                    r["bads"],
                    pct(r["default-rate"]),
                    ", ".join(f"{c} {pct(v)}" for c, v in r["missing"].items() if v > 0) or "none",
                ]
                for r in table
            ],
            numeric_from=2,
        )
    unknown = profile.get("unknown") or []
    if unknown:
        out += "<p>Share of training loans whose category the model does not know (scored as unknown):</p>"
        out += html_table(
            ["bank", *unknown[0]["shares"].keys()],
            [[u["bank"], *(pct(v) for v in u["shares"].values())] for u in unknown],
        )
    if profile.get("why"):
        out += note(profile["why"])
    return out


def model_section(pack: dict[str, Any]) -> str:
    m = pack["model"]
    arch = m["architecture"] or {}
    rows = [
        ["model file", "model-final.keras"],
        [
            "model SHA-256",
            f"{m['model-final-sha256'] or 'not recorded'}"
            + ("" if m["model-file-matches"] else " (the file does not match it, or is missing)"),
        ],
        ["schema SHA-256", m["schema-sha256"] or "not recorded"],
        ["parameters", fmt(arch.get("parameters"))],
        ["layers", arch.get("summary") or arch.get("why") or "n/a"],
        ["strategy", (m["strategy"] or {}).get("name") or "fedavg"],
    ]
    rows += [[k, str(v)] for k, v in m["config"].items()]
    rows += [[f"software: {k}", v] for k, v in (m["software"] or {"software": "not recorded (an older run)"}).items()]
    return section(
        "model",
        "Model specification",
        "<p>The final global model as released, the run config that trained it, and the software that ran.</p>"
        + html_table(["item", "value"], rows, numeric_from=2),
    )


def performance_section(pack: dict[str, Any], roc_png: Path | None, ks_png: Path | None) -> str:
    packs = _packs(pack)
    if not packs:
        return section("performance", "Performance", note("No evaluated round: no validation figures."))
    body = "".join(
        f"<p><b>{_title(label)}</b>: {html.escape(p['rows']['described'])}.</p>" for label, p in packs.items()
    )
    labels = list(packs)
    rows = [
        ["loans (defaults)", *(f"{p['rows']['loans']} ({p['rows']['defaults']})" for p in packs.values())],
        ["default rate (Wilson)", *(pci(p["default-rate"]) for p in packs.values())],
        ["mean PD", *(pct(p["mean-pd"]) for p in packs.values())],
        ["AUC (DeLong)", *(ci(p["auc"]) for p in packs.values())],
        ["AUC standard error", *(fmt(p["auc"]["se"]) for p in packs.values())],
        ["Gini", *(ci(p["gini"]) for p in packs.values())],
        ["KS (bootstrap)", *(ci(p["ks"]) for p in packs.values())],
        ["KS at PD", *(fmt(p["ks"]["at-pd"], 4) for p in packs.values())],
        ["observed - mean PD (Wilson)", *(ci(p["calibration-in-the-large"]) for p in packs.values())],
        [
            "Brier score / log loss (exact)",
            *(
                f"{fmt(p.get('exact-from-sums', p.get('exact-from-rows', {})).get('brier'))} / "
                f"{fmt(p.get('exact-from-sums', p.get('exact-from-rows', {})).get('logloss'))}"
                for p in packs.values()
            ),
        ],
        [
            "AUC bounds of the row-level value (bin ties)",
            *(
                f"{p['resolution']['auc-bounds'][0]:.4f} - {p['resolution']['auc-bounds'][1]:.4f}"
                if p["resolution"]["auc-bounds"]
                else "n/a"
                for p in packs.values()
            ),
        ],
    ]
    body += html_table(["figure", *labels], rows)
    if roc_png is not None:
        body += image(roc_png, "ROC curve")
    if ks_png is not None:
        body += image(ks_png, "KS curves")
    bins = next(iter(packs.values()))["resolution"]
    body += note(
        f"From score histograms of {bins['bins']} bins of width {bins['bin-width']:g}: exact for PDs rounded down to "
        "a bin edge. AUC interval: DeLong (normal approximation, independent loans); KS: bootstrap of each class's "
        "histogram (1,000 replicates, fixed seed), percentile interval shifted by the bootstrap's bias; rates: "
        "Wilson score intervals."
    )
    return section("performance", "Performance of the final model (ROC, KS)", body)


def calibration_section(pack: dict[str, Any], png: Path | None) -> str:
    packs = _packs(pack)
    if not packs:
        return section("calibration", "Calibration", note("No evaluated round."))
    body = (
        "<p>Loans in ~10 bands of predicted PD with about equal numbers of loans (a band holds whole histogram bins). "
        "Within: the band's mean PD lies inside the 95 % Wilson interval of its observed default rate.</p>"
    )
    if png is not None:
        body += image(png, "calibration by PD band")
    for label, p in packs.items():
        body += f"<h3>{_title(label)}</h3>" + html_table(
            ["band", "PD range", "loans", "defaults", "mean PD", "observed default rate (95 % interval)", "within"],
            [
                [
                    b["band"],
                    f"{b['pd_low']:.4f}-{b['pd_high']:.4f}",
                    b["rows"],
                    b["bads"],
                    pct(b["mean_pd"]),
                    pci({"value": b["default_rate"], "low": b["low95"], "high": b["high95"]}),
                    "yes" if b["within"] else "NO",
                ]
                for b in p["calibration"]
            ],
        )
    return section("calibration", "Calibration", body)


def distributions_section(pack: dict[str, Any], png: Path | None) -> str:
    packs = _packs(pack)
    if png is None or not packs:
        return section(
            "distributions", "Score distributions of repaid and defaulted loans", note("No evaluated round.")
        )
    body = "<p>Share of each class's loans per PD bin: " + "; ".join(
        f"{_title(label).lower()} ({p['rows']['loans']} loans)" for label, p in packs.items()
    )
    body += ". The two classes overlap where the model cannot tell them apart.</p>" + image(png, "score distributions")
    return section("distributions", "Score distributions of repaid and defaulted loans", body)


def gains_section(pack: dict[str, Any]) -> str:
    packs = _packs(pack)
    if not packs:
        return section("gains", "Gains, KS table and threshold trade-offs", note("No evaluated round."))
    body = (
        "<p>Score bands, riskiest first, of about a tenth of the loans each. Capture: share of all defaults in this "
        "and riskier bands; KS: capture minus the same share of repaid loans; lift: the band's default rate over the "
        "overall one; cumulative bad rate: default rate of this and riskier bands.</p>"
    )
    for label, p in packs.items():
        body += f"<h3>{_title(label)}: gains and KS by score band</h3>" + html_table(
            [
                "band",
                "PD range",
                "loans",
                "defaults",
                "default rate",
                "capture",
                "repaid so far",
                "KS",
                "lift",
                "cumulative bad rate",
                "cumulative lift",
            ],
            [
                [
                    b["band"],
                    f"{b['pd_low']:.4f}-{b['pd_high']:.4f}",
                    b["rows"],
                    b["bads"],
                    pct(b["default_rate"]),
                    pct(b["capture"]),
                    pct(b["cum_goods"]),
                    fmt(b["ks"], 3),
                    fmt(b["lift"], 2),
                    pct(b["cum_bad_rate"]),
                    fmt(b["cum_lift"], 2),
                ]
                for b in p["bands"]
            ],
        )
    threshold = pack["run"]["threshold"]
    body += (
        f"<p>Threshold trade-offs: a loan is declined when its PD is at or above the cut-off (the run's threshold "
        f"is {threshold:g}). Cut-offs act at histogram bin edges (applied).</p>"
    )
    for label, p in packs.items():
        body += f"<h3>{_title(label)}: threshold trade-offs</h3>" + html_table(
            [
                "cut-off",
                "applied",
                "approval rate",
                "bad rate among approved",
                "defaults caught",
                "repaid loans declined",
            ],
            [
                [
                    f"{t['cutoff']:g}" + (" (threshold)" if t["cutoff"] == threshold else ""),
                    f"{t['applied']:.4f}",
                    pci(_est(t, "approval_rate", "approval_low95", "approval_high95")),
                    pci(_est(t, "bad_rate_approved", "bad_rate_low95", "bad_rate_high95")),
                    pci(_est(t, "defaults_caught", "caught_low95", "caught_high95")),
                    pct(t["good_declined"]),
                ]
                for t in p["thresholds"]
            ],
        )
    return section("gains", "Gains, KS table and threshold trade-offs", body)


def banks_section(pack: dict[str, Any], psi_png: Path | None, csi: list[dict[str, Any]] | None) -> str:
    b = pack["banks"]
    title = "Per bank and stability"
    if b["hidden"]:
        return section("banks", title, note(b["hidden"]))
    threshold = pack["run"]["threshold"]
    body = f"<p>Rows: {html.escape(b['rows'])}. PSI: each bank's scores against the other banks' pooled, on the others' ~decile bands; "
    body += (
        "interval: bootstrap (PSI is biased upward in small samples: compare with the no-shift level, the PSI two "
        "samples of these sizes from one population exceed only 5 % of the time). Readings: below 0.1 stable, 0.1 - "
        "0.25 shifted (monitor), above 0.25 unstable (investigate).</p>"
    )
    if psi_png is not None:
        body += image(psi_png, "PSI per bank")
    body += html_table(
        [
            "bank",
            "loans (defaults)",
            "default rate",
            "AUC (DeLong)",
            "KS (bootstrap)",
            f"approval rate at PD < {threshold:g}",
            "bad rate among approved",
            "score PSI (95 % interval)",
            "no-shift level",
            "reading",
        ],
        [
            [
                r["bank"],
                f"{r['loans']} ({r['defaults']})",
                pci(r["default-rate"]),
                ci(r["auc"]),
                ci(r["ks"], 3),
                pci(r["approval-rate"]),
                pci(r["bad-rate-approved"]),
                ci(r["psi"], 4) if r["psi"] else "n/a",
                fmt(r["psi"]["no-shift-95"]) if r["psi"] else "n/a",
                r["psi"]["reading"] if r["psi"] else "n/a",
            ]
            for r in b["banks"]
        ],
    )
    if csi:
        banks = sorted({c["bank"] for c in csi})
        cells = {(c["feature"], c["bank"]): c for c in csi}
        features = sorted({c["feature"] for c in csi}, key=lambda f: -max(_csi(cells.get((f, b))) for b in banks))
        body += (
            "<h3>Feature stability (CSI): each bank's training loans against the other banks', per feature</h3>"
            "<p>The PSI formula on each feature's distribution, over about ten bands of equal pooled mass (numeric) or "
            "the vocabulary (categorical), missing values as one more band; same readings and bootstrap interval as "
            "PSI. Least stable features first.</p>"
            + html_table(
                ["feature", *banks],
                [
                    [
                        f,
                        *(
                            f"{ci(_est_of(cells[(f, b)]))} {cells[(f, b)]['reading']}" if (f, b) in cells else "n/a"
                            for b in banks
                        ),
                    ]
                    for f in features
                ],
            )
        )
    else:
        body += note("No feature stability: the run has no per-bank feature profiles (profile.json).")
    return section("banks", title, body)


def fairness_section(pack: dict[str, Any]) -> str:
    fair = pack["fair-lending"]
    title = "Fair lending: outcomes by protected group"
    if not fair["attributes"]:
        return section("fairness", title, note(fair["why"]))
    body = (
        f"<p>Rows: {html.escape(fair['rows'])}. Each bank counted its validation loans per group of each protected "
        "attribute (declared in the schema, never a model input, never sent as a value); the coordinator summed "
        "the counts. AIR: a group's approval rate over the most-approved group's; below 0.8 the four-fifths rule "
        "(29 CFR 1607.4(D)) sees evidence of adverse impact. Equal opportunity: the difference in approval rate "
        "among repaid loans (creditworthy applicants) against the most-approved group; equalised odds: the larger "
        "of that and the same difference among defaulted loans. Intervals: Wilson (rates), Katz (AIR), Wald "
        f"(differences), DeLong (AUC). Groups under {fair['min-group-size']} loans "
        "(fairness.min-group-size) and the undocumented group are shown, never judged.</p>"
    )
    if fair.get("why"):
        body += note(fair["why"])
    for attr, part in fair["attributes"].items():
        table = part["pooled"]
        body += f"<h3>{html.escape(attr)}</h3>" + note(table["reading"])
        body += _group_table(table)
        if part.get("holdout"):
            body += "<p>Hold-out set:</p>" + _group_table(part["holdout"])
        if part.get("banks"):
            body += "<p>Per bank (groups of at least the minimum size only):</p>" + html_table(
                ["bank", "least-approved group", "AIR (95 % interval)", "four-fifths flag", "groups too small"],
                [
                    [
                        bank,
                        t["worst-group"] or "n/a",
                        ci(t["worst-air"], 3) if t["worst-air"] else "n/a",
                        "FLAG" if t["four-fifths-flag"] else "no",
                        ", ".join(t["too-small"]) or "none",
                    ]
                    for bank, t in part["banks"].items()
                ],
            )
    body += note(
        "What this cannot show: a model without protected inputs can still use proxies for them (region, income, "
        "employment length); small groups give wide intervals; the undocumented group mixes whoever did not answer. "
        "Compare variants without suspect features (excluded-features, fedcredit compare) before concluding."
    )
    return section("fairness", title, body)


def _group_table(table: dict[str, Any]) -> str:
    return html_table(
        [
            "group",
            "loans (defaults)",
            "default rate",
            "approval rate",
            "AIR (Katz)",
            "four-fifths",
            "approval among repaid",
            "equal opportunity diff.",
            "equalised odds diff.",
            "AUC (DeLong)",
            "observed - mean PD",
        ],
        [
            [
                g["group"] + (" (reference)" if g["reference"] else "") + (" (too small)" if g["too-small"] else ""),
                f"{g['loans']} ({g['defaults']})",
                pci(g["default-rate"]),
                pci(g["approval-rate"]),
                ci(g.get("air"), 3),
                "FLAG" if g.get("four-fifths") else ("not judged" if not g["judged"] else "no"),
                pci(g["approval-among-repaid"]),
                ci(g.get("equal-opportunity-difference"), 3),
                fmt(g.get("equalised-odds-difference"), 3),
                ci(g["auc"], 3),
                ci(g["calibration-gap"], 3),
            ]
            for g in table["groups"]
        ],
    )


def _csi(cell: dict[str, Any] | None) -> float:
    value = (cell or {}).get("csi")
    return value if isinstance(value, float) and value == value else -1.0


def _est_of(cell: dict[str, Any]) -> dict[str, Any]:
    return {"value": cell["csi"], "low": cell["low"], "high": cell["high"]}


def _markdown(text: str) -> str:
    """The little Markdown of the intended-use file: headings, bullets, paragraphs (escaped)."""
    out, items = [], []

    def flush() -> None:
        if items:
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("- "):
            items.append(stripped[2:])
        elif stripped and items and line.startswith("  "):
            items[-1] += " " + stripped
        else:
            flush()
            if stripped.startswith("#"):
                out.append(f"<h3>{html.escape(stripped.lstrip('#').strip())}</h3>")
            elif stripped:
                out.append(f"<p>{html.escape(stripped)}</p>")
    flush()
    return "".join(out)


def limitations_section(pack: dict[str, Any]) -> str:
    body = (
        "<h3>Limitations of this evidence</h3><ul>"
        + "".join(f"<li>{html.escape(item)}</li>" for item in pack["limitations"])
        + "</ul>"
    )
    use = pack.get("intended-use") or {}
    body += note(
        f"Intended use below is {use.get('source', 'the template')}: the consortium edits {INTENDED_USE_FILE} in the "
        "run directory and runs fedcredit report again."
    )
    body += _markdown(use.get("text", INTENDED_USE_TEMPLATE))
    return section("limitations", "Limitations and intended use", body)


def signoff_section(pack: dict[str, Any]) -> str:
    h = pack["model"]
    body = (
        f"<p>Model SHA-256 {html.escape(str(h['model-final-sha256']))}; report figures in report.json beside this "
        "file. Signing confirms the signer has read this report for the model with that digest.</p>"
    )
    body += html_table(
        ["role", "name", "decision (approve / approve with conditions / reject)", "date", "signature"],
        [[role, "", "", "", ""] for role in SIGNOFF_ROLES],
        css="signoff",
    )
    return section("signoff", "Sign-off", body)
