"""Feature profiles: a bank's counts over the global bins, and the coordinator's checks of them."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest

from fedcredit.core.loading import load_csv
from fedcredit.core.partition import stratified_split
from fedcredit.core.profile import (
    NUMERIC_BINS,
    UNKNOWN,
    Z_EDGES,
    add_profiles,
    layout_of,
    split_profile,
)
from fedcredit.core.schema import LENDING_CLUB, Schema
from fedcredit.core.stats import Preprocessing, compute_stats, merge_stats, preprocessing_from_stats
from fedcredit.federation import protocol
from fedcredit.federation.protocol import ProtocolError

SCHEMA = Schema("y", "bad", "good", numeric=("x",), categorical=("c",))
PREP = Preprocessing(mean={"x": 10.0}, variance={"x": 4.0}, vocabulary={"c": ["a", "b"]})  # sd 2


def test_the_grid_is_quarter_deviations_from_minus_3_to_3_with_two_tails():
    assert Z_EDGES[0] == -3.0 and Z_EDGES[-1] == 3.0 and np.allclose(np.diff(Z_EDGES), 0.25)
    assert NUMERIC_BINS == 26


def test_a_split_profile_counts_z_bins_vocabulary_slots_unknown_and_missing():
    frame = pd.DataFrame(
        {
            # z = (x - 10) / 2: -10 (low tail), 0 (edge 0: the bin above), 0.1, 1.0 (edge), 3.0 (high tail), missing
            "x": [-10.0, 10.0, 10.2, 12.0, 16.0, np.nan],
            "c": ["a", "b", "zz", None, "", "a"],
            "y": [1, 0, 0, 1, 0, 0],
        }
    )
    layout = layout_of(SCHEMA, PREP)
    profile = split_profile(frame, "y", layout)
    expected = [0] * 26
    expected[0] = 1  # z = -10: below -3
    expected[12 + 1] = 2  # z = 0 and 0.1: [0, 0.25) is bin 13 (bin i spans [edge i-1, edge i))
    expected[16 + 1] = 1  # z = 1.0: [1, 1.25)
    expected[25] = 1  # z = 3.0: at or above 3
    assert profile == {
        "rows": 6,
        "bads": 2,
        "numeric": {"x": {"counts": expected, "missing": 1}},
        "categorical": {"c": {"counts": [2, 1, 1], "missing": 2}},  # a, b, unknown ("zz"); None and "" missing
    }
    assert layout.names() == {"numeric": ["x"], "categorical": {"c": ["a", "b", UNKNOWN]}}


def test_profiles_add_up_to_the_profile_of_the_pooled_rows():
    frame = load_csv("", LENDING_CLUB).head(600)
    stats = compute_stats(frame, LENDING_CLUB)
    layout = layout_of(LENDING_CLUB, preprocessing_from_stats(stats, 10))
    parts = [split_profile(frame.iloc[i::3], LENDING_CLUB.target, layout) for i in range(3)]
    assert add_profiles(parts) == split_profile(frame, LENDING_CLUB.target, layout)
    assert add_profiles([]) is None


def test_a_vocabulary_beyond_max_categories_or_a_column_missing_is_refused_by_the_bank():
    with pytest.raises(ValueError, match="more than max-categories=1"):
        layout_of(SCHEMA, PREP, max_categories=1)
    with pytest.raises(ValueError, match="no entry for the schema's columns \\['c'\\]"):
        layout_of(SCHEMA, Preprocessing(PREP.mean, PREP.variance, {}))


# --- the coordinator's check of one bank's reply -----------------------------------------

VAL_FRACTION = 0.2
_FRAME = load_csv("", LENDING_CLUB).head(1000)
_TRAIN, _VAL = stratified_split(_FRAME, LENDING_CLUB.target, VAL_FRACTION, 0)
_STATS = compute_stats(_TRAIN, LENDING_CLUB)
_LAYOUT = layout_of(LENDING_CLUB, preprocessing_from_stats(_STATS, 10))


def _reply():
    return protocol.profile_reply(
        split_profile(_TRAIN, LENDING_CLUB.target, _LAYOUT), split_profile(_VAL, LENDING_CLUB.target, _LAYOUT)
    )


def _read(content):
    return protocol.read_profile_reply(content, _LAYOUT, _STATS, VAL_FRACTION)


def _set(record: str, key: str, value):
    def edit(content):
        content.metric_records[record][key] = value

    return edit


def _entry(record: str, key: str, i: int, delta: float):
    def edit(content):
        values = [float(v) for v in content.metric_records[record][key]]
        values[i] += delta
        content.metric_records[record][key] = values

    return edit


def _move(record: str, key: str, src: int, dst: int):
    """One row moved from one slot to another: the counts still add up."""

    def edit(content):
        values = list(content.metric_records[record][key])
        values[src] -= 1
        values[dst] += 1
        content.metric_records[record][key] = values

    return edit


def _all_in_low_tail(content):
    values = list(content.metric_records["profile-train"]["numeric/int_rate"])
    content.metric_records["profile-train"]["numeric/int_rate"] = [sum(values[:-1])] + [0] * 25 + [values[-1]]


def _val_rows(rows: int):
    def edit(content):
        record = content.metric_records["profile-validation"]
        record["rows"] = rows
        for key in list(record.keys()):
            if key.startswith(("numeric/", "categorical/")):
                values = list(record[key])
                values[-1] += rows - sum(values)  # the new rows as missing: every list still adds up
                record[key] = values

    return edit


def _fewer_training_rows(content):
    """A consistent profile of other rows than those its statistics came from."""
    fewer = split_profile(_TRAIN.head(700), LENDING_CLUB.target, _LAYOUT)
    other = protocol.profile_reply(fewer, split_profile(_VAL, LENDING_CLUB.target, _LAYOUT))
    content["profile-train"] = other.metric_records["profile-train"]


def _drop_record(content):
    del content["profile-validation"]


def _extra_record(content):
    content["metrics"] = copy.deepcopy(content.metric_records["profile-train"])


def _drop_key(content):
    del content.metric_records["profile-train"]["categorical/term"]


REFUSED = {
    "a negative count": (_entry("profile-train", "numeric/int_rate", 12, -1e9), "must be a whole number from 0"),
    "counts that do not add up": (_entry("profile-validation", "numeric/annual_inc", 13, 1), "add up to"),
    "a NaN count": (_set("profile-train", "numeric/int_rate", [float("nan")] * 27), "must be a whole number"),
    "a fractional count": (_entry("profile-train", "categorical/term", 0, 0.5), "must be a whole number"),
    "a list of a million counts": (_set("profile-train", "numeric/int_rate", [0] * 1_000_000), "a list of 27"),
    "a bin too few": (_set("profile-train", "numeric/int_rate", [0] * 26), "a list of 27 counts"),
    "a number instead of a list": (_set("profile-train", "categorical/term", 3.0), "a list of"),
    "an extra key": (_set("profile-train", "numeric/bogus", [0] * 27), "unexpected keys \\['numeric/bogus'\\]"),
    "a missing key": (_drop_key, "missing keys \\['categorical/term'\\]"),
    "a missing record": (_drop_record, "metric records"),
    "an extra record": (_extra_record, "metric records"),
    "more defaults than rows": (_set("profile-validation", "bads", 10**6), "bads must be a whole number from 0 to"),
    "training rows that add up to other counts": (_set("profile-train", "rows", len(_TRAIN) + 1), "add up to"),
    "training rows other than its statistics'": (_fewer_training_rows, "the statistics reported 8"),
    "twice the validation rows": (_val_rows(2 * len(_VAL)), "validation rows=.* does not fit"),
    "validation defaults the split cannot give": (_set("profile-validation", "bads", 0), "validation bads=0"),
    "a vocabulary count other than its statistics'": (
        _move("profile-train", "categorical/term", 0, 1),
        "vocabulary count of 'term' differs",
    ),
    "missing values its statistics do not have": (
        _move("profile-train", "numeric/int_rate", 13, 26),
        "missing training values",
    ),
    "z bins that cannot give its statistics' sum": (_all_in_low_tail, "z bins of 'int_rate' do not fit"),
}


def test_an_honest_profile_is_read_back_as_sent():
    profile = _read(_reply())
    assert profile["train"] == split_profile(_TRAIN, LENDING_CLUB.target, _LAYOUT)
    assert profile["validation"]["rows"] == len(_VAL)


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_profile_that_breaks_the_protocol_is_refused_with_the_check_that_failed(case):
    edit, reason = REFUSED[case]
    content = _reply()
    edit(content)
    with pytest.raises(ProtocolError) as err:
        _read(content)
    assert re.search(reason, str(err.value)), str(err.value)


def test_moving_rows_between_numeric_bins_within_the_sum_bound_passes():
    """The z check is a bound, not an equality: a bank's bins are its own as long as its statistics allow them."""
    content = _reply()
    values = list(content.metric_records["profile-train"]["numeric/int_rate"])
    i = next(i for i in range(1, 25) if values[i] and values[i + 1])
    _move("profile-train", "numeric/int_rate", i, i + 1)(content)
    _move("profile-train", "numeric/int_rate", i + 1, i)(content)  # and back: the honest reply
    assert _read(content)["train"] == split_profile(_TRAIN, LENDING_CLUB.target, _LAYOUT)


