"""Protected attributes: the schema's `[protected.<column>]` tables and each row's group (`fedcredit.core.groups`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcredit.core.groups import UNDOCUMENTED, group_counts, group_index, group_names
from fedcredit.core.schema import LENDING_CLUB, Protected, Schema, SchemaError

HEAD = 'target = "y"\npositive-label = "1"\nnegative-label = "0"\nnumeric = ["income"]\ncategorical = ["term"]\n'


def _schema(tmp_path, body: str, head: str = HEAD) -> Schema:
    path = tmp_path / "schema.toml"
    path.write_text(head + body, encoding="utf-8")
    return Schema.from_toml(path)


def _fair(*protected: Protected) -> Schema:
    return Schema("y", "1", "0", ("income",), (), protected=protected)


SEX = Protected("SEX", groups=(("1", "male"), ("2", "female")))
AGE = Protected("AGE", bands=(25.0, 40.0, 62.0))


def test_protected_tables_parse_into_groups_and_bands(tmp_path):
    schema = _schema(
        tmp_path,
        '[protected.SEX]\ngroups = { "1" = "male", "2" = "female" }\n'
        "[protected.AGE]\nbands = [25, 40, 62]\n"
        '[protected.MARRIAGE]\ngroups = { "1" = "married", "2" = "single", "3" = "other", "4" = "other" }\n'
        '[protected.INCOME_BAND]\nbands = [0.5, 1.5]\nnames = ["low", "mid", "high"]\n',
    )
    assert schema.protected_columns == ("SEX", "AGE", "MARRIAGE", "INCOME_BAND")
    assert group_names(schema) == {
        "SEX": ("male", "female", UNDOCUMENTED),
        "AGE": ("<25", "25-39", "40-61", ">=62", UNDOCUMENTED),
        "MARRIAGE": ("married", "single", "other", UNDOCUMENTED),  # two values may share a group
        "INCOME_BAND": ("low", "mid", "high", UNDOCUMENTED),
    }
    assert schema.columns == ("income", "term", "y", "SEX", "AGE", "MARRIAGE", "INCOME_BAND")
    assert "SEX" not in schema.features and schema.features == ("income", "term")


def test_the_protected_declaration_is_part_of_the_schema_digest(tmp_path):
    plain = _schema(tmp_path, "")
    sex = _schema(tmp_path, '[protected.SEX]\ngroups = { "1" = "male", "2" = "female" }\n')
    other = _schema(tmp_path, '[protected.SEX]\ngroups = { "1" = "female", "2" = "male" }\n')
    again = _schema(tmp_path, '# a comment\n[protected.SEX]\ngroups = { "1" = "male",  "2" = "female" }\n')
    assert len({plain.sha256, sex.sha256, other.sha256}) == 3
    assert again.sha256 == sex.sha256  # the parsed content, not the text


@pytest.mark.parametrize("role", ["numeric", "categorical", "target", "partition"])
def test_a_protected_column_that_is_also_a_model_input_or_special_column_is_refused(tmp_path, role):
    heads = {
        "numeric": HEAD.replace('["income"]', '["income", "SEX"]'),
        "categorical": HEAD.replace('["term"]', '["term", "SEX"]'),
        "target": HEAD.replace('"y"', '"SEX"', 1),
        "partition": HEAD + 'partition = "SEX"\n',
    }
    with pytest.raises(SchemaError, match=r"protected column\(s\) \['SEX'\].*may never be a model input"):
        _schema(tmp_path, '[protected.SEX]\ngroups = { "1" = "male" }\n', head=heads[role])


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("bands = [40, 25]", "strictly ascending"),
        ("bands = [25, 25]", "strictly ascending"),
        ('bands = [25, "40"]', "list of numbers"),
        ("bands = [25, nan]", "finite"),
        ("bands = []", "exactly one of the two"),
        ('bands = [25, 40]\nnames = ["young", "old"]', "3 bands, but `names` gives 2"),
        ('bands = [25]\nnames = ["a", "a"]', "must differ"),
        ('groups = { "1" = "male" }\nbands = [25]', "exactly one of the two"),
        ('groups = { "1" = "male" }\nnames = ["x"]', "names the bands"),
        ('groups = { 1.0 = "male" }', "quote the values"),
        ('groups = { " 1" = "male" }', "surrounding spaces"),
        ('groups = { "" = "male" }', "empty"),
        ('groups = { "1" = "" }', "group name is empty"),
        ('grups = { "1" = "male" }', r"unknown keys \['grups'\]"),
    ],
)
def test_bad_protected_tables_are_refused_with_what_to_fix(tmp_path, body, match):
    with pytest.raises(SchemaError, match=match):
        _schema(tmp_path, f"[protected.X]\n{body}\n")


@pytest.mark.parametrize(
    "body",
    [
        'groups = { "0" = "undocumented", "1" = "married" }',
        'groups = { "1" = "married", "9" = "Undocumented" }',
        'bands = [25]\nnames = ["young", "undocumented"]',
    ],
)
def test_a_group_named_undocumented_clashes_with_the_reserved_group(tmp_path, body):
    with pytest.raises(SchemaError, match="'undocumented' is the reserved group"):
        _schema(tmp_path, f"[protected.X]\n{body}\n")


def test_the_built_in_schema_declares_no_protected_attribute():
    assert LENDING_CLUB.protected == () and group_names(LENDING_CLUB) == {}


def test_band_edges_belong_to_the_band_above():
    frame = pd.DataFrame({"AGE": ["24", "24.999", "25", "39.5", "40", "61", "62", "62.0", "99", "-3"]})
    (index,) = group_index(frame, _fair(AGE)).values()
    assert index.dtype == np.int64
    assert index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3, 0]


def test_missing_non_numeric_and_non_finite_ages_are_undocumented():
    frame = pd.DataFrame({"AGE": ["", "  ", None, np.nan, "forty", "inf", "-inf", "1e2", " 30 "]})
    index = group_index(frame, _fair(AGE))["AGE"]
    assert index.tolist() == [4, 4, 4, 4, 4, 4, 4, 3, 1]  # undocumented is index 4, the last


def test_values_match_as_stripped_text_so_numeric_lookalikes_are_undocumented():
    frame = pd.DataFrame({"SEX": ["1", "2", " 2 ", "1.0", "01", "3", "", None, "male"]})
    assert group_index(frame, _fair(SEX))["SEX"].tolist() == [0, 1, 1, 2, 2, 2, 2, 2, 2]


def test_a_frame_read_with_numbers_matches_by_their_text():
    """Integers read as numbers print as the CSV text; floats do not ("1.0"): loading keeps text for this."""
    frame = pd.DataFrame({"SEX": [1, 2, 2], "SEX_AS_FLOAT": [1.0, 2.0, np.nan]})
    assert group_index(frame, _fair(SEX))["SEX"].tolist() == [0, 1, 1]
    floats = _fair(Protected("SEX_AS_FLOAT", groups=(("1", "male"), ("2", "female"))))
    assert group_index(frame, floats)["SEX_AS_FLOAT"].tolist() == [2, 2, 2]


def test_counts_list_every_group_in_order_with_undocumented_last():
    frame = pd.DataFrame({"SEX": ["2", "2", "0"], "AGE": ["30", "70", "x"]})
    counts = group_counts(frame, _fair(SEX, AGE))
    assert counts == {
        "SEX": {"male": 0, "female": 2, UNDOCUMENTED: 1},
        "AGE": {"<25": 0, "25-39": 1, "40-61": 0, ">=62": 1, UNDOCUMENTED: 1},
    }
    assert list(counts["SEX"])[-1] == UNDOCUMENTED


def test_a_frame_without_the_protected_column_says_how_to_get_it():
    with pytest.raises(KeyError, match=r"protected columns \['SEX'\] are not in the frame"):
        group_index(pd.DataFrame({"income": [1.0]}), _fair(SEX))
