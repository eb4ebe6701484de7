"""`fedcredit synth --rows N --out bank.csv`: a synthetic bank file for benchmarks and tests.

Resamples an embedded data set's rows with noise (`fedcredit.core.synth`):
the file is synthetic, never a real loan book, and passes `fedcredit
validate` against that data set's schema.
"""

from __future__ import annotations

import argparse

from fedcredit.core.loading import DATA_SETS
from fedcredit.core.synth import CHUNK_ROWS, synthesise

EXAMPLE = "fedcredit synth --rows 1000000 --out big-bank.csv --seed 1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, required=True, help="number of loans to write")
    parser.add_argument("--out", required=True, help="the CSV file to write")
    parser.add_argument("--data-set", choices=DATA_SETS, default="lending_club", help="embedded data set to resample")
    parser.add_argument("--seed", type=int, default=0, help="the same seed writes the same file")
    parser.add_argument("--noise", type=float, default=0.05, help="relative noise on numeric cells")
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS, help="rows held in memory at a time")


def run(args: argparse.Namespace) -> int:
    path = synthesise(args.out, args.rows, args.data_set, args.seed, args.noise, args.chunk_rows)
    print(f"{path}: {args.rows:,} synthetic rows resampled from the embedded {args.data_set} data set")
    return 0
