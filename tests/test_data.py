"""Loading a bank's loan file: every kind of bad input gets a precise, blocking error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcredit.cli import main
from fedcredit.core.loading import DataValidationError, Kind, check_csv, load_csv
from fedcredit.core.schema import LENDING_CLUB, Schema, SchemaError, load_schema


def test_builtin_data_set_loads_with_reference_figures():
    frame = load_csv("", LENDING_CLUB)
    assert len(frame) == 9857
    assert frame["Class"].mean() == pytest.approx(517 / 9857)
    assert frame["int_rate"].dtype == np.float64
    assert set(frame["term"]) == {"term_36", "term_60"}
    assert list(frame.columns) == [*LENDING_CLUB.columns, LENDING_CLUB.partition]  # the partition column stays


def test_valid_bank_file_loads(raw_frame, write_csv):
    frame = load_csv(write_csv(raw_frame.head(300)), LENDING_CLUB)
    assert len(frame) == 300 and set(frame["Class"]) == {0, 1}


def test_missing_columns_are_named_and_block(raw_frame, write_csv):
    bad = raw_frame.head(50).drop(columns=["int_rate"]).assign(customer_id="x")
    with pytest.raises(DataValidationError) as err:
        load_csv(write_csv(bad), LENDING_CLUB)
    msg = str(err.value)
    assert "bank.csv" in msg and "missing columns ['int_rate']" in msg
    assert "customer_id" not in msg  # extra columns are a note, not a blocking problem
    assert [p.kind for p in err.value.problems if p.blocking] == [Kind.MISSING_COLUMN]


def test_extra_columns_are_ignored_and_noted(raw_frame, write_csv, capsys):
    rows = raw_frame.head(50).copy()
    rows.insert(0, "customer_id", [f"C{i}" for i in range(50)])
    rows["branch"], rows["opened"] = "B12", "2024-01-31"
    report = check_csv(write_csv(rows), LENDING_CLUB)
    assert report.ok
    assert list(report.frame.columns) == [*LENDING_CLUB.columns, LENDING_CLUB.partition]
    (note,) = [p for p in report.problems if p.kind == Kind.IGNORED_COLUMNS]
    assert not note.blocking and "ignored columns: ['customer_id', 'branch', 'opened']" in str(note)
    expected = load_csv(write_csv(raw_frame.head(50), "plain.csv"), LENDING_CLUB)
    pd.testing.assert_frame_equal(report.frame, expected)
    assert main(["validate", str(write_csv(rows))]) == 0
    assert "note: ignored columns: ['customer_id', 'branch', 'opened']" in capsys.readouterr().out


def test_non_numeric_value_gives_column_and_line_never_the_value(raw_frame, write_csv, capsys):
    bad = raw_frame.head(50).copy()
    bad.loc[7, "annual_inc"] = "fifty thousand"
    with pytest.raises(DataValidationError) as err:
        load_csv(write_csv(bad), LENDING_CLUB)
    msg = str(err.value)
    # Data row 7 (0-based) is line 9 of the file: the header is line 1.
    assert "column 'annual_inc'" in msg and "not numbers" in msg and "(lines 9)" in msg
    assert "fifty thousand" not in msg
    (problem,) = err.value.problems
    assert problem.kind == Kind.NOT_NUMERIC and problem.examples == ("fifty thousand",)
    # Only the local command shows the value.
    assert main(["validate", str(write_csv(bad))]) == 1
    assert "'fifty thousand'" in capsys.readouterr().out


def test_ssn_like_value_never_leaves_in_the_error(raw_frame, write_csv):
    bad = raw_frame.head(20).copy()
    bad.loc[4, "int_rate"] = "123-45-6789"
    with pytest.raises(DataValidationError) as err:
        load_csv(write_csv(bad), LENDING_CLUB)
    text = str(err.value) + repr(err.value.args) + "".join(str(p) for p in err.value.problems)
    assert "123-45-6789" not in text and "6789" not in text
    assert "bank.csv" in text and "column 'int_rate'" in text and "(lines 6)" in text


def test_unknown_labels_and_missing_targets(raw_frame, write_csv):
    bad = raw_frame.head(50).copy()
    bad.loc[3, "Class"] = "default"
    bad.loc[4, "Class"] = None
    with pytest.raises(DataValidationError) as err:
        load_csv(write_csv(bad), LENDING_CLUB)
    msg = str(err.value)
    assert "column 'Class': unknown labels" in msg and "(lines 5)" in msg and "default'" not in msg
    assert "missing target labels" in msg and "(lines 6)" in msg
    kinds = {p.kind: p for p in err.value.problems}
    assert set(kinds) == {Kind.UNKNOWN_LABEL, Kind.MISSING_LABEL}
    assert kinds[Kind.UNKNOWN_LABEL].examples == ("default",)


def test_single_class_is_blocking(raw_frame, write_csv):
    good_only = raw_frame[raw_frame["Class"] == "good"].head(100)
    with pytest.raises(DataValidationError, match="only one class in 100 rows") as err:
        load_csv(write_csv(good_only), LENDING_CLUB)
    (problem,) = err.value.problems
    assert problem.kind == Kind.ONE_CLASS and problem.examples == ("good",)


def test_empty_file_and_header_only(raw_frame, write_csv):
    with pytest.raises(DataValidationError, match="the file is empty"):
        load_csv(write_csv(""), LENDING_CLUB)
    with pytest.raises(DataValidationError, match="header but no data rows"):
        load_csv(write_csv(",".join(raw_frame.columns) + "\n"), LENDING_CLUB)


def test_missing_file_names_the_config_key(tmp_path):
    with pytest.raises(DataValidationError, match="does not exist.*data-path"):
        load_csv(tmp_path / "nope.csv", LENDING_CLUB)


def test_missing_feature_values_are_kept_and_reported(raw_frame, write_csv):
    frame = raw_frame.head(100).copy()
    frame.loc[[2, 5], "revol_util"] = None
    frame.loc[3, "emp_length"] = None
    report = check_csv(write_csv(frame), LENDING_CLUB)
    assert report.ok and len(report.frame) == 100
    assert np.isnan(report.frame.loc[2, "revol_util"])
    assert report.frame.loc[3, "emp_length"] == ""
    notes = {p.column: p for p in report.problems}
    assert not notes["revol_util"].blocking and notes["revol_util"].lines == (4, 7)
    assert "imputed with the global mean" in notes["revol_util"].message
    assert "unknown category" in notes["emp_length"].message


def test_all_problems_reported_at_once(raw_frame, write_csv):
    bad = raw_frame.head(30).copy()
    bad.loc[1, "int_rate"] = "n/a%"
    bad.loc[2, "funded_amnt"] = "inf"
    bad.loc[3, "Class"] = "maybe"
    with pytest.raises(DataValidationError) as err:
        load_csv(write_csv(bad), LENDING_CLUB)
    assert len([p for p in err.value.problems if p.blocking]) == 3


def test_schema_file_for_another_data_set(tmp_path, write_csv):
    schema_file = tmp_path / "schema.toml"
    schema_file.write_text(
        'target = "default"\npositive-label = "1"\nnegative-label = "0"\n'
        'numeric = ["income"]\ncategorical = ["region"]\n'
    )
    schema = load_schema(str(schema_file))
    assert schema == Schema("default", "1", "0", ("income",), ("region",))
    frame = load_csv(write_csv("income,region,default\n10,a,1\n20,b,0\n,a,0\n"), schema)
    assert list(frame["default"]) == [1, 0, 0]


@pytest.mark.parametrize(
    "text,match",
    [
        ('target = "y"\npositive-label = "1"\n', "missing keys \\['negative-label'\\]"),
        (
            'target = "y"\npositive-label = "1"\nnegative-label = "0"\nnumeric=["a"]\ncolour = 1\n',
            "unknown keys \\['colour'\\]",
        ),
        (
            'target = "y"\npositive-label = "1"\nnegative-label = "0"\nnumeric = ["y"]\n',
            "both a feature and the target",
        ),
        ('target = "y"\npositive-label = "1"\nnegative-label = "0"\n', "no feature columns"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_schema_files(tmp_path, text, match):
    path = tmp_path / "schema.toml"
    path.write_text(text)
    with pytest.raises(SchemaError, match=match):
        load_schema(str(path))


def test_line_numbers_count_blank_lines(raw_frame, write_csv):
    rows = raw_frame.head(6).copy()
    rows.loc[4, "annual_inc"] = "lots"
    text = rows.to_csv(index=False).splitlines()
    text.insert(2, "")  # a blank line after the first data row
    with pytest.raises(DataValidationError, match=r"column 'annual_inc': .* \(lines 7\)"):
        load_csv(write_csv("\n".join(text) + "\n"), LENDING_CLUB)


def _lines_of(frame: pd.DataFrame) -> list[str]:
    return frame.to_csv(index=False).splitlines()


def _both_classes(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.iloc[-1, frame.columns.get_loc("Class")] = "bad"
    return frame


@pytest.mark.parametrize("extra", [",X", ",X,Y"])
def test_extra_fields_in_the_first_row_name_the_line(raw_frame, write_csv, capsys, extra):
    # Both classes: a ragged row no longer hides the other problems, so only it must be wrong here.
    text = _lines_of(_both_classes(raw_frame.head(10)))
    text[1] += extra  # the first data row: pandas would take the first column(s) as the index
    path = write_csv("\n".join(text) + "\n")
    with pytest.raises(DataValidationError) as err:
        load_csv(path, LENDING_CLUB)
    (problem,) = err.value.problems
    assert problem.kind == Kind.RAGGED_ROW and problem.lines == (2,)
    assert "more fields than the header" in str(err.value) and "(lines 2)" in str(err.value)
    assert main(["validate", str(path)]) == 1  # no crash
    assert "(lines 2)" in capsys.readouterr().out


def test_every_ragged_row_is_named_blank_lines_counted(raw_frame, write_csv):
    text = _lines_of(_both_classes(raw_frame.head(10)))
    text[3] += ",X"
    text.insert(5, "")
    text[8] += ",X,Y"
    with pytest.raises(DataValidationError) as err:
        load_csv(write_csv("\n".join(text) + "\n"), LENDING_CLUB)
    assert [(p.kind, p.lines) for p in err.value.problems] == [(Kind.RAGGED_ROW, (4, 9))]


def test_fewer_fields_are_missing_values(raw_frame, write_csv):
    columns = [c for c in raw_frame.columns if c != "revol_util"] + ["revol_util"]
    rows = raw_frame.head(10)[columns].copy()
    rows.loc[0, "Class"] = "bad"  # both classes, so that only the short line is reported
    text = _lines_of(rows)
    text[3] = text[3].rsplit(",", 1)[0]  # line 4 stops before its last field
    report = check_csv(write_csv("\n".join(text) + "\n"), LENDING_CLUB)
    assert report.ok and np.isnan(report.frame.loc[2, "revol_util"])
    assert [(p.kind, p.lines) for p in report.problems] == [(Kind.MISSING_VALUE, (4,))]


@pytest.mark.parametrize("sep,name", [(";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")])
def test_other_delimiter_gets_a_hint(raw_frame, write_csv, sep, name):
    rows = raw_frame.head(10).copy()
    rows.loc[2, "int_rate"] = "12,5"  # decimal comma, as such files often have
    path = write_csv("")
    rows.to_csv(path, index=False, sep=sep)
    with pytest.raises(DataValidationError) as err:
        load_csv(path, LENDING_CLUB)
    (problem,) = err.value.problems
    assert problem.kind == Kind.DELIMITER
    assert name in str(problem) and "comma-separated" in str(problem)


def _with_branch(rows):
    """An ignored column whose text is where a Latin-1 byte goes (in a category it would also be off-schema)."""
    return rows.assign(branch="Munchen")


def test_non_utf8_byte_names_its_line(raw_frame, write_csv):
    path = write_csv(_with_branch(_both_classes(raw_frame.head(10))))  # the rest is checked too: only the byte is wrong
    lines = path.read_bytes().splitlines()
    lines[6] = lines[6].replace(b"Munchen", "M\u00fcnchen".encode("latin-1"), 1)  # line 7: a Latin-1 byte
    assert b"\xfc" in lines[6]
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataValidationError) as err:
        load_csv(path, LENDING_CLUB)
    (problem,) = [p for p in err.value.problems if p.blocking]  # the other is a note: 'branch' is ignored
    assert problem.kind == Kind.ENCODING and problem.lines == (7,)
    assert "UTF-8" in str(err.value) and "(lines 7)" in str(err.value)


def test_a_non_utf8_byte_hides_no_other_problem(raw_frame, write_csv):
    rows = _both_classes(raw_frame.head(10))
    rows.loc[6, "int_rate"] = "7,5%"  # line 8
    path = write_csv(_with_branch(rows))
    lines = path.read_bytes().splitlines()
    lines[3] = lines[3].replace(b"Munchen", b"M\xfcnchen", 1)  # line 4: a Latin-1 byte
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = check_csv(path, LENDING_CLUB)
    assert [(p.kind, p.lines) for p in report.problems if p.blocking] == [
        (Kind.ENCODING, (4,)),
        (Kind.NOT_NUMERIC, (8,)),
    ]
