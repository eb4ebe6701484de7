"""Load a bank's loan file and check it against the schema: one validation for every use.

`fedcredit validate`, a bank's statistics, its training and evaluation all load
through `check_csv` / `load_csv`, so a file is accepted or refused by all of
them alike; `fedcredit predict` applies the same row checks (`validate_frame`).
The rules include the limits the coordinator applies to a bank's statistics
(`fedcredit.core.limits`): a file that passes is never refused there for them.

Every problem is reported at once, naming the file, the column and the lines
as a text editor counts them (physical lines: the header is line 1, blank
lines and line breaks inside quoted cells count), so that a bank engineer can
fix the file in one pass instead of one error at a time. A row with more
fields than the header is reported and left out, and the other rows are still
checked.

A missing value is an empty cell (or one holding only spaces), and nothing
else: "NA", "None", "null", "n/a" are text like any other, so a category value
in a categorical column (then subject to the schema's agreed categories) and
"not a number" in a numeric one.

Where the schema agrees on a column's categories (`[categories]`), only those
values enter the validated frame, and so a bank's statistics and the shared
vocabulary, in plain and secure mode alike: another value becomes missing
(it scores as unknown, as it would at scoring time) and is counted in a note;
when more than `max-off-schema-share` of the rows hold such values the column
is refused (the bank codes it differently, e.g. `36 months` for `term_36`).

A missing numeric value is imputed with the federation's global mean (inside
the model, so scoring does the same) and a missing category falls into the
out-of-vocabulary bucket. A missing target label is a blocking problem: the
row cannot be learned from.

A problem's text never quotes a cell: `DataValidationError` travels from a
bank's ClientApp to the coordinator (as `public_text`: kinds, schema columns
and lines only). Example values stay on the `Problem` (`examples`), printed
only by the local `fedcredit validate`.

Columns outside the schema (customer id, branch, dates) are ignored: they are
never part of the returned frame, so never in statistics, training or
evaluation, and never sent.

A protected attribute the schema declares (`[protected.<column>]`) must be in
a training file (a missing one is blocking) and is kept in the frame as its
stripped text (missing: ""), beside the features, for the bank's own
fair-lending analysis (`fedcredit.core.groups`): statistics and the model
read only the schema's features, so it is never a model input and never sent.
A value that is no declared group is not an error: it counts in the group
`undocumented`, and a note says how many rows do.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from fedcredit.core.groups import attribute_index
from fedcredit.core.limits import MAX_ABS_VALUE, Limits
from fedcredit.core.schema import Protected, Schema

MAX_EXAMPLES = 5
BUILTIN = "<built-in lending_club>"
# `data-path = "builtin:NAME"` reads the embedded data set fedcredit/data/NAME.json ("" is lending_club).
BUILTIN_PREFIX = "builtin:"
DATA_SETS = ("lending_club", "taiwan_credit_card")
# Delimiters a spreadsheet may have saved instead of commas, as named in the hint.
OTHER_DELIMITERS = {";": "semicolons (;)", "\t": "tabs", "|": "vertical bars (|)"}
DEFAULT_LIMITS = Limits()


def builtin_name(path: str | Path) -> str | None:
    """The embedded data set a data path names ("" and BUILTIN: lending_club; `builtin:NAME`), None for a file."""
    text = str(path)
    if text in ("", BUILTIN):
        return "lending_club"
    return text[len(BUILTIN_PREFIX) :] if text.startswith(BUILTIN_PREFIX) else None


def builtin_csv_text(name: str = "lending_club") -> str:
    """An embedded data set's CSV (stored in JSON so that Flower's app bundle carries it), checked by its SHA-256."""
    if name not in DATA_SETS:
        raise ValueError(
            f"no embedded data set {name!r}: data-path may name {[BUILTIN_PREFIX + n for n in DATA_SETS]} "
            "(or a CSV file)"
        )
    doc = json.loads((resources.files("fedcredit") / "data" / f"{name}.json").read_text(encoding="utf-8"))
    text = doc["csv"]
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != doc["csv-sha256"]:
        raise RuntimeError(f"fedcredit/data/{name}.json is corrupted: its CSV does not match its SHA-256")
    return text


class Kind(StrEnum):
    """What is wrong, so that callers decide by kind and never by message text."""

    MISSING_FILE = "missing-file"
    EMPTY = "empty"
    NO_ROWS = "no-rows"
    ENCODING = "encoding"
    DELIMITER = "delimiter"
    RAGGED_ROW = "ragged-row"
    UNCLOSED_QUOTE = "unclosed-quote"
    UNREADABLE = "unreadable"
    DUPLICATE_COLUMN = "duplicate-column"
    MISSING_COLUMN = "missing-column"
    IGNORED_COLUMNS = "ignored-columns"
    NOT_NUMERIC = "not-numeric"
    INFINITE = "infinite"
    TOO_LARGE = "too-large"
    MISSING_VALUE = "missing-value"
    OFF_SCHEMA = "off-schema"
    BAD_CATEGORY = "bad-category"
    TOO_MANY_CATEGORIES = "too-many-categories"
    MISSING_LABEL = "missing-label"
    UNKNOWN_LABEL = "unknown-label"
    ONE_CLASS = "one-class"
    UNDOCUMENTED_GROUP = "undocumented-group"


def _percent(share: float) -> str:
    return f"{share:.2%}"


def _shown_lines(lines: tuple[int, ...]) -> str:
    shown = ", ".join(str(n) for n in lines[:MAX_EXAMPLES])
    more = f" and {len(lines) - MAX_EXAMPLES} more" if len(lines) > MAX_EXAMPLES else ""
    return f" (lines {shown}{more})"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file; blocking problems stop it from being used.

    `message` (and so `str`) names no cell value; `examples` holds a few of the
    offending values for the bank's own eyes (`with_examples`). `column` and
    `columns` are only ever the schema's column names.
    """

    kind: Kind
    column: str | None
    message: str
    lines: tuple[int, ...] = ()
    blocking: bool = True
    examples: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()  # schema columns a whole-file problem concerns (e.g. the missing ones)
    share: float | None = None  # the share of the file's rows concerned, where that decides (off-schema values)

    def __str__(self) -> str:
        where = f"column '{self.column}': " if self.column else ""
        return f"{where}{self.message}{_shown_lines(self.lines) if self.lines else ''}"

    def with_examples(self) -> str:
        """The text plus example values: only for output that stays on the bank's machine."""
        if not self.examples:
            return str(self)
        return f"{self}; e.g. {', '.join(repr(v) for v in self.examples)}"

    def public(self) -> str:
        """Kind, schema column(s), share of rows and lines only: what may leave the bank."""
        where = f" in column '{self.column}'" if self.column else ""
        names = f" {list(self.columns)}" if self.columns else ""
        share = f" ({_percent(self.share)} of rows)" if self.share is not None else ""
        return f"{self.kind}{where}{names}{share}{_shown_lines(self.lines) if self.lines else ''}"


