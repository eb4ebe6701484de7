"""Split the embedded data set into virtual banks for simulation.

All splits are seeded, disjoint and cover every row; they are recomputed
identically in every process (ServerApp and each ClientApp) from the run
config, so no process ever has to ship rows to another.

`region` (the default) gives each bank a contiguous piece of the map:
- 4 banks: the 4 US census regions; 9 banks: the 9 census divisions.
- any other count: the states are walked in a fixed geographic order (census
  division by division, the states of a division by code, as listed in
  CENSUS_DIVISIONS) and cut into banks of about equal row counts. A bank ends
  at a state border when that keeps it within SPLIT_TOLERANCE of its share;
  otherwise (always for a state with more rows than a bank should hold, such
  as California) the state's rows are shuffled with the seed and shared by
  consecutive banks.
Bank names (unique, lower case): the region or division name when a bank holds
exactly one; otherwise its states in the walking order, `nj-ny` for up to three
whole states and `ct..ny` (first..last) for more, where `ca-1`, `ca-2`, ... are
the consecutive parts of a state shared by several banks (`tx-2..ca-1`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

# US census regions and divisions (Census Bureau definitions, DC in South Atlantic).
CENSUS_DIVISIONS: dict[str, tuple[str, ...]] = {
    "new-england": ("CT", "ME", "MA", "NH", "RI", "VT"),
    "mid-atlantic": ("NJ", "NY", "PA"),
    "east-north-central": ("IL", "IN", "MI", "OH", "WI"),
    "west-north-central": ("IA", "KS", "MN", "MO", "NE", "ND", "SD"),
    "south-atlantic": ("DE", "DC", "FL", "GA", "MD", "NC", "SC", "VA", "WV"),
    "east-south-central": ("AL", "KY", "MS", "TN"),
    "west-south-central": ("AR", "LA", "OK", "TX"),
    "mountain": ("AZ", "CO", "ID", "MT", "NV", "NM", "UT", "WY"),
    "pacific": ("AK", "CA", "HI", "OR", "WA"),
}
CENSUS_REGIONS: dict[str, tuple[str, ...]] = {
    "northeast": ("new-england", "mid-atlantic"),
    "midwest": ("east-north-central", "west-north-central"),
    "south": ("south-atlantic", "east-south-central", "west-south-central"),
    "west": ("mountain", "pacific"),
}
SCHEMES = ("region", "iid", "dirichlet")
MIN_BANK_ROWS = 50


class PartitionError(ValueError):
    """The requested split cannot be made for this number of banks."""


@dataclass(frozen=True)
class Bank:
    """One virtual bank's rows (positions in the pool) and its name."""

    name: str
    rows: np.ndarray


def stratified_positions(labels: pd.Series | np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, sample): row positions, each ascending, with `fraction` of each class in the sample.

    Depends on the labels alone, so a bank can split its cached columns one at
    a time (`fedcredit.core.cache.load_cached_split`) without holding the frame twice.
    """
    if not 0.0 < fraction < 1.0:
        raise PartitionError(f"split fraction must be between 0 and 1 (exclusive), got {fraction}")
    frame = pd.DataFrame({"label": np.asarray(labels)})
    sample = np.sort(frame.groupby("label", group_keys=False).sample(frac=fraction, random_state=seed).index)
    keep = np.ones(len(frame), dtype=bool)
    keep[sample] = False
    return np.flatnonzero(keep), sample


def stratified_split(frame: pd.DataFrame, target: str, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, sample) with `fraction` of each class in the sample, each in the frame's row order."""
    rest, sample = stratified_positions(frame[target], fraction, seed)
    return frame.iloc[rest].reset_index(drop=True), frame.iloc[sample].reset_index(drop=True)


SPLIT_TOLERANCE = 0.15  # how far (share of its target) a bank may miss its size to end at a state border


