"""The schema's optional [order], [monotone], [reasons] and [bounds] tables: parsed, checked, digested."""

from __future__ import annotations

import math

import pytest

from fedcredit.core.schema import LENDING_CLUB, Schema, SchemaError

HEAD = """target = "y"
positive-label = "1"
negative-label = "0"
numeric = ["rate", "income"]
categorical = ["grade", "term", "purpose"]
"""

FULL = (
    HEAD
    + """
[categories]
grade = ["A", "B", "C"]

[order]
grade = ["A", "B", "C"]
term = ["short", "long"]

[monotone]
rate = "increasing"
income = "decreasing"
grade = "increasing"

[reasons]
rate = "Interest rate on the loan is high"

[bounds]
rate = [0, 100]
income = [0, inf]
"""
)


def _schema(tmp_path, text: str) -> Schema:
    path = tmp_path / "schema.toml"
    path.write_text(text, encoding="utf-8")
    return Schema.from_toml(path)


def test_orders_directions_texts_and_bounds_are_parsed(tmp_path):
    s = _schema(tmp_path, FULL)
    assert s.orders == {"grade": ("A", "B", "C"), "term": ("short", "long")}
    assert s.directions == {"rate": 1, "income": -1, "grade": 1}
    assert s.reason_text("rate") == "Interest rate on the loan is high"
    assert s.bound("rate") == (0.0, 100.0) and s.bound("income") == (0.0, math.inf)
    assert s.bound("nothing-declared") == (-math.inf, math.inf)
    # An order declares the column's agreed values when [categories] does not.
    assert s.known_categories == {"grade": ("A", "B", "C"), "term": ("short", "long")}


def test_reason_texts_default_to_a_statement_made_from_the_name(tmp_path):
    s = _schema(tmp_path, FULL)
    assert s.reason_text("income") == "Income is low"  # decreasing: a low value is the risk
    assert s.reason_text("grade") == "Grade is high"  # increasing along its order
    assert s.reason_text("purpose") == "Purpose raises the estimated risk"  # no direction declared


def test_the_builtin_schema_declares_the_issues_constraints_and_a_text_for_every_feature():
    s = LENDING_CLUB
    assert s.orders["sub_grade"][:3] == ("A1", "A2", "A3") and s.orders["sub_grade"][-1] == "G5"
    assert set(s.orders["emp_length"]) == set(s.known_categories["emp_length"])
    for col, sign in {"int_rate": 1, "sub_grade": 1, "inq_last_6mths": 1, "inq_last_12m": 1, "annual_inc": -1}.items():
        assert s.directions[col] == sign, col
    assert set(dict(s.reasons)) == set(s.features)
    assert all(s.bound(c)[0] == 0 for c in s.numeric)  # every count, amount and rate is non-negative


def test_a_schema_without_the_new_tables_keeps_its_digest(tmp_path):
    """Older schemas (no orders, directions, texts or bounds) must not change their SHA-256 with this version."""
    import hashlib
    import json

    s = _schema(tmp_path, HEAD)
    old_fields = {
        "target": "y",
        "positive_label": "1",
        "negative_label": "0",
        "numeric": ["rate", "income"],
        "categorical": ["grade", "term", "purpose"],
        "partition": None,
        "categories": [],
    }
    assert s.sha256 == hashlib.sha256(json.dumps(old_fields, sort_keys=True).encode()).hexdigest()
    assert _schema(tmp_path, FULL).sha256 != s.sha256  # a declared constraint is part of the contract


@pytest.mark.parametrize(
    "tables, match",
    [
        ('[order]\nnope = ["a"]\n', r"\[order\] names \['nope'\], which are not feature columns"),
        ('[order]\nrate = ["1", "2"]\n', r"\[order\] names numeric columns \['rate'\]"),
        ('[order]\ngrade = ["A", "B", "A"]\n', r"\[order\] grade lists \['A'\] more than once"),
        ("[order]\ngrade = []\n", r"\[order\] grade is empty"),
        (
            '[categories]\ngrade = ["A", "B", "C"]\n[order]\ngrade = ["A", "B", "D"]\n',
            r"\[order\] grade must list exactly its \[categories\] values, each once: missing \['C'\], "
            r"not among its categories \['D'\]",
        ),
        ('[order]\ngrade = "A, B"\n', r"\[order\] grade must be a list"),
        ('[monotone]\nnope = "increasing"\n', r"\[monotone\] names \['nope'\], which are not feature columns"),
        ('[monotone]\nrate = "up"\n', r"\[monotone\] rate = 'up': give one of \['increasing', 'decreasing'\]"),
        (
            '[monotone]\ngrade = "increasing"\n',
            r"\[monotone\] names categorical columns \['grade'\] without an \[order\]",
        ),
        ("[monotone]\nrate = 1\n", r"\[monotone\] rate must be a string"),
        ('[reasons]\nnope = "x"\n', r"\[reasons\] names \['nope'\], which are not feature columns"),
        ('[reasons]\nrate = "  "\n', r"\[reasons\] rate: give one line"),
        ('[reasons]\nrate = "high\\nrate"\n', r"\[reasons\] rate: give one line"),
        (f'[reasons]\nrate = "{"x" * 121}"\n', r"at most 120 characters"),
        ("[bounds]\ngrade = [0, 1]\n", r"\[bounds\] names categorical columns \['grade'\]"),
        ("[bounds]\nrate = [5, 1]\n", r"\[bounds\] rate = \[5.0, 1.0\]: give \[lowest, highest\]"),
        ("[bounds]\nrate = [0]\n", r"\[bounds\] rate must be \[lowest, highest\]"),
        ('[bounds]\nrate = [0, "x"]\n', r"\[bounds\] rate must be \[lowest, highest\]"),
        ("[bounds]\nrate = [nan, 1]\n", r"\[bounds\] rate = \[nan, 1.0\]"),
        ('monotone = "rate"\n', r"'monotone' must be a table"),
    ],
    ids=[
        "order-unknown",
        "order-numeric",
        "order-twice",
        "order-empty",
        "order-not-the-categories",
        "order-not-a-list",
        "monotone-unknown",
        "monotone-direction",
        "monotone-categorical-without-order",
        "monotone-not-a-string",
        "reasons-unknown",
        "reasons-blank",
        "reasons-line-break",
        "reasons-too-long",
        "bounds-categorical",
        "bounds-reversed",
        "bounds-one-number",
        "bounds-text",
        "bounds-nan",
        "monotone-not-a-table",
    ],
)
def test_contradictory_tables_give_a_schema_error_naming_the_file_table_and_column(tmp_path, tables, match):
    with pytest.raises(SchemaError, match=match) as err:
        _schema(tmp_path, HEAD + tables)
    assert str(tmp_path / "schema.toml") in str(err.value)
