"""One validation decides: `fedcredit validate`, the bank's statistics (through the real ClientApp and the
coordinator's check) and training accept or refuse the same files, naming the same lines and columns."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fedcredit.cli import main
from fedcredit.core import limits as core_limits
from fedcredit.core.banks import load_bank
from fedcredit.core.config import RunConfig, parse_run_config
from fedcredit.core.loading import DataValidationError, Kind, check_csv, load_csv
from fedcredit.core.schema import LENDING_CLUB
from fedcredit.core.stats import compute_stats, preprocessing_from_stats
from fedcredit.deploy.inprocess import InProcessGrid, serverapp_identity
from fedcredit.federation import client, protocol
from fedcredit.federation.statistics import collect_statistics, gather

CFG = parse_run_config({})
SECRET = "123-45-6789"  # looks like a social security number: must never leave the bank


@pytest.fixture()
def base(raw_frame) -> pd.DataFrame:
    """400 loans with both classes: a file every check accepts."""
    return raw_frame.head(400).copy()


def _text(frame: pd.DataFrame) -> list[str]:
    return frame.to_csv(index=False).splitlines()


def coordinator_verdict(path, run_config: dict | None = None) -> tuple[bool, str]:
    """(accepted, reason): the coordinator asks the real ClientApp of a bank reading `path` for statistics."""
    run_config = run_config or {}
    cfg = parse_run_config(run_config)
    with serverapp_identity():
        grid = InProcessGrid(run_config, 1)
        node = grid.nodes[0]
        grid.contexts[node] = dataclasses.replace(
            grid.contexts[node], node_config={"data-path": str(path), "bank-name": "acme"}
        )
        banks, failed = collect_statistics(grid, [node], 30.0, LENDING_CLUB, cfg.limits)
    return (node in banks, failed.get(node, ""))


def validate_verdict(path, capsys, *extra: str) -> tuple[bool, str]:
    capsys.readouterr()
    code = main(["validate", str(path), *extra])
    out = capsys.readouterr().out
    assert code in (0, 1), out  # never a crash (exit 2 is a broken schema)
    return code == 0, out


# --- the limits live in one place ------------------------------------------------------------------


def test_the_coordinator_and_the_bank_use_the_same_limits():
    assert protocol.Limits is core_limits.Limits and protocol.MAX_ROWS == core_limits.MAX_ROWS
    assert (RunConfig().max_categories, RunConfig().max_category_length) == (
        core_limits.MAX_CATEGORIES,
        core_limits.MAX_CATEGORY_LENGTH,
    )
    assert parse_run_config({"max-categories": 7, "max-category-length": 9}).limits == core_limits.Limits(7, 9)
    # float32 (the model) keeps the square of the largest value finite; float64 sums over MAX_ROWS rows do too.
    assert core_limits.MAX_ABS_VALUE**2 < np.finfo(np.float32).max
    assert np.isfinite(core_limits.MAX_ROWS * core_limits.MAX_ABS_VALUE**2)


def test_the_coordinator_refuses_sums_no_validated_file_can_give():
    stats = load_csv("", LENDING_CLUB).head(50)
    stats = compute_stats(stats, LENDING_CLUB)
    for sums, accepted in (([1e18, 1e36], True), ([-1e18, 1e36], True), ([1e30, 1e60], False), ([1.0, 1e40], False)):
        numeric = dict(stats.numeric, annual_inc=(1, *sums))
        reply = protocol.statistics_reply(
            "acme", "file", LENDING_CLUB.sha256, dataclasses.replace(stats, numeric=numeric)
        )
        if accepted:
            protocol.read_statistics(reply, LENDING_CLUB, CFG.limits)
        else:
            with pytest.raises(protocol.ProtocolError, match="the sums of 'annual_inc' are larger than 1 value"):
                protocol.read_statistics(reply, LENDING_CLUB, CFG.limits)


# --- class 1: what the coordinator refuses is caught at the bank, with line and column ---------------


def _set(row: int | slice, column: str, value: str):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row, column] = value
        return frame

    return change


def _categories(column: str, count: int):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = [f"v{i % count}" for i in range(len(frame))]
        return frame

    return change


LIMIT_CASES = {
    "65 characters": (_set(5, "emp_length", "x" * 65), Kind.BAD_CATEGORY, "emp_length", 7),
    "a control character": (_set(8, "term", "term\x0136"), Kind.BAD_CATEGORY, "term", 10),
    "a NUL character": (_set(9, "sub_grade", "A\x001"), Kind.BAD_CATEGORY, "sub_grade", 11),
    "a tab inside": (_set(3, "verification_status", "Not\tVerified"), Kind.BAD_CATEGORY, "verification_status", 5),
    "a line break inside (quoted)": (_set(2, "emp_length", "emp\n5"), Kind.BAD_CATEGORY, "emp_length", 4),
    "201 distinct values": (_categories("emp_length", 201), Kind.TOO_MANY_CATEGORIES, "emp_length", 202),
    "400 distinct values": (_categories("sub_grade", 400), Kind.TOO_MANY_CATEGORIES, "sub_grade", 202),
    "1e300": (_set(4, "annual_inc", "1e300"), Kind.TOO_LARGE, "annual_inc", 6),
    "-1e200": (_set(6, "funded_amnt", "-1e200"), Kind.TOO_LARGE, "funded_amnt", 8),
    "1e19": (_set(7, "total_bal_il", "1e19"), Kind.TOO_LARGE, "total_bal_il", 9),
    "1e400 (beyond float64)": (_set(1, "int_rate", "1e400"), Kind.INFINITE, "int_rate", 3),
    "-inf": (_set(1, "revol_util", "-inf"), Kind.INFINITE, "revol_util", 3),
}


# The category cases recode a whole column, so its values are also outside the schema's agreed
# categories: the share of such values is not limited here, so that the limit under test alone decides.
ANY_SHARE = {"max-off-schema-share": 1.0}
ANY_SHARE_ARGS = ("--max-off-schema-share", "1")


@pytest.mark.parametrize("case", list(LIMIT_CASES))
def test_what_the_coordinator_refuses_is_refused_at_the_bank_with_line_and_column(base, write_csv, capsys, case):
    change, kind, column, line = LIMIT_CASES[case]
    path = write_csv(change(base))
    ok, out = validate_verdict(path, capsys, *ANY_SHARE_ARGS)
    assert not ok and f"column '{column}'" in out and f"(lines {line})" in out, out
    with pytest.raises(DataValidationError) as err:
        client.statistics(parse_run_config(ANY_SHARE), {"data-path": str(path)})
    (problem,) = [p for p in err.value.problems if p.blocking]
    assert (problem.kind, problem.column, problem.lines) == (kind, column, (line,))
    accepted, reason = coordinator_verdict(path, ANY_SHARE)
    assert not accepted and f"{kind} in column '{column}' (lines {line})" in reason, reason


BORDER_CASES = {
    "64 characters": _set(5, "emp_length", "x" * 64),
    "200 distinct values": _categories("emp_length", 200),
    "1e18": _set(4, "annual_inc", "1e18"),
    "-1e18": _set(4, "total_bal_il", "-1e18"),
    "printable unicode": _set(3, "emp_length", "Ärzte – 10+ Jahre"),
}


@pytest.mark.parametrize("case", list(BORDER_CASES))
def test_values_at_the_limits_are_accepted_by_the_bank_and_the_coordinator(base, write_csv, capsys, case):
    path = write_csv(BORDER_CASES[case](base))
    assert validate_verdict(path, capsys, *ANY_SHARE_ARGS)[0]
    assert coordinator_verdict(path, ANY_SHARE) == (True, "")


def test_the_run_configs_limits_decide_at_the_bank_and_at_the_coordinator(base, write_csv, capsys):
    path = write_csv(_set(5, "emp_length", "x" * 80)(base))
    assert not validate_verdict(path, capsys)[0] and not coordinator_verdict(path)[0]
    wider = {"max-category-length": 100}
    assert validate_verdict(path, capsys, "--max-category-length", "100")[0]
    assert coordinator_verdict(path, wider) == (True, "")
    few = write_csv(_categories("emp_length", 12)(base.copy()), "few.csv")
    assert validate_verdict(few, capsys, *ANY_SHARE_ARGS)[0]
    ok, out = validate_verdict(few, capsys, "--max-categories", "10", *ANY_SHARE_ARGS)
    assert not ok and "12 distinct values, more than max-categories=10" in out and "(lines 12)" in out
    accepted, reason = coordinator_verdict(few, {"max-categories": 10, **ANY_SHARE})
    assert not accepted and "too-many-categories in column 'emp_length' (lines 12)" in reason


def test_a_bank_file_at_the_magnitude_limit_trains_to_a_finite_loss(base, write_csv):
    frame = base.copy()
    frame.loc[:9, "annual_inc"] = "1e18"
    frame.loc[10:19, "total_bal_il"] = "-1e18"
    node = {"data-path": str(write_csv(frame))}
    cfg = parse_run_config({"local-epochs": 1, "hidden-units": "4"})
    stats = client.statistics(cfg, node)[3]
    prep = preprocessing_from_stats(stats, cfg.min_category_count).to_json()
    weights = client._model(cfg, prep)[1].get_weights()
    new, loss, rows = client.train(cfg, node, weights, prep, server_round=1)
    assert np.isfinite(loss) and all(np.isfinite(w).all() for w in new) and rows == stats.rows


# --- class 2: every blocking problem at once ---------------------------------------------------------


def test_every_blocking_problem_is_reported_at_once_a_ragged_row_hides_nothing(base, write_csv, capsys):
    bad = base.head(30).drop(columns=["open_il_6m"])
    bad.loc[1, "int_rate"] = "15.3%"  # line 3
    bad.loc[2, "annual_inc"] = "72,000"  # line 4 (quoted by the CSV writer)
    bad.loc[3, "funded_amnt"] = "inf"  # line 5
    bad.loc[4, "Class"] = None  # line 6
    bad.loc[5, "Class"] = "Bad"  # line 7
    bad.loc[6, "emp_length"] = "x" * 70  # line 8
    text = _text(bad)
    text[9] += ",extra"  # line 10: ragged
    text[12] += ",1,2"  # line 13: ragged
    path = write_csv("\n".join(text) + "\n")
    report = check_csv(path, LENDING_CLUB)
    found = {(p.kind, p.column, p.lines) for p in report.problems if p.blocking}
    assert found == {
        (Kind.RAGGED_ROW, None, (10, 13)),
        (Kind.MISSING_COLUMN, None, ()),
        (Kind.NOT_NUMERIC, "int_rate", (3,)),
        (Kind.NOT_NUMERIC, "annual_inc", (4,)),
        (Kind.INFINITE, "funded_amnt", (5,)),
        (Kind.MISSING_LABEL, "Class", (6,)),
        (Kind.UNKNOWN_LABEL, "Class", (7,)),
        (Kind.BAD_CATEGORY, "emp_length", (8,)),
        (Kind.OFF_SCHEMA, "emp_length", (8,)),  # 1 row of 29: more than max-off-schema-share
    }
    ok, out = validate_verdict(path, capsys)
    assert not ok and "BLOCKING: 9 problem(s)" in out
    for expected in ("(lines 10, 13)", "missing columns ['open_il_6m']", "'15.3%'", "'72,000'", "'Bad'", "(lines 6)"):
        assert expected in out, expected
    with pytest.raises(DataValidationError) as err:
        client.statistics(CFG, {"data-path": str(path)})
    assert {(p.kind, p.column, p.lines) for p in err.value.problems if p.blocking} == found


def test_seven_kinds_of_problem_are_listed_in_one_validate_run(base, write_csv, capsys):
    bad = base.drop(columns=["open_il_6m"])  # a missing column
    bad.loc[1, "int_rate"] = "15.3%"  # line 3
    bad.loc[2, "annual_inc"] = "72,000"  # line 4 (quoted by the CSV writer)
    bad.loc[3, "funded_amnt"] = "inf"  # line 5
    bad.loc[4, "Class"] = None  # line 6: a missing label
    bad.loc[5, "Class"] = "Bad"  # line 7: the label's spelling
    text = _text(bad)
    text[7] += ",extra"  # line 8: a ragged row
    path = write_csv("\n".join(text) + "\n")
    ok, out = validate_verdict(path, capsys)
    assert not ok and "BLOCKING: 7 problem(s)" in out, out
    for expected in (
        "rows with more fields than the header's 22",
        "(lines 8)",
        "missing columns ['open_il_6m']",
        "column 'int_rate': values that are not numbers",
        "'15.3%'",
        "column 'annual_inc': values that are not numbers",
        "'72,000'",
        "column 'funded_amnt': infinite values",
        "column 'Class': missing target labels: every training row needs one (lines 6)",
        "column 'Class': unknown labels",
        "'Bad'",
    ):
        assert expected in out, expected


def test_a_ragged_row_is_left_out_and_the_rows_after_it_are_still_checked(base, write_csv):
    frame = base.head(40).copy()
    frame.loc[20, "int_rate"] = "twelve"  # line 22
    text = _text(frame)
    text[3] += ",X"  # line 4
    path = write_csv("\n".join(text) + "\n")
    report = check_csv(path, LENDING_CLUB)
    assert [(p.kind, p.lines) for p in report.problems if p.blocking] == [
        (Kind.RAGGED_ROW, (4,)),
        (Kind.NOT_NUMERIC, (22,)),
    ]


# --- class 3: unclosed quotes and line numbers as an editor counts them ------------------------------


@pytest.mark.parametrize("rows", [30, 3000])  # 3,000 rows: the swallowed text exceeds csv's field limit
@pytest.mark.parametrize("line", [2, 7])
def test_an_unclosed_quote_names_the_line_it_opens_on_never_a_traceback(raw_frame, write_csv, capsys, rows, line):
    frame = raw_frame.head(rows).copy()
    frame.loc[0, "Class"] = "bad"
    text = _text(frame)
    text[line - 1] = text[line - 1].replace("term_", '"term_', 1)
    path = write_csv("\n".join(text) + "\n")
    ok, out = validate_verdict(path, capsys)
    assert not ok and "Traceback" not in out and "field larger" not in out
    assert 'a quote (") opens here and never closes' in out and f"(lines {line})" in out
    with pytest.raises(DataValidationError) as err:
        client.statistics(CFG, {"data-path": str(path)})
    assert (Kind.UNCLOSED_QUOTE, (line,)) in [(p.kind, p.lines) for p in err.value.problems]
    accepted, reason = coordinator_verdict(path)
    assert not accepted and f"unclosed-quote (lines {line})" in reason


def test_an_unclosed_quote_in_the_header_stops_the_file_with_line_1(base, write_csv, capsys):
    text = _text(base.head(20))
    text[0] = text[0].replace("term", '"term', 1)
    ok, out = validate_verdict(write_csv("\n".join(text) + "\n"), capsys)
    assert not ok and "never closes" in out and "(lines 1)" in out


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_lines_after_quoted_line_breaks_are_physical_lines(base, write_csv, capsys, newline):
    frame = base.head(20).copy()
    frame.insert(0, "note", "")
    frame.loc[1, "note"] = f"called twice{newline}then paid"  # row of line 3 spans lines 3-4
    frame.loc[3, "note"] = f"a{newline}b{newline}c"  # the next spans three lines
    frame.loc[10, "int_rate"] = "high"  # data row 10: line 12 without the breaks, 15 with them
    body = frame.to_csv(index=False, lineterminator="\r\n")  # so that cells with \r or \n are quoted
    path = write_csv("")
    path.write_bytes(body.encode("utf-8"))
    physical = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    assert physical[15 - 1].split(b",")[3] == b"high"  # the premise: an editor shows it on line 15
    ok, out = validate_verdict(path, capsys)
    assert not ok and "column 'int_rate'" in out and "(lines 15)" in out
    with pytest.raises(DataValidationError) as err:
        client.statistics(CFG, {"data-path": str(path)})
    assert [(p.kind, p.lines) for p in err.value.problems if p.blocking] == [(Kind.NOT_NUMERIC, (15,))]


# --- class 4: a column twice in the header -----------------------------------------------------------


@pytest.mark.parametrize(
    "column,at,positions",
    [("Class", 5, "6 (F) and 24 (X)"), ("int_rate", 0, "1 (A) and 4 (D)"), ("branch", 23, "24 (X) and 25 (Y)")],
)
def test_a_repeated_header_name_is_refused_with_both_positions(base, write_csv, capsys, column, at, positions):
    frame = base.copy()
    if column == "branch":
        frame["branch"] = "B1"
    frame.insert(at, column, frame[column].to_numpy(), allow_duplicates=True)  # the same values: only the header
    path = write_csv(frame)
    ok, out = validate_verdict(path, capsys)
    assert not ok and f"at columns {positions}" in out and "remove or rename" in out, out
    with pytest.raises(DataValidationError) as err:
        client.statistics(CFG, {"data-path": str(path)})
    (problem,) = [p for p in err.value.problems if p.blocking]
    assert problem.kind == Kind.DUPLICATE_COLUMN
    assert problem.column == (None if column == "branch" else column)  # only schema names may leave the bank
    accepted, reason = coordinator_verdict(path)
    assert not accepted and "duplicate-column" in reason and ("branch" not in reason)


# --- class 5: only an empty cell is missing ----------------------------------------------------------

NA_LIKE = ["NA", "None", "null", "n/a", "N/A", "NaN", "nan", "#N/A", "NULL", "<NA>", "-NaN", "1.#IND"]


def test_na_like_text_in_a_category_is_a_value_not_a_missing_one(raw_frame, write_csv, capsys):
    frame = raw_frame.head(1000).copy()  # 12 such values in 1,000 rows: within max-off-schema-share
    for i, token in enumerate(NA_LIKE):
        frame.loc[i, "emp_length"] = token
    frame.loc[20, "emp_length"] = ""  # empty: missing
    frame.loc[21, "emp_length"] = "   "  # only spaces: missing
    path = write_csv(frame)
    report = check_csv(path, LENDING_CLUB)
    assert report.ok
    (missing,) = [p for p in report.problems if p.kind == Kind.MISSING_VALUE]
    assert missing.column == "emp_length" and missing.lines == (22, 23)
    # A value the schema's [categories] do not name: counted as such, scored as unknown, never a category.
    (off,) = [p for p in report.problems if p.kind == Kind.OFF_SCHEMA]
    assert not off.blocking and off.column == "emp_length" and off.lines == tuple(range(2, 2 + len(NA_LIKE)))
    assert off.message.startswith(f"{len(NA_LIKE)} values outside the schema's agreed categories (1.20% of rows")
    assert report.frame.loc[: len(NA_LIKE) - 1, "emp_length"].tolist() == [""] * len(NA_LIKE)
    ok, out = validate_verdict(path, capsys)
    assert ok and "values the schema has not seen" in out and "'NA' (1 rows)" in out and "emp_length=2" in out
    stats = compute_stats(load_csv(path, LENDING_CLUB), LENDING_CLUB)
    assert set(stats.categorical["emp_length"]) <= set(LENDING_CLUB.known_categories["emp_length"])
    assert sum(stats.categorical["emp_length"].values()) == 1000 - len(NA_LIKE) - 2
    assert coordinator_verdict(path) == (True, "")


@pytest.mark.parametrize("token", ["NA", "None", "null", "n/a", "NaN", "#N/A"])
def test_na_like_text_in_a_numeric_column_is_not_a_number(base, write_csv, capsys, token):
    frame = base.copy()
    frame.loc[3, "revol_util"] = token
    frame.loc[4, "revol_util"] = ""  # this one is missing, and fine
    path = write_csv(frame)
    ok, out = validate_verdict(path, capsys)
    assert not ok and "column 'revol_util'" in out and "(lines 5)" in out and "leave the cell empty" in out
    assert not coordinator_verdict(path)[0]


# --- validate and the bank's statistics agree on every file ------------------------------------------


def _ragged(frame):
    text = _text(frame)
    text[6] += ",X"
    return "\n".join(text) + "\n"


def _unclosed(frame):
    text = _text(frame)
    text[8] = text[8].replace("term_", '"term_', 1)
    return "\n".join(text) + "\n"


def _twice(column):
    def change(frame):
        frame.insert(0, column, frame[column], allow_duplicates=True)
        return frame

    return change


def _note_with_breaks(frame):
    frame["note"] = ["line one\nline two" if i % 7 == 0 else "" for i in range(len(frame))]
    return frame


AGREEMENT = {
    "plain": lambda f: f,
    **{f"limit: {k}": v[0] for k, v in LIMIT_CASES.items()},
    **{f"border: {k}": v for k, v in BORDER_CASES.items()},
    "NA in a category": _set(3, "term", "NA"),
    "null in a category": _set(3, "sub_grade", "null"),
    "NA in a number": _set(3, "int_rate", "NA"),
    "empty number": _set(3, "int_rate", ""),
    "15.3%": _set(3, "int_rate", "15.3%"),
    "72,000": _set(3, "annual_inc", "72,000"),
    "label Bad": _set(3, "Class", "Bad"),
    "no label": _set(3, "Class", ""),
    "ragged row": _ragged,
    "unclosed quote": _unclosed,
    "label twice": _twice("Class"),
    "feature twice": _twice("sub_grade"),
    "quoted line breaks in an ignored column": _note_with_breaks,
    "missing column": lambda f: f.drop(columns=["inq_fi"]),
    "term coded '36 months'": lambda f: f.assign(term=f["term"].str.replace("term_", "") + " months"),
    "8 off-schema values in 400 rows": _set(slice(3, 10), "term", "term_48"),  # 2.00 %: the share allowed
    "9 off-schema values in 400 rows": _set(slice(3, 11), "term", "term_48"),  # 2.25 %
}


@pytest.mark.parametrize("case", list(AGREEMENT))
def test_validate_and_the_coordinator_accept_or_refuse_the_same_files(base, write_csv, capsys, case):
    content = AGREEMENT[case](base.copy())
    path = write_csv(content)
    valid, out = validate_verdict(path, capsys)
    accepted, reason = coordinator_verdict(path)
    assert valid == accepted, (out, reason)
    expected = (
        case == "plain"
        or (case.startswith("border") and case != "border: 200 distinct values")  # that one: 100 % off-schema
        or case
        in (
            "NA in a category",
            "null in a category",
            "empty number",
            "quoted line breaks in an ignored column",
            "8 off-schema values in 400 rows",
        )
    )
    assert valid == expected, out


# --- class 6: the schema's agreed categories hold, in plain and secure mode ---------------------------

MONTHS = ("36 months", "60 months")


def _months(frame: pd.DataFrame) -> pd.DataFrame:
    """`term` as some banks' systems write it: 36 months / 60 months for the agreed term_36 / term_60."""
    return frame.assign(term=frame["term"].map(dict(zip(("term_36", "term_60"), MONTHS))))