def check_capacity(num_rows: int, num_banks: int, scheme: str) -> None:
    """One clear line when `num_banks` cannot each get MIN_BANK_ROWS rows (or there is no bank)."""
    if num_banks < 1:
        raise PartitionError(
            f"need at least one bank, got {num_banks}: set num-supernodes (simulation) "
            f"or --banks (fedcredit split/demo) to 1 or more"
        )
    if num_rows < num_banks * MIN_BANK_ROWS:
        raise PartitionError(
            f"partitioning '{scheme}' cannot give {num_banks} banks {MIN_BANK_ROWS}+ rows each from {num_rows} rows: "
            f"use at most {num_rows // MIN_BANK_ROWS} banks (num-supernodes in simulation, --banks for fedcredit "
            f"split/demo)"
        )


def _census_groups(num_banks: int) -> dict[str, tuple[str, ...]] | None:
    """The census regions (4 banks) or divisions (9 banks); None for any other count."""
    if num_banks == len(CENSUS_REGIONS):
        return {r: tuple(s for d in divs for s in CENSUS_DIVISIONS[d]) for r, divs in CENSUS_REGIONS.items()}
    if num_banks == len(CENSUS_DIVISIONS):
        return dict(CENSUS_DIVISIONS)
    return None


def _cut_plan(counts: list[tuple[str, int]], num_banks: int) -> list[list[tuple[str, int]]]:
    """Per bank, the (state, rows taken) pieces, walking `counts` in order.

    Each bank aims at its share of the rows still to place (remaining rows /
    remaining banks), so one bank's miss is spread over the banks after it. It
    ends at the state border nearest its target when that border is within
    SPLIT_TOLERANCE of it, else inside the state, exactly at the target.
    """
    plan: list[list[tuple[str, int]]] = []
    bank: list[tuple[str, int]] = []
    size, left = 0, sum(n for _, n in counts)  # rows in the open bank; rows not yet in a closed bank
    for state, rows in counts:
        while rows > 0:
            banks_left = num_banks - len(plan)
            target = left / banks_left
            if banks_left == 1 or size + rows <= target:
                bank.append((state, rows))
                size, rows = size + rows, 0
                continue
            low = max(target * (1 - SPLIT_TOLERANCE), MIN_BANK_ROWS)
            high = min(target * (1 + SPLIT_TOLERANCE), left - (banks_left - 1) * MIN_BANK_ROWS)
            borders = [(target - size, 0)] if size >= low else []  # end before this state
            if size + rows <= high:
                borders.append((size + rows - target, rows))  # end after this state
            take = min(borders)[1] if borders else round(target) - size  # else cut inside the state
            if take:
                bank.append((state, take))
                size, rows = size + take, rows - take
            plan.append(bank)
            bank, left, size = [], left - size, 0
    plan.append(bank)
    return plan


def _bank_name(pieces: list[str], whole: bool, states: set[str], present: set[str]) -> str:
    """Region/division name if the bank holds exactly one, else its pieces (see the module docstring)."""
    if whole:
        named = [(r, {s for d in divs for s in CENSUS_DIVISIONS[d]}) for r, divs in CENSUS_REGIONS.items()]
        named += [(d, set(members)) for d, members in CENSUS_DIVISIONS.items()]
        for name, members in named:
            if states == members & present:
                return name
        if len(pieces) <= 3:
            return "-".join(pieces)
    return pieces[0] if len(pieces) == 1 else f"{pieces[0]}..{pieces[-1]}"


