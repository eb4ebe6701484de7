"""Per-bank CSVs cut from the embedded data set, for demos and tests (`fedcredit split`).

The files are the original rows (text as published), so each one is exactly
what a bank would hand to `fedcredit validate` and its SuperNode. Optionally
a stratified hold-out file is kept out of every bank first.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedcredit.core.loading import builtin_csv_text
from fedcredit.core.partition import partition, stratified_split
from fedcredit.core.schema import LENDING_CLUB

HOLDOUT_FILE = "holdout.csv"


@dataclass(frozen=True)
class BuiltinSplit:
    """Per-bank rows cut from the embedded data set, in memory (nothing written yet)."""

    banks: dict[str, pd.DataFrame]  # bank name -> its original text rows
    holdout: pd.DataFrame | None


def cut_builtin(
    banks: int, scheme: str = "region", seed: int = 42, alpha: float = 0.5, holdout: float = 0.0
) -> BuiltinSplit:
    """The split `split_builtin` writes, without writing it; PartitionError when it cannot be made."""
    raw = pd.read_csv(io.StringIO(builtin_csv_text()), dtype=str, keep_default_na=False)
    labels = (raw[LENDING_CLUB.target] == LENDING_CLUB.positive_label).astype(int)
    frame = raw.assign(_label=labels)
    test = None
    if holdout > 0:
        frame, test = stratified_split(frame, "_label", holdout, seed)
    cut = partition(frame, scheme, banks, seed, "_label", LENDING_CLUB.partition, alpha)
    return BuiltinSplit(
        {bank.name: frame.iloc[bank.rows].drop(columns="_label") for bank in cut},
        None if test is None else test.drop(columns="_label"),
    )


def write_split(split: BuiltinSplit, out: str | Path) -> dict[str, Path]:
    """Write bank-<i>-<name>.csv files (and holdout.csv) into `out`; returns {bank name: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if split.holdout is not None:
        split.holdout.to_csv(out / HOLDOUT_FILE, index=False)
    paths = {}
    for i, (name, rows) in enumerate(split.banks.items()):
        path = out / f"bank-{i}-{name}.csv" if not name.startswith("bank-") else out / f"{name}.csv"
        rows.to_csv(path, index=False)
        paths[name] = path
    return paths


def split_builtin(
    out: str | Path, banks: int, scheme: str = "region", seed: int = 42, alpha: float = 0.5, holdout: float = 0.0
) -> dict[str, Path]:
    """Write bank-<i>-<name>.csv files (and holdout.csv); returns {bank name: path}.

    Raises PartitionError (before writing anything) when the split cannot be made.
    """
    return write_split(cut_builtin(banks, scheme, seed, alpha, holdout), out)
