"""Loading a bank's loan file: every kind of bad input gets a precise, blocking error."""

from __future__ import annotations

import numpy as np
import pytest

from fedcredit.core.loading import DataValidationError, check_csv, load_csv
from fedcredit.core.schema import LENDING_CLUB, Schema, SchemaError, load_schema


def test_builtin_data_set_loads_with_reference_figures():
    frame = load_csv("", LENDING_CLUB)
    assert len(frame) == 9857
    assert frame["Class"].mean() == pytest.approx(517 / 9857)
    assert frame["int_rate"].dtype == np.float64
    assert set(frame["term"]) == {"term_36", "term_60"}


def test_valid_bank_file_loads(raw_frame, write_csv):
    frame = load_csv(write_csv(raw_frame.head(300)), LENDING_CLUB)
    assert len(frame) == 300 and set(frame["Class"]) == {0, 1}


def test_missing_and_extra_columns_are_named(raw_frame, write_csv):
    bad = raw_frame.head(50).drop(columns=["int_rate"]).assign(customer_id="x")
    with pytest.raises(DataValidationError) as err:
        load_csv(write_csv(bad), LENDING_CLUB)
    msg = str(err.value)
    assert "bank.csv" in msg and "missing columns ['int_rate']" in msg and "unexpected columns ['customer_id']" in msg


def test_non_numeric_value_gives_column_line_and_value(raw_frame, write_csv):
    bad = raw_frame.head(50).copy()
    bad.loc[7, "annual_inc"] = "fifty thousand"
    with pytest.raises(DataValidationError) as err:
        load_csv(write_csv(bad), LENDING_CLUB)
    msg = str(err.value)
    # Data row 7 (0-based) is line 9 of the file: the header is line 1.
    assert "column 'annual_inc'" in msg and "'fifty thousand'" in msg and "(lines 9)" in msg


def test_unknown_labels_and_missing_targets(raw_frame, write_csv):
    bad = raw_frame.head(50).copy()
    bad.loc[3, "Class"] = "default"
    bad.loc[4, "Class"] = None
    with pytest.raises(DataValidationError) as err:
        load_csv(write_csv(bad), LENDING_CLUB)
    msg = str(err.value)
    assert "unknown labels 'default'" in msg and "(lines 5)" in msg
    assert "missing target labels" in msg and "(lines 6)" in msg


def test_single_class_is_blocking(raw_frame, write_csv):
    good_only = raw_frame[raw_frame["Class"] == "good"].head(100)
    with pytest.raises(DataValidationError, match="only one class \\('good'\\)"):
        load_csv(write_csv(good_only), LENDING_CLUB)


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


@pytest.mark.parametrize("text,match", [
    ('target = "y"\npositive-label = "1"\n', "missing keys \\['negative-label'\\]"),
    ('target = "y"\npositive-label = "1"\nnegative-label = "0"\nnumeric=["a"]\ncolour = 1\n', "unknown keys \\['colour'\\]"),
    ('target = "y"\npositive-label = "1"\nnegative-label = "0"\nnumeric = ["y"]\n', "both a feature and the target"),
    ('target = "y"\npositive-label = "1"\nnegative-label = "0"\n', "no feature columns"),
    ("not toml [", "not valid TOML"),
])
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
    with pytest.raises(DataValidationError, match=r"'lots' \(lines 7\)"):
        load_csv(write_csv("\n".join(text) + "\n"), LENDING_CLUB)