def by_region(states: pd.Series, num_banks: int, seed: int = 0) -> list[Bank]:
    """Contiguous geographic banks of balanced size (census regions/divisions for 4/9 banks)."""
    codes = states.to_numpy()
    order = [s for members in CENSUS_DIVISIONS.values() for s in members]
    unknown = sorted(set(codes) - set(order))
    if unknown:
        raise PartitionError(f"partitioning 'region': unknown US state codes {unknown} in the partition column")
    census = _census_groups(num_banks)
    if census is not None:
        return [Bank(name, np.flatnonzero(np.isin(codes, members))) for name, members in census.items()]
    check_capacity(len(codes), num_banks, "region")
    rng = np.random.default_rng(seed)
    rows_of = {s: rng.permutation(np.flatnonzero(codes == s)) for s in order if (codes == s).any()}
    plan = _cut_plan([(s, len(rows)) for s, rows in rows_of.items()], num_banks)
    parts = Counter(s for bank in plan for s, _ in bank)  # banks sharing each state
    used = dict.fromkeys(rows_of, 0)  # rows of each state already given to a bank
    seen = dict.fromkeys(rows_of, 0)  # parts of each state already named
    banks = []
    for bank in plan:
        chunks, pieces = [], []
        for state, n in bank:
            chunks.append(rows_of[state][used[state] : used[state] + n])
            used[state] += n
            seen[state] += 1
            pieces.append(state.lower() if parts[state] == 1 else f"{state.lower()}-{seen[state]}")
        whole = all(parts[s] == 1 for s, _ in bank)
        name = _bank_name(pieces, whole, {s for s, _ in bank}, set(rows_of))
        banks.append(Bank(name, np.sort(np.concatenate(chunks))))
    assert len({b.name for b in banks}) == len(banks), "region bank names must be unique"
    return banks


def iid(num_rows: int, num_banks: int, seed: int) -> list[Bank]:
    order = np.random.default_rng(seed).permutation(num_rows)
    return [Bank(f"bank-{i}", np.sort(part)) for i, part in enumerate(np.array_split(order, num_banks))]


def dirichlet(labels: np.ndarray, num_banks: int, alpha: float, seed: int, attempts: int = 100) -> list[Bank]:
    """Label skew: each class is spread over banks by Dirichlet(alpha) shares.

    Draws are repeated until every bank has at least MIN_BANK_ROWS rows and
    both classes; small alpha with many banks may never get there.
    """
    if alpha <= 0:
        raise PartitionError(f"dirichlet-alpha must be positive, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(attempts):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_banks)]
        for cls in classes:
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_banks, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for bank, chunk in enumerate(np.split(idx, cuts)):
                parts[bank].append(chunk)
        banks = [np.sort(np.concatenate(p)) for p in parts]
        if all(len(b) >= MIN_BANK_ROWS and len(np.unique(labels[b])) == len(classes) for b in banks):
            return [Bank(f"bank-{i}", b) for i, b in enumerate(banks)]
    raise PartitionError(
        f"partitioning 'dirichlet' with alpha={alpha} could not give each of {num_banks} banks "
        f"{MIN_BANK_ROWS}+ rows with both classes in {attempts} draws: raise dirichlet-alpha or use fewer banks"
    )


def partition(
    pool: pd.DataFrame,
    scheme: str,
    num_banks: int,
    seed: int,
    target: str,
    partition_column: str | None,
    alpha: float = 0.5,
) -> list[Bank]:
    """Split the pool into `num_banks` disjoint banks covering every row."""
    if scheme not in SCHEMES:
        raise PartitionError(f"unknown partitioning '{scheme}': choose one of {list(SCHEMES)}")
    check_capacity(len(pool), num_banks, scheme)
    if scheme == "region":
        if not partition_column or partition_column not in pool.columns:
            raise PartitionError(
                "partitioning 'region' needs the schema's partition column (US state codes): "
                "use partitioning 'iid' or 'dirichlet' for a schema without one"
            )
        banks = by_region(pool[partition_column], num_banks, seed)
    elif scheme == "iid":
        banks = iid(len(pool), num_banks, seed)
    else:
        banks = dirichlet(pool[target].to_numpy(), num_banks, alpha, seed)
    small = [f"{b.name} ({len(b.rows)} rows)" for b in banks if len(b.rows) < MIN_BANK_ROWS]
    if small:
        raise PartitionError(
            f"partitioning '{scheme}' with {num_banks} banks leaves banks too small to train: {small}; use fewer banks"
        )
    return banks