def file_banks(paths, run_config: dict | None = None):
    """(grid, its node ids): one in-process bank per file, as SuperNodes with `data-path` in their node config."""
    grid = InProcessGrid(run_config or {}, len(paths))
    for node, path in zip(grid.nodes, paths):
        grid.contexts[node] = dataclasses.replace(
            grid.contexts[node], node_config={"data-path": str(path), "bank-name": f"bank-{node}"}
        )
    return grid, grid.nodes


def test_a_file_coding_a_column_differently_is_refused_by_validate_and_by_the_banks_statistics(base, write_csv, capsys):
    path = write_csv(_months(base))
    ok, out = validate_verdict(path, capsys)
    assert not ok and "BLOCKING: 1 problem(s)" in out and "OK:" not in out
    for expected in (
        "column 'term': 400 of 400 rows (100.00%) hold values outside the schema's agreed categories "
        "('term_36', 'term_60'), more than max-off-schema-share=0.02 allows",
        "(lines 2, 3, 4, 5, 6 and 395 more)",
        "e.g. '36 months', '60 months'",  # the bank's own screen may show its values
    ):
        assert expected in out, out
    accepted, reason = coordinator_verdict(path)
    assert not accepted
    assert "off-schema in column 'term' (100.00% of rows) (lines 2, 3, 4, 5, 6 and 395 more)" in reason, reason
    assert "months" not in reason and "36 m" not in reason  # no cell value leaves the bank


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_off_schema_values_never_reach_the_statistics_or_the_vocabulary(base, write_csv, secure):
    few = base.copy()
    few.loc[10:14, "term"] = "36 months"  # 5 of 400 rows (1.25 %): within the share, scored as unknown
    few.loc[20:21, "emp_length"] = "emp_11"  # a code the schema does not name
    coded_otherwise = _months(base.sample(frac=1, random_state=3))
    paths = [write_csv(few, "few.csv"), write_csv(base.iloc[::-1], "clean.csv"), write_csv(coded_otherwise, "m.csv")]
    run_config = {"min-category-count": 1, "privacy.secure-aggregation": secure}  # a value counted once would stay
    cfg = parse_run_config(run_config)
    with serverapp_identity():
        grid, nodes = file_banks(paths, run_config)
        federation = gather(grid, cfg, LENDING_CLUB, nodes, None)
    assert sorted(federation.banks) == nodes[:2]
    assert "off-schema in column 'term' (100.00% of rows)" in federation.failed[nodes[2]]
    assert "months" not in federation.failed[nodes[2]]
    merged = federation.merged
    assert merged is not None
    for col, agreed in LENDING_CLUB.known_categories.items():
        assert set(merged.categorical[col]) <= set(agreed), col
    vocabulary = preprocessing_from_stats(merged, cfg.min_category_count).vocabulary
    assert vocabulary["term"] == ["term_36", "term_60"] and "emp_11" not in vocabulary["emp_length"]
    # The off-schema rows are in no category count: they score as unknown, like a missing value.
    trained = [load_bank(cfg, grid.contexts[n].node_config).train for n in nodes[:2]]
    unknown = sum(int((t["term"] == "").sum()) for t in trained)
    assert 0 < unknown <= 5 and sum(merged.categorical["term"].values()) == merged.rows - unknown