class DataValidationError(ValueError):
    """A loan file cannot be used; the message lists every blocking problem (no cell values)."""

    def __init__(self, path: str | Path, problems: list[Problem]) -> None:
        self.path = str(path)
        self.problems = problems
        body = "\n".join(f"  - {p}" for p in problems if p.blocking)
        super().__init__(f"{self.path}: cannot be used for training:\n{body}")

    def public_text(self) -> str:
        """The one line a bank's error reply carries: per blocking problem its kind, columns and lines.

        No cell value, no header name outside the schema, no path: the full
        text stays in the bank's own log and `fedcredit validate` shows it.
        """
        parts = "; ".join(p.public() for p in self.problems if p.blocking)
        return f"the bank's data file cannot be used: {parts} (run `fedcredit validate` on it at the bank)"


@dataclass
class ValidationReport:
    """What validation found: the clean frame (if usable), the file as text (if readable) and every finding."""

    path: str
    frame: pd.DataFrame | None
    problems: list[Problem] = field(default_factory=list)
    raw: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        return self.frame is not None and not any(p.blocking for p in self.problems)


def _lines(mask: pd.Series) -> tuple[int, ...]:
    """Line numbers of the rows where mask is true: the frame's index (see `read_table`)."""
    return tuple(int(i) for i in mask.index[mask.to_numpy(dtype=bool)])


def _examples(values: pd.Series) -> tuple[str, ...]:
    return tuple(str(v) for v in values.unique()[:3])


def _text(column: pd.Series, stripped: bool) -> pd.Series:
    """A column's cells stripped; empty ones (only spaces) missing (as `read_table` gives them: `stripped`)."""
    if stripped:
        return column
    text = column.str.strip()
    return text.mask(text == "")


