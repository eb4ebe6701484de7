"""`fedcredit demo`: a whole consortium on this machine, secured as in production.

Cuts per-bank CSVs from the embedded data set (`fedcredit split`), creates a
CA, the SuperLink certificate and one key pair per bank, starts a SuperLink
with TLS and SuperNode authentication, registers the banks' public keys,
starts one SuperNode per bank on 127.0.0.1 with its own CSV, runs the app
with `flwr run . <connection>`, prints the outcome and stops everything.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fedcredit.deploy.consortium import LocalDeployment
from fedcredit.deploy.split import split_builtin


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--banks", type=int, default=3)
    parser.add_argument("--scheme", default="iid", help="how the demo banks are cut (region needs 4 or 9 banks)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default="", help="keep certificates, CSVs, logs and outputs here "
                                                       "(default: a temporary directory, removed afterwards)")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="fedcredit-demo-") as tmp:
        work = Path(args.workdir or tmp).resolve()
        started = time.monotonic()
        csvs = split_builtin(work / "banks", args.banks, args.scheme)
        print(f"banks: {', '.join(f'{n} ({p})' for n, p in csvs.items())}")
        with LocalDeployment(work / "deployment", csvs) as deployment:
            print(f"SuperLink on {deployment.address} (TLS, SuperNode authentication); "
                  f"{len(csvs)} SuperNodes registered and started")
            deployment.wait_for_nodes(len(csvs))
            result = deployment.run({"num-server-rounds": args.rounds, "output-dir": str(work / "outputs")})
        for line in result.logs.splitlines():
            if "fedcredit" in line:
                print(line)
        print(f"run {result.run_id}: {result.status} {'' if result.completed else result.details}")
        if result.completed:
            run_dir = max((work / "outputs").iterdir(), key=lambda p: p.stat().st_mtime)
            history = json.loads((run_dir / "history.json").read_text())
            auc = history["rounds"][-1]["evaluate"]["pooled"]["auc"]
            print(f"demo wall time {time.monotonic() - started:.1f} s; final pooled validation AUC {auc:.4f}")
            if args.workdir:
                print(f"outputs: {run_dir}")
        return 0 if result.completed else 1