# --- secure mode: the sum of the banks' vectors -----------------------------------------------


def test_the_summed_vector_gives_the_pooled_profile_and_a_corrupted_one_is_refused():
    banks = [stratified_split(_FRAME.iloc[i::2], LENDING_CLUB.target, VAL_FRACTION, 0) for i in range(2)]
    stats = [compute_stats(train, LENDING_CLUB) for train, _ in banks]
    layout = layout_of(LENDING_CLUB, preprocessing_from_stats(merge_stats(stats), 10))
    layout_json = json.loads(layout.to_json())
    replies = [
        protocol.profile_reply(
            split_profile(t, LENDING_CLUB.target, layout), split_profile(v, LENDING_CLUB.target, layout)
        )
        for t, v in banks
    ]
    vectors = [protocol.profile_vector(r, layout_json) for r in replies]
    assert vectors[0].shape == (protocol.profile_length(layout_json),)
    pooled = protocol.read_profile_sum(np.sum(vectors, axis=0), layout, merge_stats(stats), VAL_FRACTION, 2)
    for split, index in (("train", 0), ("validation", 1)):
        assert pooled[split] == add_profiles(split_profile(b[index], LENDING_CLUB.target, layout) for b in banks)
    corrupted = np.sum(vectors, axis=0)
    corrupted[7] += 1e20
    with pytest.raises(ProtocolError, match="exceed|add up to"):
        protocol.read_profile_sum(corrupted, layout, merge_stats(stats), VAL_FRACTION, 2)
    shifted = np.sum(vectors, axis=0)
    shifted[5] += 0.5
    with pytest.raises(ProtocolError, match="not whole non-negative"):
        protocol.read_profile_sum(shifted, layout, None, VAL_FRACTION, 2)
