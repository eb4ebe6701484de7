"""`fedcredit validate BANK.csv`: what a bank runs before it joins a federation.

Prints the file's size, default rate, missing values per column, the rows per
group of each protected attribute, and category values outside the schema, then every note (such as ignored columns) and
every blocking problem with its lines and columns. Exit code 0 when the file
can be used, 1 when it cannot, 2 when the schema itself is broken.

It runs the very validation a bank's statistics and training load through
(`fedcredit.core.loading.check_csv`), with the run's limits on category
values (`--max-categories`, `--max-category-length`, `--max-off-schema-share`:
set them to the run config's values if the consortium changed them), so a
file it passes is one the run accepts.

Reads the file locally and sends nothing, so, unlike the errors a ClientApp
reports to the coordinator, it may show example cell values.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from fedcredit.core.groups import attribute_index
from fedcredit.core.limits import MAX_CATEGORIES, MAX_CATEGORY_LENGTH, MAX_OFF_SCHEMA_SHARE, Limits
from fedcredit.core.loading import ValidationReport, check_csv
from fedcredit.core.schema import Schema, SchemaError, load_schema

EXAMPLE = "fedcredit validate banks/bank-0-northeast.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", help="the bank's loan file (one row per loan, the schema's columns)")
    parser.add_argument("--schema-path", default="", help="TOML schema (default: the built-in LendingClub schema)")
    parser.add_argument(
        "--max-categories",
        type=_positive,
        default=MAX_CATEGORIES,
        help="the run config's max-categories: distinct values a categorical column may have",
    )
    parser.add_argument(
        "--max-category-length",
        type=_positive,
        default=MAX_CATEGORY_LENGTH,
        help="the run config's max-category-length: characters of one category value",
    )
    parser.add_argument(
        "--max-off-schema-share",
        type=_share,
        default=MAX_OFF_SCHEMA_SHARE,
        help="the run config's max-off-schema-share: share of rows a column may have outside the schema's "
        "[categories] (such values score as unknown); more is a blocking problem",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {value}")
    return value


def summary_lines(report: ValidationReport, schema: Schema) -> list[str]:
    """Human-readable facts about a usable (or partly usable) file."""
    lines: list[str] = []
    raw = report.raw
    if raw is None:  # the problems below say why the file cannot be read
        return lines
    lines.append(f"rows: {len(raw)}, columns: {len(raw.columns)}")
    if schema.target in raw.columns:
        target = raw[schema.target].str.strip()
        n_bad = int((target == schema.positive_label).sum())
        lines.append(
            f"default rate: {n_bad}/{len(raw)} = {n_bad / max(len(raw), 1):.2%} ('{schema.positive_label}' rows)"
        )
    missing = {c: int(raw[c].isna().sum()) for c in schema.columns if c in raw.columns and raw[c].isna().any()}
    lines.append("missing values: " + (", ".join(f"{c}={n}" for c, n in missing.items()) if missing else "none"))
    present = [a for a in schema.protected if a.column in raw.columns]
    for attribute in present:  # the bank's own eyes only: group counts never leave it from here
        index = attribute_index(raw[attribute.column], attribute)
        counts = np.bincount(index, minlength=len(attribute.group_names))
        shown = ", ".join(f"{name} {int(n)}" for name, n in zip(attribute.group_names, counts))
        lines.append(f"protected '{attribute.column}' (fairness analysis only, never a model input): {shown}")
    for col, known in schema.known_categories.items():
        if col in raw.columns:
            values = raw[col].dropna().str.strip().value_counts()
            new = {v: int(n) for v, n in values.items() if v not in known}
            if new:
                shown = ", ".join(f"{v!r} ({n} rows)" for v, n in list(new.items())[:10])
                lines.append(f"column '{col}': values the schema has not seen (scored as unknown): {shown}")
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        schema = load_schema(args.schema_path)
    except SchemaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    limits = Limits(args.max_categories, args.max_category_length, args.max_off_schema_share)
    report = check_csv(args.csv, schema, limits=limits)
    print(f"{report.path}:")
    for line in summary_lines(report, schema):
        print(f"  {line}")
    notes = [p for p in report.problems if not p.blocking]
    blocking = [p for p in report.problems if p.blocking]
    for p in notes:
        print(f"  note: {p.with_examples()}")
    if blocking:
        print(f"BLOCKING: {len(blocking)} problem(s); fix them before joining:")
        for p in blocking:
            print(f"  - {p.with_examples()}")
        return 1
    print("OK: the file follows the schema and can be used for training.")
    return 0