# --- what leaves the bank: kinds, schema columns and lines, never a cell value -------------------------


def test_the_error_reply_carries_no_cell_value_and_no_foreign_header(base, write_csv, capsys):
    frame = base.copy()
    frame.loc[1, "int_rate"] = SECRET  # not a number
    frame.loc[2, "Class"] = f"bad {SECRET}"  # unknown label
    frame.loc[3, "emp_length"] = SECRET + "x" * 60  # too long
    frame.loc[4, "term"] = SECRET + "\x07"  # control character
    frame.loc[5, "annual_inc"] = "1" + "0" * 30  # too large
    frame[SECRET] = "x"  # an ignored column named like a value...
    frame.insert(0, SECRET, "y", allow_duplicates=True)  # ... given twice
    path = write_csv(frame)
    ok, out = validate_verdict(path, capsys)
    assert not ok and SECRET in out  # the bank's own validate shows the values
    accepted, reason = coordinator_verdict(path)
    assert not accepted and SECRET not in reason and "6789" not in reason and "1" + "0" * 30 not in reason
    for expected in (
        "not-numeric in column 'int_rate' (lines 3)",
        "unknown-label in column 'Class' (lines 4)",
        "bad-category in column 'emp_length' (lines 5)",
        "bad-category in column 'term' (lines 6)",
        "too-large in column 'annual_inc' (lines 7)",
        "duplicate-column (lines 1)",
    ):
        assert expected in reason, reason
    assert str(path) not in reason  # not even the bank's own path
    with pytest.raises(DataValidationError) as err:
        load_csv(path, LENDING_CLUB)
    assert SECRET not in str(err.value)  # the bank's log: full messages, still no value
