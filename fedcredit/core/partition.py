"""Split the embedded data set into virtual banks for simulation.

All splits are seeded, disjoint and cover every row; they are recomputed
identically in every process (ServerApp and each ClientApp) from the run
config, so no process ever has to ship rows to another.
"""

from __future__ import annotations

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


def stratified_split(frame: pd.DataFrame, target: str, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rest, sample) with `fraction` of each class in the sample."""
    if not 0.0 < fraction < 1.0:
        raise PartitionError(f"split fraction must be between 0 and 1 (exclusive), got {fraction}")
    sample = frame.groupby(target, group_keys=False).sample(frac=fraction, random_state=seed)
    rest = frame.drop(index=sample.index)
    return rest.reset_index(drop=True), sample.sort_index().reset_index(drop=True)


def _state_groups(num_banks: int) -> dict[str, tuple[str, ...]]:
    if num_banks == len(CENSUS_REGIONS):
        return {r: tuple(s for d in divs for s in CENSUS_DIVISIONS[d]) for r, divs in CENSUS_REGIONS.items()}
    if num_banks == len(CENSUS_DIVISIONS):
        return dict(CENSUS_DIVISIONS)
    raise PartitionError(
        f"partitioning 'region' serves {len(CENSUS_REGIONS)} banks (census regions) or "
        f"{len(CENSUS_DIVISIONS)} (census divisions), not {num_banks}: run with "
        f"--federation-config \"num-supernodes={len(CENSUS_REGIONS)}\" or choose "
        f"partitioning='iid' or 'dirichlet'"
    )


def by_region(states: pd.Series, num_banks: int) -> list[Bank]:
    groups = _state_groups(num_banks)
    known = {s for members in groups.values() for s in members}
    unknown = sorted(set(states.unique()) - known)
    if unknown:
        raise PartitionError(f"partitioning 'region': unknown US state codes {unknown} in the partition column")
    return [Bank(name, np.flatnonzero(states.isin(members).to_numpy())) for name, members in groups.items()]


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


def partition(pool: pd.DataFrame, scheme: str, num_banks: int, seed: int, target: str,
              partition_column: str | None, alpha: float = 0.5) -> list[Bank]:
    """Split the pool into `num_banks` disjoint banks covering every row."""
    if num_banks < 1:
        raise PartitionError(f"need at least one bank, got {num_banks}")
    if scheme == "region":
        if not partition_column or partition_column not in pool.columns:
            raise PartitionError("partitioning 'region' needs the schema's partition column (US state codes)")
        banks = by_region(pool[partition_column], num_banks)
    elif scheme == "iid":
        banks = iid(len(pool), num_banks, seed)
    elif scheme == "dirichlet":
        banks = dirichlet(pool[target].to_numpy(), num_banks, alpha, seed)
    else:
        raise PartitionError(f"unknown partitioning '{scheme}': choose one of {list(SCHEMES)}")
    small = [f"{b.name} ({len(b.rows)} rows)" for b in banks if len(b.rows) < MIN_BANK_ROWS]
    if small:
        raise PartitionError(f"partitioning '{scheme}' with {num_banks} banks leaves banks too small to train: {small}; use fewer banks")
    return banks
