"""Federated preprocessing: merged bank statistics equal the pooled ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcredit.core.loading import load_csv
from fedcredit.core.partition import partition
from fedcredit.core.schema import LENDING_CLUB
from fedcredit.core.stats import Preprocessing, compute_stats, merge_stats, preprocessing_from_stats


@pytest.fixture(scope="module")
def frame():
    return load_csv("", LENDING_CLUB)


def test_merged_statistics_equal_pooled(frame):
    banks = partition(frame, "region", 9, 0, "Class", "addr_state")
    merged = merge_stats([compute_stats(frame.iloc[b.rows], LENDING_CLUB) for b in banks])
    prep = preprocessing_from_stats(merged, min_count=1)
    for col in LENDING_CLUB.numeric:
        assert prep.mean[col] == pytest.approx(frame[col].mean(), rel=1e-12)
        assert prep.variance[col] == pytest.approx(frame[col].var(ddof=0), rel=1e-9)
    for col in LENDING_CLUB.categorical:
        assert prep.vocabulary[col] == sorted(frame[col].unique())
    assert merged.rows == len(frame)


def test_rare_categories_leave_the_vocabulary(frame):
    counts = frame["sub_grade"].value_counts()
    prep = preprocessing_from_stats(compute_stats(frame, LENDING_CLUB), min_count=30)
    assert set(prep.vocabulary["sub_grade"]) == set(counts[counts >= 30].index)
    assert len(prep.vocabulary["sub_grade"]) < len(counts)


def test_missing_values_are_left_out_of_moments():
    f = pd.DataFrame(
        {c: [1.0, np.nan, 3.0] for c in LENDING_CLUB.numeric} | {c: ["a", "", "a"] for c in LENDING_CLUB.categorical}
    )
    stats = compute_stats(f, LENDING_CLUB)
    assert stats.numeric["int_rate"] == (2, 4.0, 10.0)
    assert stats.categorical["term"] == {"a": 2}


def test_preprocessing_json_round_trip(frame):
    prep = preprocessing_from_stats(compute_stats(frame, LENDING_CLUB), 10)
    assert Preprocessing.from_json(prep.to_json()) == prep


def test_column_without_values_is_an_error():
    f = pd.DataFrame({c: [np.nan] for c in LENDING_CLUB.numeric} | {c: ["a"] for c in LENDING_CLUB.categorical})
    with pytest.raises(ValueError, match="has no values at any bank"):
        preprocessing_from_stats(compute_stats(f, LENDING_CLUB), 1)
