"""`fedcredit predict MODEL applicants.csv`: probability of default, decision and reason codes.

Raw applicant columns go in (the model file carries its own preprocessing).
For every row out: the probability of default (PD), the decision at the
threshold ("decline" when PD >= threshold, else "approve") and up to three
reason codes: the features that raised this applicant's PD most.

Reason-code rule: replace one feature at a time by its reference value and
rescore; the feature's impact is PD(applicant) - PD(applicant with that
feature at its reference). The features with the largest positive impacts
are the reasons, largest first; a feature that does not raise the PD is
never a reason, so an applicant may have fewer than three.

* Numeric reference: the federation's global mean, read from the model's
  `standardise` Normalization layer (also what a missing value is imputed
  with, so a missing value is never a reason).
* Categorical reference: the middle category for this applicant. Every
  known category (the model's vocabulary) is tried in turn; ranked by the
  PD it gives, the median one is the reference (the lower of the two middle
  ones for an even count). It is the categorical counterpart of the mean
  (a middle-of-the-road value, not the best possible one, which would make
  almost every category a reason) and needs nothing but the model: the
  model carries no category frequencies, so the most common category
  cannot be known, and the unknown slot is trained on almost no rows. A
  missing or unknown category can be a reason.

Rows that fail validation are not scored: they keep their place in the
output with status "invalid" and the problem, and each is reported on
stderr with its CSV line and column. Exit code: 0 every row scored, 1 the
output is complete but some rows are invalid, 2 nothing could be scored
(unreadable file, missing columns, model or schema problem).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from fedcredit.core.loading import DataValidationError, Problem, read_text_csv, validate_frame
from fedcredit.core.schema import Schema, SchemaError, load_schema

TOP_REASONS = 3
CHUNK_ROWS = 1000  # applicants explained per batch: bounds memory (each is rescored ~70 times)
MIN_IMPACT = 1e-6  # PD changes below this are float noise (and the output's precision), not reasons
STATUS_SCORED, STATUS_INVALID = "scored", "invalid"


class PredictError(ValueError):
    """Nothing can be scored; the message names the file, column or value."""


@dataclass(frozen=True)
class References:
    """Reference values of the model's features (see the module docstring)."""

    numeric: dict[str, float]  # column -> global mean
    categorical: dict[str, list[str]]  # column -> the model's known categories


@dataclass(frozen=True)
class Reason:
    feature: str
    value: Any  # the applicant's value (None: missing)
    reference: Any
    impact: float  # PD points the feature's value adds over its reference


def references(model: Any) -> References:
    """Global means from the Normalization layer and vocabularies from the lookup layers."""
    names = {t.name: t.dtype for t in model.inputs}
    numeric_cols = [n for n, dtype in names.items() if dtype != "string"]
    if numeric_cols:
        try:
            concat = model.get_layer("numeric")
            order = [t.name for t in concat.input]
        except ValueError:  # one numeric column: no Concatenate layer
            order = numeric_cols
        mean = np.asarray(model.get_layer("standardise").mean, dtype=np.float64).ravel()
        numeric = {col: float(m) for col, m in zip(order, mean, strict=True)}
    else:
        numeric = {}
    categorical = {}
    for col, dtype in names.items():
        if dtype == "string":
            vocab = [str(v) for v in model.get_layer(f"onehot_{col}").get_vocabulary()[1:]]  # [0] is the unknown slot
            categorical[col] = [] if vocab == ["<none>"] else vocab  # "<none>": every category was rare
    return References(numeric, categorical)


