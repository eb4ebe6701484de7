"""`fedcredit split`: per-bank CSVs cut from the embedded data set, for demos and tests.

The files are the original rows (text as published), so each one is exactly
what a bank would hand to `fedcredit validate` and its SuperNode. Optionally
a stratified hold-out file is kept out of every bank first.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pandas as pd

from fedcredit.core.loading import builtin_csv_text
from fedcredit.core.partition import SCHEMES, PartitionError, partition, stratified_split
from fedcredit.core.schema import LENDING_CLUB


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory for the bank CSVs")
    parser.add_argument("--banks", type=int, default=4, help="number of banks (region: 4 or 9)")
    parser.add_argument("--scheme", choices=SCHEMES, default="region")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (scheme dirichlet)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--holdout", type=float, default=0.0,
                        help="fraction kept out of every bank and written to holdout.csv (0: none)")


def split_builtin(out: str | Path, banks: int, scheme: str = "region", seed: int = 42, alpha: float = 0.5,
                  holdout: float = 0.0) -> dict[str, Path]:
    """Write bank-<i>-<name>.csv files (and holdout.csv); returns {bank name: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    raw = pd.read_csv(io.StringIO(builtin_csv_text()), dtype=str, keep_default_na=False)
    labels = (raw[LENDING_CLUB.target] == LENDING_CLUB.positive_label).astype(int)
    frame = raw.assign(_label=labels)
    if holdout > 0:
        frame, test = stratified_split(frame, "_label", holdout, seed)
        test.drop(columns="_label").to_csv(out / "holdout.csv", index=False)
    paths = {}
    for i, bank in enumerate(partition(frame, scheme, banks, seed, "_label", LENDING_CLUB.partition, alpha)):
        path = out / f"bank-{i}-{bank.name}.csv" if not bank.name.startswith("bank-") else out / f"{bank.name}.csv"
        frame.iloc[bank.rows].drop(columns="_label").to_csv(path, index=False)
        paths[bank.name] = path
    return paths


def run(args: argparse.Namespace) -> int:
    try:
        paths = split_builtin(args.out, args.banks, args.scheme, args.seed, args.alpha, args.holdout)
    except PartitionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        rows = sum(1 for _ in path.open()) - 1
        print(f"{name}: {path} ({rows} rows)")
    if args.holdout > 0:
        print(f"hold-out: {Path(args.out) / 'holdout.csv'}")
    return 0
