"""Load a bank's loan file with pandas and check it against the schema.

Every problem is reported at once, naming the file, the column and example
lines (line numbers as an editor shows them: the header is line 1), so that a
bank engineer can fix the file in one pass instead of one error at a time.

A problem's text never quotes a cell: `DataValidationError` travels from a
bank's ClientApp to the coordinator's log, so only file, column, line numbers
and the kind of problem may leave the bank. Example values stay on the
`Problem` (`examples`), printed only by the local `fedcredit validate`.

Columns outside the schema (customer id, branch, dates) are ignored: they are
never part of the returned frame, so never in statistics, training or
evaluation, and never sent. Missing values are handled, not rejected: a
missing numeric value is imputed with the federation's global mean (inside
the model, so scoring does the same) and a missing category falls into the
out-of-vocabulary bucket. A missing target label is a blocking problem: the
row cannot be learned from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from fedcredit.core.schema import Schema

MAX_EXAMPLES = 5
BUILTIN = "<built-in lending_club>"
# Delimiters a spreadsheet may have saved instead of commas, as named in the hint.
OTHER_DELIMITERS = {";": "semicolons (;)", "\t": "tabs", "|": "vertical bars (|)"}


def builtin_csv_text() -> str:
    """The embedded LendingClub CSV (stored in JSON so that Flower's app bundle carries it)."""
    doc = json.loads((resources.files("fedcredit") / "data" / "lending_club.json").read_text(encoding="utf-8"))
    text = doc["csv"]
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != doc["csv-sha256"]:
        raise RuntimeError("fedcredit/data/lending_club.json is corrupted: its CSV does not match its SHA-256")
    return text


class Kind(StrEnum):
    """What is wrong, so that callers decide by kind and never by message text."""

    MISSING_FILE = "missing-file"
    EMPTY = "empty"
    NO_ROWS = "no-rows"
    ENCODING = "encoding"
    DELIMITER = "delimiter"
    RAGGED_ROW = "ragged-row"
    UNREADABLE = "unreadable"
    MISSING_COLUMN = "missing-column"
    IGNORED_COLUMNS = "ignored-columns"
    NOT_NUMERIC = "not-numeric"
    INFINITE = "infinite"
    MISSING_VALUE = "missing-value"
    MISSING_LABEL = "missing-label"
    UNKNOWN_LABEL = "unknown-label"
    ONE_CLASS = "one-class"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file; blocking problems stop it from being used.

    `message` (and so `str`) names no cell value; `examples` holds a few of the
    offending values for the bank's own eyes (`with_examples`).
    """

    kind: Kind
    column: str | None
    message: str
    lines: tuple[int, ...] = ()
    blocking: bool = True
    examples: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"column '{self.column}': " if self.column else ""
        lines = ""
        if self.lines:
            shown = ", ".join(str(n) for n in self.lines[:MAX_EXAMPLES])
            more = f" and {len(self.lines) - MAX_EXAMPLES} more" if len(self.lines) > MAX_EXAMPLES else ""
            lines = f" (lines {shown}{more})"
        return f"{where}{self.message}{lines}"

    def with_examples(self) -> str:
        """The text plus example values: only for output that stays on the bank's machine."""
        if not self.examples:
            return str(self)
        return f"{self}; e.g. {', '.join(repr(v) for v in self.examples)}"


class DataValidationError(ValueError):
    """A loan file cannot be used; the message lists every blocking problem (no cell values)."""

    def __init__(self, path: str | Path, problems: list[Problem]) -> None:
        self.path = str(path)
        self.problems = problems
        body = "\n".join(f"  - {p}" for p in problems if p.blocking)
        super().__init__(f"{self.path}: cannot be used for training:\n{body}")


@dataclass
class ValidationReport:
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


def _examples(values: pd.Series) -> tuple[str, ...]:
    return tuple(str(v) for v in values.unique()[:3])


def validate_frame(
    raw: pd.DataFrame, schema: Schema, path: str = "<frame>", require_target: bool = True
) -> ValidationReport:
    """Check a frame read with every column as text; convert it if it is usable."""
    problems: list[Problem] = []
    expected = list(schema.columns if require_target else schema.features)
    allowed = set(expected) | ({schema.partition} if schema.partition else set())
    if not require_target:
        allowed.add(schema.target)
    missing = [c for c in expected if c not in raw.columns]
    extra = [c for c in raw.columns if c not in allowed]
    if missing:
        header = "" if len(missing) < len(expected) else " (none of them is in the first line: it must be the header)"
        problems.append(
            Problem(Kind.MISSING_COLUMN, None, f"missing columns {missing}: the schema needs {expected}{header}")
        )
    if extra:
        problems.append(
            Problem(
                Kind.IGNORED_COLUMNS,
                None,
                f"ignored columns: {extra} (not in the schema: not used, never sent)",
                blocking=False,
            )
        )
    if len(raw) == 0:
        problems.append(Problem(Kind.NO_ROWS, None, "the file has a header but no data rows"))
        return ValidationReport(path, None, problems)

    frame = pd.DataFrame(index=raw.index)
    # Columns that are present are still checked, so one pass shows every problem.
    for col in (c for c in schema.numeric if c in raw.columns):
        text = raw[col]
        values = pd.to_numeric(text.str.strip(), errors="coerce")
        bad = text.notna() & values.isna()
        if bad.any():
            problems.append(
                Problem(
                    Kind.NOT_NUMERIC,
                    col,
                    "values that are not numbers: write plain numbers such as "
                    "1234.5 (no thousands separators, currency or % signs)",
                    _lines(bad),
                    examples=_examples(text[bad]),
                )
            )
        inf = pd.Series(np.isinf(values.to_numpy(dtype=float, na_value=np.nan)), index=values.index)
        if inf.any():
            problems.append(
                Problem(
                    Kind.INFINITE, col, "infinite values: write a finite number or leave the cell empty", _lines(inf)
                )
            )
        n_missing = int(text.isna().sum())
        if n_missing:
            problems.append(
                Problem(
                    Kind.MISSING_VALUE,
                    col,
                    f"{n_missing} missing values: imputed with the global mean",
                    _lines(text.isna()),
                    blocking=False,
                )
            )
        frame[col] = values.astype("float64")
    for col in (c for c in schema.categorical if c in raw.columns):
        text = raw[col].str.strip()
        n_missing = int(text.isna().sum())
        if n_missing:
            problems.append(
                Problem(
                    Kind.MISSING_VALUE,
                    col,
                    f"{n_missing} missing values: scored as an unknown category",
                    _lines(text.isna()),
                    blocking=False,
                )
            )
        frame[col] = text.fillna("").astype(str)

    if schema.target in raw.columns:
        target = raw[schema.target].str.strip()
        labels = {schema.positive_label, schema.negative_label}
        allowed_labels = f"'{schema.positive_label}' (default) and '{schema.negative_label}' (repaid)"
        if require_target and target.isna().any():
            problems.append(
                Problem(
                    Kind.MISSING_LABEL,
                    schema.target,
                    "missing target labels: every training row needs one",
                    _lines(target.isna()),
                )
            )
        unknown = target.notna() & ~target.isin(labels)
        if unknown.any():
            problems.append(
                Problem(
                    Kind.UNKNOWN_LABEL,
                    schema.target,
                    f"unknown labels: only {allowed_labels} are allowed",
                    _lines(unknown),
                    examples=_examples(target[unknown]),
                )
            )
        if require_target and not unknown.any() and target.notna().all() and target.nunique() < 2:
            problems.append(
                Problem(
                    Kind.ONE_CLASS,
                    schema.target,
                    f"only one class in {len(target)} rows: a model needs both {allowed_labels} loans",
                    examples=(str(target.iloc[0]),),
                )
            )
        frame[schema.target] = (target == schema.positive_label).astype("int8")
    if schema.partition and schema.partition in raw.columns:
        frame[schema.partition] = raw[schema.partition].str.strip().fillna("").astype(str)

    blocking = any(p.blocking for p in problems)
    return ValidationReport(path, None if blocking else frame.reset_index(drop=True), problems)


# --- reading --------------------------------------------------------------------------------


def _encoding_problem(path: Path) -> Problem:
    """Which lines are not UTF-8 (each line decoded on its own)."""
    bad = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(number)
    return Problem(
        Kind.ENCODING, None, "text that is not UTF-8: save the file as UTF-8 (in Excel: 'CSV UTF-8')", tuple(bad)
    )


def _delimiter_problem(header: list[str]) -> Problem | None:
    """A one-column header holding another delimiter: the file was not saved comma-separated."""
    if len(header) != 1:
        return None
    found = [d for d in OTHER_DELIMITERS if d in str(header[0])]
    if not found:
        return None
    name = OTHER_DELIMITERS[max(found, key=lambda d: str(header[0]).count(d))]
    return Problem(
        Kind.DELIMITER,
        None,
        f"the header line is a single column containing {name}: the file seems to "
        "be separated by them; save it as comma-separated values (CSV)",
        (1,),
    )


def _ragged_lines(text: str) -> tuple[int, ...]:
    """Editor line numbers of records with more fields than the header."""
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    width, ragged, first_line = None, [], 1
    for fields in reader:
        if width is None:
            width = len(fields)
        elif len(fields) > width:
            ragged.append(first_line)
        first_line = reader.line_num + 1
    return tuple(ragged)


def _unparsable(text: str, err: Exception) -> Problem:
    """Why pandas could not split the file into the header's columns."""
    header = next(csv.reader(io.StringIO(text), skipinitialspace=True), [])
    delimiter = _delimiter_problem(header)
    if delimiter:
        return delimiter
    ragged = _ragged_lines(text)
    if ragged:
        return Problem(
            Kind.RAGGED_ROW,
            None,
            f"rows with more fields than the header's {len(header)}: remove the "
            "extra fields or quote values that contain commas",
            ragged,
        )
    # pandas' own messages (e.g. an unclosed quote) name lines, never cell values.
    return Problem(Kind.UNREADABLE, None, f"not a readable CSV file: {' '.join(str(err).split())}")


def read_text_csv(path: str | Path) -> pd.DataFrame:
    """Read every column as text so that validation, not pandas, decides types.

    The index is the row's position in the file (blank lines are read, then
    dropped) and the first column is never taken as an index, so that line
    numbers match an editor. An empty path (or BUILTIN) reads the embedded data set.
    """
    builtin = str(path) in ("", BUILTIN)
    path = Path(BUILTIN if builtin else path)
    if not builtin and not path.is_file():
        raise DataValidationError(
            path,
            [
                Problem(
                    Kind.MISSING_FILE,
                    None,
                    "file does not exist: check the path (node config 'data-path' or run config 'data-path')",
                )
            ],
        )
    source = io.StringIO(builtin_csv_text()) if builtin else path
    try:
        with warnings.catch_warnings():
            # pandas only warns when the first data row has more fields than the header (and drops them).
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(
                source,
                dtype=str,
                keep_default_na=True,
                skipinitialspace=True,
                skip_blank_lines=False,
                index_col=False,
                encoding="utf-8-sig",
            )
    except pd.errors.EmptyDataError as err:
        raise DataValidationError(
            path, [Problem(Kind.EMPTY, None, "the file is empty: it needs a header line and data rows")]
        ) from err
    except UnicodeDecodeError as err:
        raise DataValidationError(path, [_encoding_problem(path)]) from err
    except (pd.errors.ParserError, pd.errors.ParserWarning) as err:
        try:
            text = builtin_csv_text() if builtin else path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise DataValidationError(path, [_encoding_problem(path)]) from err
        raise DataValidationError(path, [_unparsable(text, err)]) from err
    delimiter = _delimiter_problem(list(raw.columns))
    if delimiter:
        raise DataValidationError(path, [delimiter])
    return raw.dropna(how="all")


def check_csv(path: str | Path, schema: Schema, require_target: bool = True) -> ValidationReport:
    """Validate a file and return every finding (never raises for bad content)."""
    try:
        raw = read_text_csv(path)
    except DataValidationError as err:
        return ValidationReport(str(path), None, err.problems)
    return validate_frame(raw, schema, str(path) or BUILTIN, require_target)


def load_csv(path: str | Path, schema: Schema) -> pd.DataFrame:
    """A validated loan table (schema columns only, features typed, target as 0/1), or a clear error."""
    report = check_csv(path, schema)
    if not report.ok:
        raise DataValidationError(report.path, report.problems)
    assert report.frame is not None
    return report.frame
