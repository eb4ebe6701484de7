"""Per-bank CSVs cut from the embedded data set, for demos and tests (`fedcredit split`).

The files are the original rows (text as published), so each one is exactly
what a bank would hand to `fedcredit validate` and its SuperNode. Optionally
a stratified hold-out file is kept out of every bank first.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from fedcredit.core.loading import builtin_csv_text
from fedcredit.core.partition import partition, stratified_split
from fedcredit.core.schema import LENDING_CLUB

HOLDOUT_FILE = "holdout.csv"


def split_builtin(
    out: str | Path, banks: int, scheme: str = "region", seed: int = 42, alpha: float = 0.5, holdout: float = 0.0
) -> dict[str, Path]:
    """Write bank-<i>-<name>.csv files (and holdout.csv); returns {bank name: path}.

    Raises PartitionError (before writing anything) when the split cannot be made.
    """
    out = Path(out)
    raw = pd.read_csv(io.StringIO(builtin_csv_text()), dtype=str, keep_default_na=False)
    labels = (raw[LENDING_CLUB.target] == LENDING_CLUB.positive_label).astype(int)
    frame = raw.assign(_label=labels)
    test = None
    if holdout > 0:
        frame, test = stratified_split(frame, "_label", holdout, seed)
    cut = partition(frame, scheme, banks, seed, "_label", LENDING_CLUB.partition, alpha)
    out.mkdir(parents=True, exist_ok=True)
    if test is not None:
        test.drop(columns="_label").to_csv(out / HOLDOUT_FILE, index=False)
    paths = {}
    for i, bank in enumerate(cut):
        path = out / f"bank-{i}-{bank.name}.csv" if not bank.name.startswith("bank-") else out / f"{bank.name}.csv"
        frame.iloc[bank.rows].drop(columns="_label").to_csv(path, index=False)
        paths[bank.name] = path
    return paths
