"""The report's evidence that each decision can be defended: how often each reason is given, and monotonicity.

Two parts of the validation pack (report.json), both from the run directory:

* `reasons_part`: from reasons.json, the banks' counts of the final model's
  reasons among the validation loans it declines, pooled (and per bank in
  plain mode), as shares with Wilson intervals beside the statement a notice
  prints for each feature (`explain.References.text`); in a simulation also the
  same counts on the coordinator's hold-out loans, computed here with the
  final model (a deployment's coordinator has no loan rows).
* `monotonicity_part`: for every constraint the schema declares, the check
  of `fedcredit.risk.monotone` over the feature's grid with the other
  features at typical values, which needs no rows (numeric features at the
  federation's mean from the model, categories at the most common value of
  the banks' pooled training profile in profile.json), and in a simulation
  also over `HOLDOUT_ROWS` hold-out loans; beside it what each bank checked
  on its own validation loans (reasons.json); and the partial dependence of
  the strongest features.

Everything is a pure function of the run directory, so a rebuilt report
gives the same report.json. No HTML, no plotting (`report_decisions`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from fedcredit.core.binned import rate
from fedcredit.risk.explain import TOP_REASONS, References, references
from fedcredit.risk.monotone import TOLERANCE, check_monotone, partial_dependence, summary, typical_row
from fedcredit.risk.reason_counts import count_reasons, frequency_table
from fedcredit.risk.rundir import Run, RunDirError, holdout

HOLDOUT_ROWS = 500  # hold-out loans the report checks the constraints and draws partial dependence on
PD_FEATURES = 6  # the strongest features in the partial-dependence figure
SAMPLE_SEED = 0
RULE = (
    "A feature is a reason when the loan's value gives a higher PD than the feature's lowest-risk value would, "
    f"all other values kept; the reasons are the (at most {TOP_REASONS}) largest such increases, largest first. The "
    "lowest-risk value of a monotone feature is the low-risk end of its known range (the federation's mean +- 2 "
    "standard deviations, within the schema's bounds) or the first (last) rank of an ordered category, the same "
    "for every applicant; of another feature, the value of a 21-point grid over that range (or the known category) "
    "that gives this applicant the lowest PD. A missing value or a category the model does not know is never a "
    "reason; a declined loan whose every value is at or beyond its lowest-risk value has none."
)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _schema(run: Run) -> Any:
    from fedcredit.core.banks import schema_of
    from fedcredit.core.schema import SchemaError

    try:
        return schema_of(run.cfg)
    except SchemaError as err:
        raise RunDirError(f"{run.dir / 'config.json'}: {err}") from err


def _loans(name: str, count: int) -> str:
    return f"{count} {name}{'s' if count != 1 else ''}"


def _frequencies(counts: dict[str, Any], texts: dict[str, str], described: str) -> dict[str, Any]:
    """One set of declined loans: how many, and each feature's shares as first and as any reason."""
    n = int(counts["declined"])
    return {
        "rows": {"loans": int(counts["rows"]), "declined": n, "no-reason": int(counts["no-reason"])},
        "described": described,
        "declined-rate": rate(n, int(counts["rows"])).to_json(),
        "no-reason-share": rate(int(counts["no-reason"]), n).to_json(),
        "table": frequency_table(counts, texts),
    }


def _holdout_sample(run: Run) -> tuple[pd.DataFrame | None, str]:
    """The run's hold-out loans (simulation), or None and why not."""
    if not run.cfg.holdout_eval:
        return None, "the coordinator holds no loan rows (a deployment: hold-out evaluation was off)"
    try:
        return holdout(run), ""
    except RunDirError as err:
        return None, str(err)


def _bank_parts(record: dict[str, Any], texts: dict[str, str], out: dict[str, Any]) -> list[str]:
    """The pooled and per-bank parts of reasons.json into `out`; the notes on who was refused or failed."""
    notes: list[str] = []
    pooled, over = record.get("pooled"), record.get("pooled-over") or []
    if pooled is not None:
        described = (
            f"declined loans among the pooled validation loans of {_loans('bank', len(over))}, final model "
            f"(round {record.get('round')}), explained at each bank"
        )
        out["validation"] = _frequencies(pooled, texts, described)
    for bank, counts in (record.get("banks") or {}).items():
        top = [r["feature"] for r in frequency_table(counts, texts) if r["first"]][:3]
        out["banks"].append(
            {
                "bank": bank,
                "loans": counts["rows"],
                "declined": counts["declined"],
                "no-reason": counts["no-reason"],
                "top-first-reasons": top,
            }
        )
    notes += [f"{b}: reason counts refused: {w}" for b, w in (record.get("refused") or {}).items()]
    notes += [f"{b}: no reason counts: {w}" for b, w in (record.get("failed") or {}).items()]
    if record.get("not-pooled"):
        notes.append(f"no pooled reason counts: {record['not-pooled']}")
    if record.get("mode") == "secure":
        notes.append("Secure mode: only the securely summed counts of all banks exist; no bank's own.")
    return notes


