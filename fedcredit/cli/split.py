"""`fedcredit split --banks N --out DIR`: per-bank CSVs from the embedded data set (demos, tests)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from fedcredit.core.partition import SCHEMES, PartitionError
from fedcredit.deploy.split import HOLDOUT_FILE, split_builtin

EXAMPLE = "fedcredit split --banks 4 --out banks --holdout 0.2"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="directory for the bank CSVs")
    parser.add_argument("--banks", type=int, default=4, help="number of banks")
    parser.add_argument(
        "--scheme",
        choices=SCHEMES,
        default="region",
        help="region: contiguous US states (4: census regions, 9: divisions); iid; dirichlet",
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration, for --scheme dirichlet")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the cut and the hold-out")
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help=f"fraction kept out of every bank and written to {HOLDOUT_FILE}; 0 writes none",
    )


def run(args: argparse.Namespace) -> int:
    try:
        paths = split_builtin(args.out, args.banks, args.scheme, args.seed, args.alpha, args.holdout)
    except PartitionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path} ({len(pd.read_csv(path, dtype=str))} rows)")
    if args.holdout > 0:
        print(f"hold-out: {Path(args.out) / HOLDOUT_FILE}")
    return 0