def _numeric_problems(col: str, text: pd.Series) -> tuple[pd.Series, list[Problem]]:
    problems = []
    values = pd.to_numeric(text, errors="coerce")
    bad = text.notna() & values.isna()
    if bad.any():
        problems.append(
            Problem(
                Kind.NOT_NUMERIC,
                col,
                "values that are not numbers: write plain numbers such as 1234.5 (no thousands "
                "separators, currency or % signs); leave the cell empty when the value is missing",
                _lines(bad),
                examples=_examples(text[bad]),
            )
        )
    floats = values.to_numpy(dtype=float, na_value=np.nan)
    inf = pd.Series(np.isinf(floats), index=values.index)
    if inf.any():
        problems.append(
            Problem(
                Kind.INFINITE,
                col,
                "infinite values (inf, or a number beyond the float range such as 1e400): "
                "write a finite number or leave the cell empty",
                _lines(inf),
                examples=_examples(text[inf]),
            )
        )
    with np.errstate(invalid="ignore"):
        huge = pd.Series(np.isfinite(floats) & (np.abs(floats) > MAX_ABS_VALUE), index=values.index)
    if huge.any():
        problems.append(
            Problem(
                Kind.TOO_LARGE,
                col,
                f"values beyond +-{MAX_ABS_VALUE:g}, which the model cannot compute with and no credit "
                "figure reaches: check the unit and the decimal point",
                _lines(huge),
                examples=_examples(text[huge]),
            )
        )
    problems.extend(_missing_problem(col, text, "imputed with the global mean"))
    return values.astype("float64"), problems


def _missing_problem(col: str, text: pd.Series, treatment: str) -> list[Problem]:
    """A note (not blocking) of the column's empty cells and what the model does with them."""
    missing = text.isna()
    if not missing.any():
        return []
    return [
        Problem(
            Kind.MISSING_VALUE,
            col,
            f"{int(missing.sum())} missing values: {treatment}",
            _lines(missing),
            blocking=False,
        )
    ]


MAX_AGREED_SHOWN = 12


def off_schema(text: pd.Series, agreed: tuple[str, ...]) -> pd.Series:
    """Which cells hold a value outside the schema's agreed categories (missing ones do not)."""
    return text.notna() & ~text.isin(agreed)


def _off_schema_problem(col: str, text: pd.Series, agreed: tuple[str, ...], limits: Limits) -> list[Problem]:
    """Values outside the agreed categories: a note under `max-off-schema-share`, else blocking."""
    off = off_schema(text, agreed)
    count, rows = int(off.sum()), len(text)
    if not count:
        return []
    share = count / rows
    shown = ", ".join(repr(v) for v in agreed[:MAX_AGREED_SHOWN])
    more = f" and {len(agreed) - MAX_AGREED_SHOWN} more" if len(agreed) > MAX_AGREED_SHOWN else ""
    blocking = limits.too_many_off_schema(count, rows)
    if blocking:
        message = (
            f"{count} of {rows} rows ({_percent(share)}) hold values outside the schema's agreed categories "
            f"({shown}{more}), more than max-off-schema-share={limits.max_off_schema_share:g} allows: the file "
            "seems to code this column differently; recode its values to the agreed ones (or have the consortium "
            "add a value to the schema's [categories])"
        )
    else:
        message = (
            f"{count} values outside the schema's agreed categories ({_percent(share)} of rows, within "
            f"max-off-schema-share={limits.max_off_schema_share:g}): scored as an unknown category and never "
            "counted in the statistics"
        )
    return [Problem(Kind.OFF_SCHEMA, col, message, _lines(off), blocking, _examples(text[off]), share=share)]


def _category_problems(
    col: str, text: pd.Series, limits: Limits | None, agreed: tuple[str, ...] | None
) -> list[Problem]:
    problems = _missing_problem(col, text, "scored as an unknown category")
    if limits is None:
        return problems
    if agreed is not None:
        problems.extend(_off_schema_problem(col, text, agreed, limits))
    present = text.dropna()
    distinct = present.drop_duplicates()  # in order of first appearance, labelled by their first line
    faults = {value: limits.category_fault(value) for value in distinct}
    found = text.map(faults)
    for fault in dict.fromkeys(f for f in faults.values() if f):
        bad = found == fault
        fix = "shorten them" if "longer" in fault else "remove those characters"
        problems.append(
            Problem(
                Kind.BAD_CATEGORY,
                col,
                f"category values the coordinator refuses (each {fault}): {fix}",
                _lines(bad),
                examples=_examples(text[bad]),
            )
        )
    if limits.too_many_categories(len(distinct)):
        first_beyond = int(distinct.index[limits.max_categories])
        problems.append(
            Problem(
                Kind.TOO_MANY_CATEGORIES,
                col,
                f"{len(distinct)} distinct values, more than max-categories={limits.max_categories}, "
                "which the coordinator refuses: merge rare values into broader groups (the line shown "
                "is where the first value beyond the limit appears)",
                (first_beyond,),
            )
        )
    return problems


