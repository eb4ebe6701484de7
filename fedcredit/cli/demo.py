"""`fedcredit demo`: a TLS + authenticated deployment of N banks on this machine, end to end."""

from __future__ import annotations

import argparse
import sys

from fedcredit.core.config import ConfigError
from fedcredit.core.partition import SCHEMES, PartitionError
from fedcredit.deploy.demo import run_demo
from fedcredit.deploy.proxy import ProxyError

EXAMPLE = "fedcredit demo --banks 4 --rounds 3 --workdir demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--banks", type=int, default=3, help="number of banks, one SuperNode each")
    parser.add_argument(
        "--scheme",
        choices=SCHEMES,
        default="region",
        help="how the demo banks are cut: region (contiguous US states), iid or dirichlet",
    )
    parser.add_argument("--rounds", type=int, default=3, help="federated rounds (the run's num-server-rounds)")
    parser.add_argument(
        "--workdir",
        default="",
        help="keep certificates, CSVs, logs and outputs here (default: a temporary directory, removed afterwards)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        demo = run_demo(args.banks, args.scheme, args.rounds, args.workdir or None, progress=print)
    except (PartitionError, ProxyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:  # --rounds is the run's num-server-rounds
        print(f"error: --rounds {args.rounds}: {err}", file=sys.stderr)
        return 2
    for line in demo.run.logs.splitlines():
        if "fedcredit" in line:
            print(line)
    print(f"run {demo.run.run_id}: {demo.run.status} {'' if demo.run.completed else demo.run.details}")
    if demo.run.completed:
        print(f"demo wall time {demo.seconds:.1f} s; final pooled validation AUC {demo.final_auc:.4f}")
        if args.workdir:
            print(f"outputs: {demo.run_dir}")
    return 0 if demo.run.completed else 1
