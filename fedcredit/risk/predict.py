"""Scoring applicants with a saved model: row validation, PD, decision and output records.

Raw applicant columns go in (the model file carries its own preprocessing).
For every row out: the probability of default (PD), the decision at the
threshold ("decline" when PD >= threshold, else "approve") and up to four
reasons, each with the schema's statement for it (see `fedcredit.risk.explain`).

Rows are checked as a bank's training file is (`fedcredit.core.loading`:
the same numbers, the same missing values, the same line numbers). Rows that
cannot be scored keep their place in the output with status "invalid" and
the problem: a value that fails validation, a row with more fields than the
header, or a PD that is not finite. A NaN never becomes a decision. A header
that names a column twice, or a quote that never closes, stops the whole file.

A row with a numeric value far outside what the model was trained on is
scored but gets status "out-of-range" (and the columns in `problem`), never
plain "scored": the value lies more than `Z_BOUND` = 100 standard deviations
from the federation's mean, both read from the model's own Normalization
layer. The model carries no minimum or maximum (a bank's maximum would be one
borrower's value, which its statistics never reveal). By Chebyshev's
inequality at most 0.01 % of a column's training values lie that far out,
whatever their distribution. The bound is that wide because credit columns
are heavy-tailed: in the built-in data real loans reach 75 standard
deviations (`delinq_amnt`), and with a bound of 10 0.8 % of them would be
flagged. It still catches magnitude mistakes: an income with three zeros too
many is some 1,000 standard deviations out. Review such a row by hand rather
than act on its decision.

A row scored with a value the model has no weight of its own for is not
plain "scored" either: "scored-with-unknown" when a category is outside the
model's vocabulary and the schema's `[categories]` (such as `term_48`: it
scores as the unknown category, which training filled with rare and missing
values, and that can move the PD enough to flip the decision), and
"scored-with-missing" when a value is missing (a number imputed with the
federation's mean, a category scored as unknown). `problem` names the
columns; a row with several of these gets the most serious status
(out-of-range, then unknown, then missing) and every note.

Columns that are not features (an applicant id, the target) are passed
through unchanged, except the schema's protected attributes
(`[protected.<column>]`: sex, age, marital status): they are never in the
output, so a scored file cannot carry them next to the decisions. A model
trained with `excluded-features` scores without those columns (they are
neither required nor passed through). This runs at the bank, so a row's
problem may quote the applicant's value. `write_file` writes the output
atomically: a full disk leaves the previous file (or none), never a
truncated one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from fedcredit.core.limits import MAX_ABS_VALUE
from fedcredit.core.loading import DataValidationError, Kind, Problem, duplicate_problems, read_table, validate_frame
from fedcredit.core.schema import Schema
from fedcredit.federation.outputs import write_atomically
from fedcredit.risk.explain import TOP_REASONS, Reason, References, explain, references

STATUS_SCORED, STATUS_INVALID, STATUS_OUT_OF_RANGE = "scored", "invalid", "out-of-range"
STATUS_UNKNOWN, STATUS_MISSING = "scored-with-unknown", "scored-with-missing"
NON_FINITE_PD = "the model's probability of default is not finite: check the values' magnitude"
RAGGED_ROW = "the row has more fields than the header: remove the extra fields or quote values that contain commas"
# How a row's problem reads next to the applicant's value; other kinds use the problem's message.
ROW_WORDING = {
    Kind.NOT_NUMERIC: "is not a number",
    Kind.INFINITE: "is infinite",
    Kind.TOO_LARGE: f"is beyond +-{MAX_ABS_VALUE:g}",
}
# A value farther than this many of the federation's standard deviations from its mean is out of range.
Z_BOUND = 100.0


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

    @property
    def out_of_range(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == STATUS_OUT_OF_RANGE]

    def with_status(self, status: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == status]


@dataclass
class Applicants:
    """An applicants file as text (indexed by line), the columns passed through, and its ragged lines."""

    raw: pd.DataFrame
    passthrough: list[str]
    ragged: tuple[int, ...] = ()


def reason_columns() -> list[str]:
    parts = ("", "_text", "_value", "_reference", "_impact")
    return [f"reason_{k}{part}" for k in range(1, TOP_REASONS + 1) for part in parts]


OUTPUT_COLUMNS = ["line", "status", "pd", "decision", *reason_columns(), "problem"]


# --- inputs ---------------------------------------------------------------------------------


def load_model(path: str, schema: Schema) -> Any:
    from fedcredit.core import model as mdl

    try:
        model = mdl.load(path)
    except mdl.ModelFileError as err:  # missing, or not a valid Keras model file: each says so
        raise PredictError(str(err)) from err
    inputs = {t.name for t in model.inputs}
    if not inputs or not inputs <= set(schema.features):
        raise PredictError(
            f"{path}: the model's inputs {sorted(inputs)} are not the schema's features "
            f"{sorted(schema.features)}: pass the schema the model was trained with (--schema-path)"
        )
    return model


def model_schema(model: Any, schema: Schema) -> Schema:
    """The schema as the model uses it: less the features its run left out (`excluded-features`)."""
    inputs = {t.name for t in model.inputs}
    return schema.without([c for c in schema.features if c not in inputs])


def read_applicants(path: str, schema: Schema) -> Applicants:
    """The file as text (rows indexed by their line), the columns passed through, its ragged lines.

    Passed through: every column that is neither a feature nor a protected
    attribute of the schema (a protected column is dropped from the output).

    Read as a bank's training file is (`fedcredit.core.loading.read_table`);
    a header naming a column twice or a quote that never closes stops the file.
    """
    try:
        table = read_table(path)
    except DataValidationError as e:
        raise PredictError(f"{e.path}: " + "; ".join(str(p) for p in e.problems)) from e
    whole_file = [p for p in table.problems if p.kind != Kind.RAGGED_ROW]
    whole_file += duplicate_problems(table.duplicates, schema)
    if whole_file:
        raise PredictError(f"{path}: " + "; ".join(p.with_examples() for p in whole_file))
    raw = table.frame
    passthrough = [c for c in raw.columns if c not in schema.features and c not in schema.protected_columns]
    clash = sorted(set(passthrough) & set(OUTPUT_COLUMNS + ["reasons"]))
    if clash:
        raise PredictError(f"{path}: column(s) {clash} clash with output columns: rename them")
    return Applicants(raw, passthrough, table.ragged)


def _row_problem(p: Problem, raw: pd.DataFrame, label: int) -> str:
    value = raw.at[label, p.column] if p.column in raw.columns else None
    what = ROW_WORDING.get(p.kind, p.message)
    return f"column '{p.column}': value {value!r} {what}" if value is not None else f"column '{p.column}': {what}"


def validate_rows(
    raw: pd.DataFrame, schema: Schema, path: str, ragged: tuple[int, ...] = ()
) -> tuple[pd.DataFrame, dict[int, str], list[Problem]]:
    """(validated frame of the good rows, {raw index label: problem} of bad rows, notes).

    raw's index labels are the rows' lines (`read_table`); `ragged` the labels
    of rows with more fields than the header. A problem that names no line (a
    missing column, no rows) concerns the whole file and raises PredictError.
    """
    features = [c for c in raw.columns if c in schema.features]
    rows = raw[features].drop(index=list(ragged))
    report = validate_frame(rows, schema, path, require_target=False, limits=None)
    blocking = [p for p in report.problems if p.blocking]
    whole_file = [p for p in blocking if not p.lines]
    if whole_file:
        raise PredictError(f"{path}: " + "; ".join(str(p) for p in whole_file))
    bad: dict[int, list[str]] = {label: [RAGGED_ROW] for label in ragged}
    for p in blocking:
        for label in p.lines:
            bad.setdefault(label, []).append(_row_problem(p, raw, label))
    good = raw[features].drop(index=sorted(bad)).reset_index(drop=True)
    frame = pd.DataFrame(columns=list(schema.features))
    if len(good):
        again = validate_frame(good, schema, path, require_target=False, limits=None)
        if again.frame is None:  # cannot happen: every row-level problem was removed
            raise PredictError(f"{path}: " + "; ".join(str(p) for p in again.problems if p.blocking))
        frame = again.frame
    return frame, {i: "; ".join(msgs) for i, msgs in bad.items()}, [p for p in report.problems if not p.blocking]


def out_of_range(frame: pd.DataFrame, refs: References) -> list[list[str]]:
    """Per row of a validated frame, its numeric columns more than Z_BOUND standard deviations from the mean.

    Mean and standard deviation are the federation's, from the model's
    Normalization layer (`References`); a missing value is never out of
    range (it is imputed with the mean). A column whose values never varied
    (standard deviation 0) flags any other value.
    """
    flagged: list[list[str]] = [[] for _ in range(len(frame))]
    for col, mean in refs.numeric.items():
        if col not in frame.columns:
            continue
        values = frame[col].to_numpy(dtype=np.float64)
        sd = refs.spread.get(col, 0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            far = np.abs(values - mean) > Z_BOUND * sd if sd > 0 else np.abs(values - mean) > 1e-9 * max(abs(mean), 1)
        for i in np.flatnonzero(far & ~np.isnan(values)):
            flagged[i].append(col)
    return flagged


def out_of_range_problem(columns: list[str]) -> str:
    return (
        f"outside the training range: {', '.join(columns)} (more than {Z_BOUND:g} standard deviations from the "
        "federation's mean): scored, but the model has hardly seen such values; check them and review by hand"
    )


def unknown_categories(frame: pd.DataFrame, refs: References, schema: Schema) -> list[list[str]]:
    """Per row of a validated frame, its categorical columns holding a value the model never learned from.

    That is a value neither in the model's vocabulary (its lookup layers,
    `References`) nor among the schema's agreed categories: an agreed value
    outside the vocabulary is one too rare in the federation, which training
    put into the same unknown slot, so the model did learn from it. A missing
    category is not unknown here (`missing_values` names it).
    """
    flagged: list[list[str]] = [[] for _ in range(len(frame))]
    for col, vocab in refs.categorical.items():
        if col not in frame.columns:
            continue
        learned = set(vocab) | set(schema.known_categories.get(col, ()))
        values = frame[col].astype(str)
        for i in np.flatnonzero(((values != "") & ~values.isin(learned)).to_numpy()):
            flagged[i].append(col)
    return flagged


def missing_values(frame: pd.DataFrame, schema: Schema) -> list[list[str]]:
    """Per row of a validated frame, its feature columns with a missing value (NaN number, empty category)."""
    flagged: list[list[str]] = [[] for _ in range(len(frame))]
    for col in (c for c in schema.features if c in frame.columns):
        column = frame[col]
        empty = column.isna() if col in schema.numeric else column.astype(str) == ""
        for i in np.flatnonzero(empty.to_numpy()):
            flagged[i].append(col)
    return flagged


@dataclass(frozen=True)
class Flags:
    """Why a scored row is not plain `scored`: its columns out of range, with an unknown category, missing."""

    far: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The most serious one: a value the model hardly saw, then one it never learned, then an imputed one."""
        if self.far:
            return STATUS_OUT_OF_RANGE
        if self.unknown:
            return STATUS_UNKNOWN
        return STATUS_MISSING if self.missing else STATUS_SCORED

    @property
    def problem(self) -> str | None:
        notes = [out_of_range_problem(self.far)] if self.far else []
        if self.unknown:
            notes.append(
                f"categories the model never learned, scored as unknown: {', '.join(self.unknown)} (values neither "
                "the schema's [categories] nor the model's vocabulary name): check the value and review the "
                "decision by hand"
            )
        if self.missing:
            notes.append(
                f"missing values: {', '.join(self.missing)} (a number is imputed with the federation's mean, "
                "a category scores as unknown)"
            )
        return "; ".join(notes) or None


