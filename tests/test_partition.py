"""Virtual banks: seeded, disjoint, covering every row; impossible splits are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcredit.core.loading import load_csv
from fedcredit.core.partition import (
    CENSUS_DIVISIONS,
    CENSUS_REGIONS,
    MIN_BANK_ROWS,
    PartitionError,
    partition,
    stratified_split,
)
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


GEOGRAPHIC_ORDER = [s for members in CENSUS_DIVISIONS.values() for s in members]


def _states_in_order(pool, bank):
    return sorted(set(pool.iloc[bank.rows]["addr_state"]), key=GEOGRAPHIC_ORDER.index)


@pytest.mark.parametrize("n", [2, 3, 5, 7, 20, 50])
def test_region_serves_any_count_with_balanced_contiguous_banks(pool, n):
    banks = partition(pool, "region", n, 42, "Class", "addr_state")
    assert len(banks) == n
    _check_disjoint_cover(banks, len(pool))
    assert len({b.name for b in banks}) == n
    sizes = [len(b.rows) for b in banks]
    assert min(sizes) >= MIN_BANK_ROWS
    assert max(sizes) / min(sizes) <= 1.4  # measured: at most 1.35 for these counts
    # Walking the banks in order walks the states in geographic order (a shared state ends one bank, starts the next).
    spans = [[GEOGRAPHIC_ORDER.index(s) for s in _states_in_order(pool, b)] for b in banks]
    assert all(a[-1] <= b[0] for a, b in zip(spans, spans[1:]))
    again = partition(pool, "region", n, 42, "Class", "addr_state")
    assert [b.name for b in again] == [b.name for b in banks]
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(banks, again))


def test_region_names_say_which_states_and_parts(pool):
    banks = partition(pool, "region", 20, 42, "Class", "addr_state")
    holders = {s: [b.name for b in banks if s in _states_in_order(pool, b)] for s in GEOGRAPHIC_ORDER}
    assert len(holders["CA"]) > 1  # California has more rows than one of 20 banks should hold
    for k, name in enumerate(holders["CA"], start=1):
        assert f"ca-{k}" in name.split("..")
    whole_small = [
        b
        for b in banks
        if len(_states_in_order(pool, b)) <= 3 and all(len(holders[s]) == 1 for s in _states_in_order(pool, b))
    ]
    assert whole_small  # e.g. "il", "in-mi"
    for bank in whole_small:
        assert bank.name == "-".join(_states_in_order(pool, bank)).lower()


def test_region_seed_moves_rows_of_shared_states_not_the_cuts(pool):
    a = partition(pool, "region", 7, 1, "Class", "addr_state")
    b = partition(pool, "region", 7, 2, "Class", "addr_state")
    assert [(x.name, len(x.rows)) for x in a] == [(x.name, len(x.rows)) for x in b]
    assert any(not np.array_equal(x.rows, y.rows) for x, y in zip(a, b))


def test_region_4_and_9_are_the_census_regions_and_divisions(pool):
    states = pool["addr_state"]
    regions = partition(pool, "region", 4, 3, "Class", "addr_state")
    assert [b.name for b in regions] == list(CENSUS_REGIONS)
    for bank, divisions in zip(regions, CENSUS_REGIONS.values()):
        members = [s for d in divisions for s in CENSUS_DIVISIONS[d]]
        assert np.array_equal(bank.rows, np.flatnonzero(states.isin(members)))
    divisions = partition(pool, "region", 9, 3, "Class", "addr_state")
    assert [b.name for b in divisions] == list(CENSUS_DIVISIONS)
    for bank, members in zip(divisions, CENSUS_DIVISIONS.values()):
        assert np.array_equal(bank.rows, np.flatnonzero(states.isin(members)))


def test_region_largest_count_still_gives_every_bank_enough_rows(pool):
    most = len(pool) // MIN_BANK_ROWS
    banks = partition(pool, "region", most, 0, "Class", "addr_state")
    assert len(banks) == most and min(len(b.rows) for b in banks) >= MIN_BANK_ROWS
    _check_disjoint_cover(banks, len(pool))


def test_region_impossible_count_is_one_line_saying_what_to_change(pool):
    most = len(pool) // MIN_BANK_ROWS
    for n, advice in [
        (0, "to 1 or more"),
        (-1, "to 1 or more"),
        (most + 1, f"use at most {most} banks"),
        (1000, f"use at most {most} banks"),
    ]:
        with pytest.raises(PartitionError, match=advice) as err:
            partition(pool, "region", n, 0, "Class", "addr_state")
        assert "\n" not in str(err.value) and str(n) in str(err.value)


def test_too_many_banks_and_unknown_scheme(pool):
    with pytest.raises(PartitionError, match=r"cannot give 500 banks 50\+ rows each"):
        partition(pool, "iid", 500, 0, "Class", None)
    with pytest.raises(PartitionError, match="could not give each of 60 banks"):
        partition(pool, "dirichlet", 60, 0, "Class", None, alpha=0.05)
    with pytest.raises(PartitionError, match="unknown partitioning 'geo'"):
        partition(pool, "geo", 4, 0, "Class", None)


def test_census_split_with_a_tiny_region_is_refused(pool):
    west = pool["addr_state"].isin(CENSUS_DIVISIONS["mountain"] + CENSUS_DIVISIONS["pacific"])
    small = pd.concat([pool[~west], pool[west].head(MIN_BANK_ROWS - 1)]).reset_index(drop=True)
    with pytest.raises(PartitionError, match=r"too small to train: \['west \(49 rows\)'\]; use fewer banks"):
        partition(small, "region", 4, 0, "Class", "addr_state")


def test_stratified_split_keeps_default_rate_and_is_disjoint(pool):
    rest, sample = stratified_split(pool, "Class", 0.25, 5)
    assert len(rest) + len(sample) == len(pool)
    assert abs(sample["Class"].mean() - pool["Class"].mean()) < 0.002
    cols = list(pool.columns)
    rejoined = pd.concat([rest, sample]).sort_values(cols).reset_index(drop=True)
    assert rejoined.equals(pool.sort_values(cols).reset_index(drop=True))
