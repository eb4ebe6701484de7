"""`fedcredit predict MODEL applicants.csv`: probability of default, decision and reason codes.

Arguments and printing only; validation, scoring and reason codes live in
`fedcredit.risk.predict` and `fedcredit.risk.explain`. Invalid rows are kept
in the output (status "invalid") and each is reported on stderr with its CSV
line, column and value (this runs at the bank: nothing is sent); so is a row
scored with a value far outside the training range (status "out-of-range")
and one scored with a category the model does not know (status
"scored-with-unknown", the columns named); rows scored with missing values
(status "scored-with-missing") are counted. The schema's protected attributes
are never in the output. The output file is written
atomically (a full disk leaves no truncated file). Exit code: 0 every row
scored (unknown categories and missing values included), 1 the output is
complete but some rows are invalid or out of range, 2 nothing could be scored
(unreadable file, missing columns, model or schema problem, output not
writable).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TextIO

from fedcredit.core.schema import SchemaError, load_schema
from fedcredit.risk.predict import (
    STATUS_INVALID,
    STATUS_MISSING,
    STATUS_OUT_OF_RANGE,
    STATUS_UNKNOWN,
    PredictError,
    load_model,
    model_schema,
    read_applicants,
    score_applicants,
    write,
    write_file,
)


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's retracing warnings off the user's terminal."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold must be a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be between 0 and 1 (exclusive), got {value}")
    return value


EXAMPLE = "fedcredit predict outputs/<run>/model-final.keras banks/holdout.csv --output scores.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", metavar="MODEL", help="a saved fedcredit model (.keras), e.g. RUN_DIR/model-final.keras"
    )
    parser.add_argument(
        "applicants", metavar="APPLICANTS_CSV", help="applicants' raw columns (the target may be absent)"
    )
    parser.add_argument(
        "--threshold",
        type=_threshold,
        default=0.1,
        help="decline when the probability of default is at or above this",
    )
    parser.add_argument("--output", default="-", help="output file (default: stdout)")
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="output format")
    parser.add_argument("--schema-path", default="", help="TOML schema of the columns (default: built-in LendingClub)")


def _predict(args: argparse.Namespace, err: TextIO) -> int:
    try:
        schema = load_schema(args.schema_path)
    except SchemaError as e:
        raise PredictError(str(e)) from e
    path = str(args.applicants)
    applicants = read_applicants(path, schema)
    model = load_model(args.model, schema)
    used = model_schema(model, schema)
    left_out = [c for c in schema.features if c not in used.features]
    if left_out:
        print(f"fedcredit predict: the model leaves out {left_out} (its run's excluded-features)", file=err)
    schema = used
    result = score_applicants(model, applicants, schema, path, args.threshold)
    for p in result.notes:
        print(f"fedcredit predict: {path}: note: {p}", file=err)
    for rec in result.invalid:
        print(
            f"fedcredit predict: {path}: line {rec['line']}: {rec['problem']}; row not scored "
            f"(status '{STATUS_INVALID}')",
            file=err,
        )
    for rec in (r for r in result.records if r["status"] in (STATUS_OUT_OF_RANGE, STATUS_UNKNOWN)):
        print(f"fedcredit predict: {path}: line {rec['line']}: {rec['problem']} (status '{rec['status']}')", file=err)
    unknown, missing = len(result.with_status(STATUS_UNKNOWN)), len(result.with_status(STATUS_MISSING))
    if args.output == "-":
        write(result.records, applicants.passthrough, args.format, sys.stdout)
    else:
        write_file(result.records, applicants.passthrough, args.format, args.output)
    n_scored = len(result.records) - len(result.invalid)
    declined = sum(1 for r in result.records if r["decision"] == "decline")
    print(
        f"fedcredit predict: scored {n_scored} of {len(result.records)} applicants at threshold {args.threshold:g} "
        f"({declined} decline, {n_scored - declined} approve); {len(result.invalid)} invalid row(s) flagged, "
        f"{len(result.out_of_range)} out of range, {unknown} {STATUS_UNKNOWN}, {missing} {STATUS_MISSING}"
        + ("" if args.output == "-" else f"; wrote {args.output}"),
        file=err,
    )
    return 1 if result.invalid or result.out_of_range else 0


def run(args: argparse.Namespace) -> int:
    _quiet_tensorflow()
    try:
        return _predict(args, sys.stderr)
    except (PredictError, OSError) as e:  # OSError: e.g. the output file cannot be written
        print(f"fedcredit predict: error: {e}", file=sys.stderr)
        return 2