def _undocumented_problem(attribute: Protected, text: pd.Series) -> list[Problem]:
    """A note (never blocking) of the rows of a protected column that fall into the group `undocumented`."""
    index = attribute_index(text, attribute)
    off = pd.Series(index == len(attribute.group_names) - 1, index=text.index)
    if not off.any():
        return []
    count, rows = int(off.sum()), len(text)
    declared = (
        "a number"
        if attribute.bands
        else "one of the values its `groups` declare (matched as the cell's text: '1.0' is not '1')"
    )
    return [
        Problem(
            Kind.UNDOCUMENTED_GROUP,
            attribute.column,
            f"protected attribute: {count} of {rows} rows ({_percent(count / rows)}) are missing or not {declared}: "
            "counted in the group 'undocumented' of the fairness analysis; never a model input",
            _lines(off),
            blocking=False,
            examples=_examples(text[off & text.notna()]),
            share=count / rows,
        )
    ]


def validate_frame(
    raw: pd.DataFrame,
    schema: Schema,
    path: str = "<frame>",
    require_target: bool = True,
    limits: Limits | None = DEFAULT_LIMITS,
    stripped: bool = False,
) -> ValidationReport:
    """Check a frame read with every column as text; convert it if it is usable.

    The frame's index labels are the rows' line numbers (`read_table`).
    `limits` are the coordinator's limits on category values and the share of
    off-schema values; with them, a value outside the schema's agreed
    categories becomes missing in the frame (None: not checked and kept, as
    when scoring applicants, where any value outside the model's vocabulary
    scores as unknown and `fedcredit.risk.predict` says so per row).
    `stripped`: the cells are stripped and empty ones missing already, as
    `read_table` gives them.
    """
    problems: list[Problem] = []
    expected = list(schema.columns if require_target else schema.features)
    allowed = set(expected) | ({schema.partition} if schema.partition else set())
    if not require_target:
        allowed |= {schema.target, *schema.protected_columns}
    missing = [c for c in expected if c not in raw.columns]
    extra = [c for c in raw.columns if c not in allowed]
    if missing:
        header = "" if len(missing) < len(expected) else " (none of them is in the first line: it must be the header)"
        protected = [c for c in missing if c in schema.protected_columns]
        why = (
            f"; {protected} are protected attributes, read at the bank only for the fairness analysis "
            "(never a model input, never sent)"
            if protected
            else ""
        )
        problems.append(
            Problem(
                Kind.MISSING_COLUMN,
                None,
                f"missing columns {missing}: the schema needs {expected}{header}{why}",
                columns=tuple(missing),
            )
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
        frame[col], found = _numeric_problems(col, _text(raw[col], stripped))
        problems.extend(found)
    for col in (c for c in schema.categorical if c in raw.columns):
        text = _text(raw[col], stripped)
        agreed = schema.known_categories.get(col)
        problems.extend(_category_problems(col, text, limits, agreed))
        if limits is not None and agreed is not None:  # the contract: no other value enters statistics
            text = text.mask(off_schema(text, agreed))
        frame[col] = text.fillna("").astype(str)

    if schema.target in raw.columns:
        target = _text(raw[schema.target], stripped)
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
    for attribute in (p for p in schema.protected if p.column in raw.columns):
        text = _text(raw[attribute.column], stripped)
        problems.extend(_undocumented_problem(attribute, text))
        frame[attribute.column] = text.fillna("").astype(str)
    if schema.partition and schema.partition in raw.columns:
        frame[schema.partition] = _text(raw[schema.partition], stripped).fillna("").astype(str)

    blocking = any(p.blocking for p in problems)
    return ValidationReport(path, None if blocking else frame.reset_index(drop=True), problems)


# --- reading --------------------------------------------------------------------------------


@dataclass
class Table:
    """A CSV file as text: one row per record, indexed by the line it starts on.

    `frame` has one column per distinct header name (the first copy of a
    repeated name) and every data row, ragged ones cut to the header's width;
    `problems` are what reading found (ragged rows, an unclosed quote, a line
    the CSV reader refused); `duplicates` the header names given more than
    once, with their 1-based positions.
    """

    frame: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    duplicates: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def ragged(self) -> tuple[int, ...]:
        return tuple(n for p in self.problems if p.kind == Kind.RAGGED_ROW for n in p.lines)


def spreadsheet_column(position: int) -> str:
    """The letters a spreadsheet shows for a 1-based column position: 1 -> A, 27 -> AA."""
    letters = ""
    while position:
        position, rest = divmod(position - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def duplicate_problems(duplicates: dict[str, tuple[int, ...]], schema: Schema) -> list[Problem]:
    """A header name given more than once is refused: which copy holds the data is anybody's guess."""
    problems = []
    known = set(schema.columns) | ({schema.partition} if schema.partition else set())
    for name, positions in duplicates.items():
        where = " and ".join(f"{n} ({spreadsheet_column(n)})" for n in positions)
        ours = name in known
        problems.append(
            Problem(
                Kind.DUPLICATE_COLUMN,
                name if ours else None,
                f"{'this column' if ours else 'a header name'} appears {len(positions)} times in the header, "
                f"at columns {where}: keep one and remove or rename the others",
                (1,),
                examples=() if ours else (name,),
            )
        )
    return problems


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


def _physical_lines(text: str) -> io.StringIO:
    """Lines as an editor counts them: split at \\n, \\r\\n and a lone \\r."""
    return io.StringIO(text, newline="")


def _breaks(text: str, start: int, end: int) -> int:
    return text.count("\n", start, end) + text.count("\r", start, end) - text.count("\r\n", start, end)


def unclosed_quote_line(text: str, first_line: int) -> int | None:
    """The line where a quote opens and never closes in the record starting on `first_line`, if one does.

    Follows the CSV reader: a quote opens a quoted cell only at the start of a
    cell (after spaces), "" inside it is a quote, and the record ends at a
    line break outside quotes.
    """
    i = sum(map(len, itertools.islice(_physical_lines(text), first_line - 1)))
    line, at_start, n = first_line, True, len(text)
    while i < n:
        char = text[i]
        if at_start and char == " ":
            i += 1
        elif at_start and char == '"':
            opened, j = line, i + 1
            while True:
                k = text.find('"', j)
                if k < 0:
                    return opened
                if text.startswith('""', k):
                    j = k + 2
                    continue
                line += _breaks(text, i, k)
                i, at_start = k + 1, False
                break
        elif char in "\r\n":
            return None
        else:
            at_start = char == ","
            i += 1
    return None


def _unclosed_quote(line: int) -> Problem:
    return Problem(
        Kind.UNCLOSED_QUOTE,
        None,
        'a quote (") opens here and never closes, so everything after it reads as one cell: '
        "close the quote or remove it",
        (line,),
    )


def _records(text: str, path: Path) -> tuple[list[tuple[int, list[str | None]]], list[Problem]]:
    """(non-blank records, cells stripped and empty ones None, with the line each starts on; problems that stopped reading)."""
    reader = csv.reader(_physical_lines(text), skipinitialspace=True)
    records: list[tuple[int, list[str | None]]] = []
    start = last_start = 1
    try:
        for fields in reader:
            last_start = start
            cells = [f.strip() or None for f in fields]
            if any(cells):
                records.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as err:
        opened = unclosed_quote_line(text, start)
        if opened is not None:
            problem = _unclosed_quote(opened)
        else:  # csv's messages name no cell value
            why = (
                f"a cell of more than {csv.field_size_limit():,} characters starts here"
                if "field larger" in str(err)
                else str(err)
            )
            problem = Problem(
                Kind.UNREADABLE, None, f"not readable as CSV from this line on ({why}): check its quotes", (start,)
            )
        if not records:
            raise DataValidationError(path, [problem]) from None
        return records, [problem]
    opened = unclosed_quote_line(text, last_start) if records else None
    if opened is None:
        return records, []
    if records[-1][0] == last_start:
        records.pop()
    if not records:
        raise DataValidationError(path, [_unclosed_quote(opened)])
    return records, [_unclosed_quote(opened)]


def read_table(path: str | Path) -> Table:
    """Read every cell as text so that validation, not a CSV library, decides types.

    Rows are indexed by the physical line they start on (the header is line
    1); cells are stripped, blank rows skipped, empty cells missing. Raises
    DataValidationError only when nothing can be read (no file, empty, another
    delimiter, a header that does not end); everything else (text that is not
    UTF-8 included: the rest is read with replacement characters) is in the
    table's problems. An empty path (or BUILTIN) reads the embedded LendingClub
    data set, `builtin:NAME` the embedded data set NAME (`DATA_SETS`).
    """
    builtin = builtin_name(path)
    path = Path(BUILTIN if str(path) == "" else path)
    if builtin not in (None, *DATA_SETS) or (builtin is None and not path.is_file()):
        known = ", ".join(BUILTIN_PREFIX + n for n in DATA_SETS)
        raise DataValidationError(
            path,
            [
                Problem(
                    Kind.MISSING_FILE,
                    None,
                    f"no embedded data set of that name: choose one of {known}"
                    if builtin
                    else "file does not exist: check the path (node config 'data-path' or run config 'data-path')",
                )
            ],
        )
    encoding: list[Problem] = []
    if builtin:
        text = builtin_csv_text(builtin)
    else:
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:  # named with its lines; the rest of the file is still checked
            encoding, text = [_encoding_problem(path)], data.decode("utf-8-sig", errors="replace")
    empty = Problem(Kind.EMPTY, None, "the file is empty: it needs a header line and data rows")
    if not text.strip():
        raise DataValidationError(path, [empty])
    try:
        records, problems = _records(text, path)
    except DataValidationError as err:
        raise DataValidationError(path, encoding + err.problems) from None
    problems = encoding + problems
    if not records:
        raise DataValidationError(path, [empty])
    (_, header), rows = records[0], records[1:]
    delimiter = _delimiter_problem(header)
    if delimiter:
        raise DataValidationError(path, [*encoding, delimiter])
    names = [h or f"Unnamed: {i}" for i, h in enumerate(header)]
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names, start=1):
        positions.setdefault(name, []).append(i)
    width, ragged, lines, cells = len(names), [], [], []
    for line, row in rows:
        if len(row) != width:
            if any(row[width:]):
                ragged.append(line)
            row = row[:width] + [None] * (width - len(row))
        lines.append(line)
        cells.append(row)
    keep = [ps[0] - 1 for ps in positions.values()]
    everything = pd.DataFrame(cells, index=pd.Index(lines, dtype="int64"), columns=range(width), dtype=object)
    frame = everything.iloc[:, keep].set_axis([names[i] for i in keep], axis=1).astype("str")
    if ragged:
        problems.insert(
            0,
            Problem(
                Kind.RAGGED_ROW,
                None,
                f"rows with more fields than the header's {width}: remove the extra fields or quote "
                "values that contain commas (these rows are left out; the others are checked)",
                tuple(ragged),
            ),
        )
    duplicates = {name: tuple(ps) for name, ps in positions.items() if len(ps) > 1}
    return Table(frame, problems, duplicates)


def check_csv(
    path: str | Path, schema: Schema, require_target: bool = True, limits: Limits = DEFAULT_LIMITS
) -> ValidationReport:
    """Validate a file and return every finding (never raises for bad content).

    Reading problems (ragged rows, a repeated header name, an unclosed quote)
    do not hide the rest: the other rows are checked too.
    """
    shown = str(path) or BUILTIN
    try:
        table = read_table(path)
    except DataValidationError as err:
        return ValidationReport(shown, None, err.problems)
    reading = table.problems + duplicate_problems(table.duplicates, schema)
    rows = table.frame.drop(index=list(table.ragged))
    report = validate_frame(rows, schema, shown, require_target, limits, stripped=True)
    problems = reading + report.problems
    frame = None if any(p.blocking for p in problems) else report.frame
    return ValidationReport(shown, frame, problems, table.frame)


def load_csv(path: str | Path, schema: Schema, limits: Limits = DEFAULT_LIMITS) -> pd.DataFrame:
    """A validated loan table (schema columns only, features typed, target as 0/1), or a clear error."""
    report = check_csv(path, schema, limits=limits)
    if not report.ok:
        raise DataValidationError(report.path, report.problems)
    assert report.frame is not None
    return report.frame
