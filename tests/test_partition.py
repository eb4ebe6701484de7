"""Virtual banks: seeded, disjoint, covering every row; impossible splits are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcredit.core.loading import load_csv
from fedcredit.core.partition import CENSUS_DIVISIONS, PartitionError, partition, stratified_split
from fedcredit.core.schema import LENDING_CLUB


@pytest.fixture(scope="module")
def pool():
    return stratified_split(load_csv("", LENDING_CLUB), "Class", 0.2, 42)[0]


def _check_disjoint_cover(banks, n):
    rows = np.concatenate([b.rows for b in banks])
    assert len(rows) == n and len(np.unique(rows)) == n


@pytest.mark.parametrize("scheme,n", [("region", 4), ("region", 9), ("iid", 3), ("iid", 20), ("dirichlet", 5)])
def test_partitions_are_disjoint_cover_and_reproducible(pool, scheme, n):
    banks = partition(pool, scheme, n, 7, "Class", "addr_state", alpha=1.0)
    assert len(banks) == n
    _check_disjoint_cover(banks, len(pool))
    again = partition(pool, scheme, n, 7, "Class", "addr_state", alpha=1.0)
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(banks, again))


def test_region_banks_hold_their_states_only(pool):
    banks = {b.name: b for b in partition(pool, "region", 9, 0, "Class", "addr_state")}
    states = set(pool.iloc[banks["pacific"].rows]["addr_state"])
    assert states <= set(CENSUS_DIVISIONS["pacific"]) and "CA" in states


def test_seed_changes_iid_and_dirichlet(pool):
    for scheme in ("iid", "dirichlet"):
        a = partition(pool, scheme, 4, 1, "Class", None)
        b = partition(pool, scheme, 4, 2, "Class", None)
        assert not np.array_equal(a[0].rows, b[0].rows)


def test_dirichlet_skews_default_rates(pool):
    labels = pool["Class"].to_numpy()
    rates = [labels[b.rows].mean() for b in partition(pool, "dirichlet", 5, 3, "Class", None, alpha=0.3)]
    assert max(rates) > 2 * min(rates)
    assert all(0 < r < 1 for r in rates)  # each bank keeps both classes


def test_region_with_unservable_bank_count_says_what_to_do(pool):
    with pytest.raises(PartitionError, match="serves 4 banks .* or 9 .*not 5.*num-supernodes=4"):
        partition(pool, "region", 5, 0, "Class", "addr_state")


def test_too_many_banks_and_unknown_scheme(pool):
    with pytest.raises(PartitionError, match="too small to train"):
        partition(pool, "iid", 500, 0, "Class", None)
    with pytest.raises(PartitionError, match="could not give each of 60 banks"):
        partition(pool, "dirichlet", 60, 0, "Class", None, alpha=0.05)
    with pytest.raises(PartitionError, match="unknown partitioning 'geo'"):
        partition(pool, "geo", 4, 0, "Class", None)


def test_stratified_split_keeps_default_rate_and_is_disjoint(pool):
    rest, sample = stratified_split(pool, "Class", 0.25, 5)
    assert len(rest) + len(sample) == len(pool)
    assert abs(sample["Class"].mean() - pool["Class"].mean()) < 0.002
    cols = list(pool.columns)
    rejoined = pd.concat([rest, sample]).sort_values(cols).reset_index(drop=True)
    assert rejoined.equals(pool.sort_values(cols).reset_index(drop=True))