def row_flags(frame: pd.DataFrame, schema: Schema, refs: References) -> list[Flags]:
    """Per row of a validated frame, what keeps it from plain `scored`."""
    return [
        Flags(far, unknown, missing)
        for far, unknown, missing in zip(
            out_of_range(frame, refs),
            unknown_categories(frame, refs, schema),
            missing_values(frame, schema),
            strict=True,
        )
    ]


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
    flags: list[Flags] | None = None,
) -> list[dict[str, Any]]:
    """One output record per input row, in input order (scores/reasons/flags: the rows not in `bad`).

    raw's index labels are the rows' lines.
    """
    out = []
    scored = iter(zip(scores, reasons, flags if flags is not None else [Flags()] * len(scores), strict=True))
    for i in raw.index:
        rec: dict[str, Any] = {"line": int(i), **{c: _finite(raw.at[i, c]) for c in passthrough}}
        problem = bad.get(i)
        pd_, why, flagged = (np.nan, [], Flags()) if problem else next(scored)
        if problem is None and not math.isfinite(pd_):
            problem = NON_FINITE_PD
        if problem:
            rec.update(status=STATUS_INVALID, pd=None, decision=None, reasons=[], problem=problem)
        else:
            rec.update(
                status=flagged.status,
                pd=round(float(pd_), 6),
                decision="decline" if pd_ >= threshold else "approve",
                reasons=[
                    {
                        "feature": r.feature,
                        "text": r.text,
                        "value": _finite(r.value),
                        "reference": _finite(r.reference),
                        "impact": round(r.impact, 6),
                    }
                    for r in why
                ],
                problem=flagged.problem,
            )
        out.append(rec)
    return out