def _explain_chunk(model: Any, frame: pd.DataFrame, refs: References) -> tuple[np.ndarray, list[list[Reason]]]:
    from fedcredit.core import model as mdl

    n = len(frame)
    variants = [frame]
    for col, mean in refs.numeric.items():
        variants.append(frame.assign(**{col: mean}))
    for col, vocab in refs.categorical.items():
        variants += [frame.assign(**{col: v}) for v in vocab]
    scores = mdl.score(model, pd.concat(variants, ignore_index=True)).reshape(len(variants), n)
    base, rows = scores[0], np.arange(n)
    impacts: dict[str, np.ndarray] = {}
    ref_values: dict[str, np.ndarray] = {}
    at = 1
    for col, mean in refs.numeric.items():
        impacts[col] = base - scores[at]
        ref_values[col] = np.full(n, mean)
        at += 1
    for col, vocab in refs.categorical.items():
        if not vocab:
            continue
        block = scores[at:at + len(vocab)]
        middle = np.argsort(block, axis=0, kind="stable")[(len(vocab) - 1) // 2]
        impacts[col] = base - block[middle, rows]
        ref_values[col] = np.asarray(vocab, dtype=object)[middle]
        at += len(vocab)
    reasons = []
    for i in range(n):
        ranked = sorted(((impacts[c][i], c) for c in impacts if impacts[c][i] > MIN_IMPACT), reverse=True)
        reasons.append([Reason(c, _value(frame[c].iloc[i]), _plain(ref_values[c][i]), float(d))
                        for d, c in ranked[:TOP_REASONS]])
    return base, reasons


def _value(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    return None if v == "" else str(v)


def _plain(v: Any) -> Any:
    return round(float(v), 6) if isinstance(v, (float, np.floating)) else str(v)


def explain(model: Any, frame: pd.DataFrame, refs: References | None = None) -> tuple[np.ndarray, list[list[Reason]]]:
    """(PD of each row, its reason codes) for a validated frame of the model's features."""
    refs = refs or references(model)
    scores, reasons = [], []
    for start in range(0, len(frame), CHUNK_ROWS):
        s, r = _explain_chunk(model, frame.iloc[start:start + CHUNK_ROWS].reset_index(drop=True), refs)
        scores.append(s)
        reasons += r
    return (np.concatenate(scores) if scores else np.empty(0)), reasons


# --- validation, row by row ---------------------------------------------------------

def _row_problem(p: Problem, raw: pd.DataFrame, line: int) -> str:
    value = raw[p.column].iloc[line - 2] if p.column in raw.columns else None
    what = ("is not a number" if p.message.startswith("non-numeric") else
            "is infinite" if p.message.startswith("infinite") else p.message)
    return f"column '{p.column}': value {value!r} {what}" if value is not None else f"column '{p.column}': {what}"


def validate_rows(raw: pd.DataFrame, schema: Schema, path: str) -> tuple[pd.DataFrame, dict[int, str], list[Problem]]:
    """(validated frame of the good rows, {row index: problem} of bad rows, notes).

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
    good = raw[features].drop(index=raw.index[sorted(bad)]).reset_index(drop=True)
    frame = pd.DataFrame(columns=list(schema.features))
    if len(good):
        again = validate_frame(good, schema, path, require_target=False)
        if again.frame is None:  # cannot happen: every row-level problem was removed
            raise PredictError(f"{path}: " + "; ".join(str(p) for p in again.problems if p.blocking))
        frame = again.frame
    return frame, {i: "; ".join(msgs) for i, msgs in bad.items()}, [p for p in report.problems if not p.blocking]


# --- output ---------------------------------------------------------------------------------

def reason_columns() -> list[str]:
    return [f"reason_{k}{part}" for k in range(1, TOP_REASONS + 1) for part in ("", "_value", "_reference", "_impact")]


OUTPUT_COLUMNS = ["line", "status", "pd", "decision", *reason_columns(), "problem"]


def records(raw: pd.DataFrame, passthrough: list[str], bad: dict[int, str], scores: np.ndarray,
            reasons: list[list[Reason]], threshold: float) -> list[dict[str, Any]]:
    """One output record per input row, in input order."""
    out = []
    scored = iter(zip(scores, reasons))
    for i in range(len(raw)):
        rec: dict[str, Any] = {"line": i + 2, **{c: _value_or_none(raw[c].iloc[i]) for c in passthrough}}
        if i in bad:
            rec.update(status=STATUS_INVALID, pd=None, decision=None, reasons=[], problem=bad[i])
        else:
            pd_, why = next(scored)
            rec.update(status=STATUS_SCORED, pd=round(float(pd_), 6),
                       decision="decline" if pd_ >= threshold else "approve",
                       reasons=[{"feature": r.feature, "value": r.value, "reference": r.reference,
                                 "impact": round(r.impact, 6)} for r in why], problem=None)
        out.append(rec)
    return out


def _value_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def flat(rec: dict[str, Any]) -> dict[str, Any]:
    """A record with its reasons spread over reason_k columns (for CSV)."""
    row = {k: v for k, v in rec.items() if k != "reasons"}
    for k in range(1, TOP_REASONS + 1):
        r = rec["reasons"][k - 1] if k <= len(rec["reasons"]) else {}
        row.update({f"reason_{k}": r.get("feature"), f"reason_{k}_value": r.get("value"),
                    f"reason_{k}_reference": r.get("reference"), f"reason_{k}_impact": r.get("impact")})
    return row


def write(recs: list[dict[str, Any]], passthrough: list[str], fmt: str, stream: TextIO) -> None:
    if fmt == "jsonl":
        stream.writelines(json.dumps(rec) + "\n" for rec in recs)
        return
    columns = ["line", *passthrough, *OUTPUT_COLUMNS[1:]]
    pd.DataFrame([flat(r) for r in recs], columns=columns).to_csv(stream, index=False, lineterminator="\n")


# --- command --------------------------------------------------------------------------------

def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold must be a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be between 0 and 1 (exclusive), got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a saved fedcredit model (.keras), e.g. RUN_DIR/model-final.keras")
    parser.add_argument("applicants", metavar="APPLICANTS_CSV", help="applicants' raw columns (the target may be absent)")
    parser.add_argument("--threshold", type=_threshold, default=0.1,
                        help="decline when the probability of default is at or above this (default 0.1)")
    parser.add_argument("--output", default="-", help="output file (default: stdout)")
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="output format (default csv)")
    parser.add_argument("--schema-path", default="", help="TOML schema of the columns (default: built-in LendingClub)")


def load_model(path: str, schema: Schema) -> Any:
    from fedcredit.core import model as mdl

    if not Path(path).is_file():
        raise PredictError(f"model file {path} does not exist")
    try:
        model = mdl.load(path)
    except Exception as err:  # Keras raises many types for a wrong or damaged file
        raise PredictError(f"{path}: cannot load the model: {' '.join(str(err).split())[:300]}") from err
    inputs = {t.name for t in model.inputs}
    if inputs != set(schema.features):
        raise PredictError(f"{path}: the model's inputs {sorted(inputs)} are not the schema's features "
                           f"{sorted(schema.features)}: pass the schema the model was trained with (--schema-path)")
    return model


def predict(args: argparse.Namespace, err: TextIO) -> int:
    try:
        schema = load_schema(args.schema_path)
    except SchemaError as e:
        raise PredictError(str(e)) from e
    path = str(args.applicants)
    try:
        raw = read_text_csv(path)
    except DataValidationError as e:
        raise PredictError(f"{e.path}: " + "; ".join(str(p) for p in e.problems)) from e
    passthrough = [c for c in raw.columns if c not in schema.features]
    clash = sorted(set(passthrough) & set(OUTPUT_COLUMNS + ["reasons"]))
    if clash:
        raise PredictError(f"{path}: column(s) {clash} clash with output columns: rename them")
    model = load_model(args.model, schema)
    frame, bad, notes = validate_rows(raw, schema, path)
    for p in notes:
        print(f"fedcredit predict: {path}: note: {p}", file=err)
    for i, problem in sorted(bad.items()):
        print(f"fedcredit predict: {path}: line {i + 2}: {problem}; row not scored (status '{STATUS_INVALID}')", file=err)
    scores, reasons = explain(model, frame)
    recs = records(raw, passthrough, bad, scores, reasons, args.threshold)
    if args.output == "-":
        write(recs, passthrough, args.format, sys.stdout)
    else:
        with open(args.output, "w", encoding="utf-8", newline="") as stream:
            write(recs, passthrough, args.format, stream)
    declined = sum(1 for r in recs if r["decision"] == "decline")
    print(f"fedcredit predict: scored {len(scores)} of {len(raw)} applicants at threshold {args.threshold:g} "
          f"({declined} decline, {len(scores) - declined} approve); {len(bad)} invalid row(s) flagged"
          + ("" if args.output == "-" else f"; wrote {args.output}"), file=err)
    return 1 if bad else 0


def run(args: argparse.Namespace) -> int:
    from fedcredit.risk.baseline import quiet_tensorflow

    quiet_tensorflow()
    try:
        return predict(args, sys.stderr)
    except PredictError as e:
        print(f"fedcredit predict: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the output file cannot be written
        print(f"fedcredit predict: error: {e}", file=sys.stderr)
        return 2
