"""Scoring applicants with a saved model: row validation, PD, decision and output records.

Raw applicant columns go in (the model file carries its own preprocessing).
For every row out: the probability of default (PD), the decision at the
threshold ("decline" when PD >= threshold, else "approve") and up to three
reason codes (see `fedcredit.risk.explain`).

Rows that cannot be scored keep their place in the output with status
"invalid" and the problem: a value that fails validation, or a PD that is not
finite (a value so large that it overflows inside the model). A NaN never
becomes a decision. Columns that are not features (an applicant id, the
target) are passed through unchanged. This runs at the bank, so a row's
problem may quote the applicant's value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import pandas as pd

from fedcredit.core.loading import DataValidationError, Kind, Problem, read_text_csv, validate_frame
from fedcredit.core.schema import Schema
from fedcredit.risk.explain import TOP_REASONS, Reason, explain

STATUS_SCORED, STATUS_INVALID = "scored", "invalid"
NON_FINITE_PD = "the model's probability of default is not finite: check the values' magnitude"
# How a row's problem reads next to the applicant's value; other kinds use the problem's message.
ROW_WORDING = {Kind.NOT_NUMERIC: "is not a number", Kind.INFINITE: "is infinite"}


class PredictError(ValueError):
    """Nothing can be scored; the message names the file, column or value."""


@dataclass
class Scored:
    """One output record per input row (input order) and the file's non-blocking notes."""

    records: list[dict[str, Any]]
    passthrough: list[str]
    notes: list[Problem]

    @property
    def invalid(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == STATUS_INVALID]


def reason_columns() -> list[str]:
    return [f"reason_{k}{part}" for k in range(1, TOP_REASONS + 1) for part in ("", "_value", "_reference", "_impact")]


OUTPUT_COLUMNS = ["line", "status", "pd", "decision", *reason_columns(), "problem"]


# --- inputs ---------------------------------------------------------------------------------


def load_model(path: str, schema: Schema) -> Any:
    from fedcredit.core import model as mdl

    try:
        model = mdl.load(path)
    except mdl.ModelFileError as err:  # missing, or not a valid Keras model file: each says so
        raise PredictError(str(err)) from err
    inputs = {t.name for t in model.inputs}
    if inputs != set(schema.features):
        raise PredictError(
            f"{path}: the model's inputs {sorted(inputs)} are not the schema's features "
            f"{sorted(schema.features)}: pass the schema the model was trained with (--schema-path)"
        )
    return model


def read_applicants(path: str, schema: Schema) -> tuple[pd.DataFrame, list[str]]:
    """(every column as text, the non-feature columns passed through to the output)."""
    try:
        raw = read_text_csv(path)
    except DataValidationError as e:
        raise PredictError(f"{e.path}: " + "; ".join(str(p) for p in e.problems)) from e
    passthrough = [c for c in raw.columns if c not in schema.features]
    clash = sorted(set(passthrough) & set(OUTPUT_COLUMNS + ["reasons"]))
    if clash:
        raise PredictError(f"{path}: column(s) {clash} clash with output columns: rename them")
    return raw, passthrough


def _row_problem(p: Problem, raw: pd.DataFrame, line: int) -> str:
    value = raw.at[line - 2, p.column] if p.column in raw.columns else None
    what = ROW_WORDING.get(p.kind, p.message)
    return f"column '{p.column}': value {value!r} {what}" if value is not None else f"column '{p.column}': {what}"