def reasons_part(run: Run, model: Any | None) -> dict[str, Any]:
    """The reasons section's data: the banks' pooled counts (reasons.json), per bank, and the hold-out loans'."""
    threshold = run.cfg.threshold
    out: dict[str, Any] = {"threshold": threshold, "rule": RULE, "validation": None, "holdout": None, "banks": []}
    notes: list[str] = []
    record = _read_json(run.dir / "reasons.json")
    schema = _schema(run)
    refs = references(model, schema) if model is not None else None
    # What a notice prints for each feature: the schema's statement where the model holds its direction.
    texts = {f: refs.text(f) if refs is not None else schema.reason_text(f) for f in schema.features}
    if record is None:
        notes.append("This run has no reasons.json: it predates the reasons step or stopped before it.")
    elif "error" in record or "features" not in record:
        notes.append(f"reasons.json holds no counts: {record.get('error')}")
    else:
        try:
            notes += _bank_parts(record, texts, out)
        except (KeyError, TypeError, ValueError, AttributeError) as err:  # a hand-edited file: say so, go on
            out["validation"], out["banks"] = None, []
            notes.append(f"reasons.json is not in the layout of fedcredit.federation.reasons ({err!r}): not shown.")
    frame, why = _holdout_sample(run)
    if model is not None and frame is not None:
        counts = count_reasons(model, frame, threshold, schema.features, refs)
        checked = {**counts, **{k: dict(zip(schema.features, counts[k], strict=True)) for k in ("first", "any")}}
        described = (
            f"declined loans among the coordinator's {len(frame)} hold-out loans (never trained on), final model, "
            "explained when the report was built"
        )
        out["holdout"] = _frequencies(checked, texts, described)
    else:
        out["holdout-why"] = why or "no model to explain the hold-out loans with"
    out["why"] = " ".join(notes) or None
    return out


def _category_counts(profile: Any) -> dict[str, dict[str, int]]:
    """Column -> {category: training loans} of the banks' pooled profile (profile.json), where it has one."""
    try:
        pooled = profile["pooled"]["train"]["categorical"]
        names = profile["features"]["categorical"]
        return {col: dict(zip(names[col], pooled[col]["counts"], strict=False)) for col in pooled}
    except (KeyError, TypeError):
        return {}


def _typical(refs: References, run: Run, rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    counts = _category_counts(_read_json(run.dir / "profile.json"))
    source = (
        "the most common value among the banks' pooled training loans (profile.json)"
        if counts
        else ("the most common value among the hold-out loans checked" if len(rows) else "the middle known level")
    )
    return typical_row(refs, rows, counts), source


def monotonicity_part(run: Run, model: Any | None, model_why: str = "") -> dict[str, Any]:
    """The monotonicity section's data: the check per declared constraint, the banks' own counts, partial dependence."""
    schema = _schema(run)
    out: dict[str, Any] = {"constraints": len(schema.directions), "tolerance": TOLERANCE, "banks": _bank_checks(run)}
    if not schema.directions:
        out["why"] = "The schema declares no monotone constraint ([monotone]): there is nothing to check."
        return out
    if model is None:
        out["why"] = f"No model to check: {model_why or 'model-final.keras cannot be loaded'}"
        return out
    refs = references(model, schema)
    frame, why = _holdout_sample(run)
    rows = frame if frame is not None else pd.DataFrame(columns=refs.features)
    if len(rows) > HOLDOUT_ROWS:
        rows = rows.sample(n=HOLDOUT_ROWS, random_state=SAMPLE_SEED).sort_index()
    rows = rows[refs.features].reset_index(drop=True)
    typical, source = _typical(refs, run, rows)
    table = check_monotone(model, rows, schema, refs, typical=typical)
    table["status"] = ["pass" if v == 0 else "fail" for v in table["violations"]]
    described = (
        "the typical applicant (numeric features at the federation's mean, each category at "
        + source
        + ")"
        + (f" and {len(rows)} hold-out loans, each with its other values kept" if len(rows) else "")
    )
    curves = partial_dependence(model, rows if len(rows) else typical[refs.features], top=PD_FEATURES, refs=refs)
    out.update(
        {
            "rows": described,
            "holdout-rows": len(rows),
            "holdout-why": None if len(rows) else why,
            "typical": {k: _plain(v) for k, v in typical.iloc[0].items()},
            "checks": [{k: _plain(v) for k, v in row.items()} for row in table.to_dict(orient="records")],
            "summary": dict(summary(table)),
            "partial-dependence": {
                "rows": (
                    f"mean PD over the {len(rows)} hold-out loans"
                    if len(rows)
                    else "the PD of the typical applicant (the coordinator holds no loan rows)"
                ),
                "directions": {c: refs.direction[c] for c in refs.direction},
                "table": [{k: _plain(v) for k, v in r.items()} for r in curves.to_dict(orient="records")],
            },
        }
    )
    return out


def _bank_checks(run: Run) -> dict[str, Any] | None:
    """What the banks checked on their own validation loans (reasons.json): pooled, and per bank in plain mode."""
    record = _read_json(run.dir / "reasons.json")
    pooled = record.get("pooled") if isinstance(record, dict) else None
    if not pooled:
        return None
    try:
        return _bank_check_part(record, pooled)
    except (KeyError, TypeError, ValueError, AttributeError):  # a hand-edited file: the reasons section says so
        return None


def _bank_check_part(record: dict[str, Any], pooled: dict[str, Any]) -> dict[str, Any]:
    over = record.get("pooled-over") or []
    return {
        "rows": pooled["monotone-rows"],
        "violations": pooled["monotone-violations"],
        "described": (
            f"up to {record.get('monotone-rows-per-bank')} validation loans at each of {_loans('bank', len(over))}, "
            "checked there with the final model (reported by the banks: the coordinator cannot see these rows)"
        ),
        "per-bank": {
            bank: {"rows": c["monotone-rows"], "violations": sum(c["monotone-violations"].values())}
            for bank, c in (record.get("banks") or {}).items()
        },
    }


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
