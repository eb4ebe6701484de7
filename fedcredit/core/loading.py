"""Load a bank's loan file with pandas and check it against the schema.

Every problem is reported at once, naming the file, the column and example
lines (line numbers as an editor shows them: the header is line 1), so that a
bank engineer can fix the file in one pass instead of one error at a time.

Missing values are handled, not rejected: a missing numeric value is imputed
with the federation's global mean (inside the model, so scoring does the same)
and a missing category falls into the out-of-vocabulary bucket. A missing
target label is a blocking problem: the row cannot be learned from.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from fedcredit.core.schema import Schema

MAX_EXAMPLES = 5
BUILTIN = "<built-in lending_club>"


def builtin_csv_text() -> str:
    """The embedded LendingClub CSV (stored in JSON so that Flower's app bundle carries it)."""
    doc = json.loads((resources.files("fedcredit") / "data" / "lending_club.json").read_text(encoding="utf-8"))
    text = doc["csv"]
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != doc["csv-sha256"]:
        raise RuntimeError("fedcredit/data/lending_club.json is corrupted: its CSV does not match its SHA-256")
    return text


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file; blocking problems stop it from being used."""

    column: str | None
    message: str
    lines: tuple[int, ...] = ()
    blocking: bool = True

    def __str__(self) -> str:
        where = f"column '{self.column}': " if self.column else ""
        lines = ""
        if self.lines:
            shown = ", ".join(str(n) for n in self.lines[:MAX_EXAMPLES])
            more = f" and {len(self.lines) - MAX_EXAMPLES} more" if len(self.lines) > MAX_EXAMPLES else ""
            lines = f" (lines {shown}{more})"
        return f"{where}{self.message}{lines}"


class DataValidationError(ValueError):
    """A loan file cannot be used; the message lists every blocking problem."""

    def __init__(self, path: str | Path, problems: list[Problem]) -> None:
        self.path = str(path)
        self.problems = problems
        body = "\n".join(f"  - {p}" for p in problems if p.blocking)
        super().__init__(f"{self.path}: cannot be used for training:\n{body}")


@dataclass
class Report:
    """What validation found: the clean frame (if usable) and every finding."""

    path: str
    frame: pd.DataFrame | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.frame is not None and not any(p.blocking for p in self.problems)


def _lines(mask: pd.Series) -> tuple[int, ...]:
    """CSV line numbers of the rows where mask is true (header is line 1).

    The frame's index is the row's position in the file, blank lines included
    (see `read_text_csv`), so the numbers match what an editor shows.
    """
    return tuple(int(i) + 2 for i in mask.index[mask.to_numpy(dtype=bool)])


def validate_frame(raw: pd.DataFrame, schema: Schema, path: str = "<frame>", require_target: bool = True) -> Report:
    """Check a frame read with every column as text; convert it if it is usable."""
    problems: list[Problem] = []
    expected = list(schema.columns if require_target else schema.features)
    allowed = set(expected) | ({schema.partition} if schema.partition else set())
    if not require_target:
        allowed.add(schema.target)
    missing = [c for c in expected if c not in raw.columns]
    extra = [c for c in raw.columns if c not in allowed]
    if missing:
        problems.append(Problem(None, f"missing columns {missing}: the schema needs {expected}"))
    if extra:
        problems.append(Problem(None, f"unexpected columns {extra}: remove them (only the schema's columns may be shared)"))
    if len(raw) == 0:
        problems.append(Problem(None, "the file has a header but no data rows"))
    if len(raw) == 0:
        return Report(path, None, problems)

    frame = pd.DataFrame(index=raw.index)
    # Columns that are present are still checked, so one pass shows every problem.
    for col in (c for c in schema.numeric if c in raw.columns):
        text = raw[col]
        values = pd.to_numeric(text.str.strip(), errors="coerce")
        bad = text.notna() & values.isna()
        if bad.any():
            examples = ", ".join(repr(v) for v in text[bad].unique()[:3])
            problems.append(Problem(col, f"non-numeric values such as {examples}", _lines(bad)))
        inf = pd.Series(np.isinf(values.to_numpy(dtype=float, na_value=np.nan)), index=values.index)
        if inf.any():
            problems.append(Problem(col, "infinite values", _lines(inf)))
        n_missing = int(text.isna().sum())
        if n_missing:
            problems.append(Problem(col, f"{n_missing} missing values: imputed with the global mean", _lines(text.isna()), blocking=False))
        frame[col] = values.astype("float64")
    for col in (c for c in schema.categorical if c in raw.columns):
        text = raw[col].str.strip()
        n_missing = int(text.isna().sum())
        if n_missing:
            problems.append(Problem(col, f"{n_missing} missing values: scored as an unknown category", _lines(text.isna()), blocking=False))
        frame[col] = text.fillna("").astype(str)

    if schema.target in raw.columns:
        target = raw[schema.target].str.strip()
        labels = {schema.positive_label, schema.negative_label}
        if require_target and target.isna().any():
            problems.append(Problem(schema.target, "missing target labels: every training row needs one", _lines(target.isna())))
        unknown = target.notna() & ~target.isin(labels)
        if unknown.any():
            examples = ", ".join(repr(v) for v in target[unknown].unique()[:3])
            problems.append(Problem(
                schema.target,
                f"unknown labels {examples}: only '{schema.positive_label}' (default) and "
                f"'{schema.negative_label}' (repaid) are allowed",
                _lines(unknown),
            ))
        if require_target and not unknown.any() and target.notna().all() and target.nunique() < 2:
            only = target.iloc[0]
            problems.append(Problem(
                schema.target,
                f"only one class ('{only}') in {len(target)} rows: a model needs both defaulted and repaid loans",
            ))
        frame[schema.target] = (target == schema.positive_label).astype("int8")
    if schema.partition and schema.partition in raw.columns:
        frame[schema.partition] = raw[schema.partition].str.strip().fillna("").astype(str)

    blocking = any(p.blocking for p in problems)
    return Report(path, None if blocking else frame.reset_index(drop=True), problems)


def read_text_csv(path: str | Path) -> pd.DataFrame:
    """Read every column as text so that validation, not pandas, decides types.

    An empty path (or BUILTIN) reads the embedded data set.
    """
    if str(path) in ("", BUILTIN):
        return pd.read_csv(io.StringIO(builtin_csv_text()), dtype=str)
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, [Problem(None, "file does not exist: check the path (node config 'data-path' or run config 'data-path')")])
    try:
        # Blank lines are read (then dropped) so that the index stays the line position.
        raw = pd.read_csv(path, dtype=str, keep_default_na=True, skipinitialspace=True, skip_blank_lines=False)
        return raw.dropna(how="all")
    except pd.errors.EmptyDataError as err:
        raise DataValidationError(path, [Problem(None, "the file is empty: it needs a header line and data rows")]) from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataValidationError(path, [Problem(None, f"not a readable CSV file: {err}")]) from err


def check_csv(path: str | Path, schema: Schema, require_target: bool = True) -> Report:
    """Validate a file and return every finding (never raises for bad content)."""
    try:
        raw = read_text_csv(path)
    except DataValidationError as err:
        return Report(str(path), None, err.problems)
    return validate_frame(raw, schema, str(path) or BUILTIN, require_target)


def load_csv(path: str | Path, schema: Schema) -> pd.DataFrame:
    """A validated loan table (features typed, target as 0/1), or a clear error."""
    report = check_csv(path, schema)
    if not report.ok:
        raise DataValidationError(report.path, report.problems)
    assert report.frame is not None
    return report.frame