def validate_rows(raw: pd.DataFrame, schema: Schema, path: str) -> tuple[pd.DataFrame, dict[int, str], list[Problem]]:
    """(validated frame of the good rows, {raw index label: problem} of bad rows, notes).

    raw's index is the row's position in the file (line - 2, see `read_text_csv`).
    A problem that names no line (a missing column, no rows) concerns the whole
    file and raises PredictError.
    """
    features = [c for c in raw.columns if c in schema.features]
    report = validate_frame(raw[features], schema, path, require_target=False)
    blocking = [p for p in report.problems if p.blocking]
    whole_file = [p for p in blocking if not p.lines]
    if whole_file:
        raise PredictError(f"{path}: " + "; ".join(str(p) for p in whole_file))
    bad: dict[int, list[str]] = {}
    for p in blocking:
        for line in p.lines:
            bad.setdefault(line - 2, []).append(_row_problem(p, raw, line))
    good = raw[features].drop(index=sorted(bad)).reset_index(drop=True)
    frame = pd.DataFrame(columns=list(schema.features))
    if len(good):
        again = validate_frame(good, schema, path, require_target=False)
        if again.frame is None:  # cannot happen: every row-level problem was removed
            raise PredictError(f"{path}: " + "; ".join(str(p) for p in again.problems if p.blocking))
        frame = again.frame
    return frame, {i: "; ".join(msgs) for i, msgs in bad.items()}, [p for p in report.problems if not p.blocking]


# --- scoring --------------------------------------------------------------------------------


def _finite(v: Any) -> Any:
    """A float as itself, NaN/inf as None: output is strict JSON."""
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


def records(
    raw: pd.DataFrame,
    passthrough: list[str],
    bad: dict[int, str],
    scores: np.ndarray,
    reasons: list[list[Reason]],
    threshold: float,
) -> list[dict[str, Any]]:
    """One output record per input row, in input order (scores/reasons: the rows not in `bad`)."""
    out = []
    scored = iter(zip(scores, reasons, strict=True))
    for i in raw.index:
        rec: dict[str, Any] = {"line": int(i) + 2, **{c: _finite(raw.at[i, c]) for c in passthrough}}
        problem = bad.get(i)
        pd_, why = (np.nan, []) if problem else next(scored)
        if problem is None and not math.isfinite(pd_):
            problem = NON_FINITE_PD
        if problem:
            rec.update(status=STATUS_INVALID, pd=None, decision=None, reasons=[], problem=problem)
        else:
            rec.update(
                status=STATUS_SCORED,
                pd=round(float(pd_), 6),
                decision="decline" if pd_ >= threshold else "approve",
                reasons=[
                    {
                        "feature": r.feature,
                        "value": _finite(r.value),
                        "reference": _finite(r.reference),
                        "impact": round(r.impact, 6),
                    }
                    for r in why
                ],
                problem=None,
            )
        out.append(rec)
    return out


def score_applicants(
    model: Any, raw: pd.DataFrame, passthrough: list[str], schema: Schema, path: str, threshold: float
) -> Scored:
    """Validate, score and explain every row of an applicants file."""
    frame, bad, notes = validate_rows(raw, schema, path)
    scores, reasons = explain(model, frame)
    return Scored(records(raw, passthrough, bad, scores, reasons, threshold), passthrough, notes)


# --- output ---------------------------------------------------------------------------------


def flat(rec: dict[str, Any]) -> dict[str, Any]:
    """A record with its reasons spread over reason_k columns (for CSV)."""
    row = {k: v for k, v in rec.items() if k != "reasons"}
    for k in range(1, TOP_REASONS + 1):
        r = rec["reasons"][k - 1] if k <= len(rec["reasons"]) else {}
        row.update(
            {
                f"reason_{k}": r.get("feature"),
                f"reason_{k}_value": r.get("value"),
                f"reason_{k}_reference": r.get("reference"),
                f"reason_{k}_impact": r.get("impact"),
            }
        )
    return row


def write(recs: list[dict[str, Any]], passthrough: list[str], fmt: str, stream: TextIO) -> None:
    """CSV (reasons flattened) or JSON Lines (strict JSON: allow_nan=False)."""
    if fmt == "jsonl":
        stream.writelines(json.dumps(rec, allow_nan=False) + "\n" for rec in recs)
        return
    columns = ["line", *passthrough, *OUTPUT_COLUMNS[1:]]
    pd.DataFrame([flat(r) for r in recs], columns=columns).to_csv(stream, index=False, lineterminator="\n")