def score_applicants(model: Any, applicants: Applicants, schema: Schema, path: str, threshold: float) -> Scored:
    """Validate, score, explain and flag (out of range, unknown, missing) every row of an applicants file."""
    raw, passthrough = applicants.raw, applicants.passthrough
    frame, bad, notes = validate_rows(raw, schema, path, applicants.ragged)
    refs = references(model, schema)
    scores, reasons = explain(model, frame, refs)
    flags = row_flags(frame, schema, refs)
    return Scored(records(raw, passthrough, bad, scores, reasons, threshold, flags), passthrough, notes)


# --- output ---------------------------------------------------------------------------------


def flat(rec: dict[str, Any]) -> dict[str, Any]:
    """A record with its reasons spread over reason_k columns (for CSV)."""
    row = {k: v for k, v in rec.items() if k != "reasons"}
    for k in range(1, TOP_REASONS + 1):
        r = rec["reasons"][k - 1] if k <= len(rec["reasons"]) else {}
        row.update(
            {
                f"reason_{k}": r.get("feature"),
                f"reason_{k}_text": r.get("text"),
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


def write_file(recs: list[dict[str, Any]], passthrough: list[str], fmt: str, path: str | Path) -> Path:
    """`write` into a file, atomically: a failed write (a full disk) leaves the previous file, never a truncated one."""

    def fill(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as stream:
            write(recs, passthrough, fmt, stream)

    return write_atomically(Path(path), fill)
