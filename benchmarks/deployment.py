"""Seconds per round of the local TLS + node-auth deployment behind the proxy (one 2-core host).

`fedcredit.deploy.consortium.LocalDeployment`: a SuperLink, nginx and one
SuperNode per bank on this machine, each message a fresh ClientApp process
(Flower 1.42). Banks hold iid slices of the embedded data; default config
otherwise. Also times the ClientApp's import, which every message pays.

    python benchmarks/deployment.py [--banks 4] [--rounds 5] [--secure] [--evaluation folded|separate]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedcredit.deploy.consortium import LocalDeployment
from fedcredit.deploy.localrun import APP_DIR
from fedcredit.deploy.split import split_builtin


def import_seconds(statement: str) -> float:
    code = f"import sys, time; sys.path.insert(0, {str(APP_DIR)!r}); t = time.monotonic(); {statement}; print(time.monotonic() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--banks", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--secure", action="store_true", help="privacy.secure-aggregation = true")
    parser.add_argument("--evaluation", default="auto", choices=["auto", "folded", "separate"])
    args = parser.parse_args()
    print(
        f"import client_app (every message's process): {import_seconds('import client_app'):.2f} s; "
        f"with TensorFlow (train, evaluate): {import_seconds('import client_app, tensorflow'):.2f} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        csvs = split_builtin(tmp_path / "banks", args.banks, "iid")
        out = tmp_path / "out"
        config = {
            "num-server-rounds": args.rounds,
            "output-dir": str(out),
            "personalize.epochs": 0,
            "evaluation": args.evaluation,
        }
        if args.secure:
            config["privacy.secure-aggregation"] = True
        with LocalDeployment(tmp_path / "dep", csvs) as dep:
            dep.wait_for_nodes(args.banks)
            started = time.monotonic()
            result = dep.run(config)
            seconds = time.monotonic() - started
        (run_dir,) = list(out.iterdir())
        history = json.loads((run_dir / "history.json").read_text())
    rounds = [e["seconds"] for e in history["rounds"][1:]]
    print(
        f"{args.banks} banks, {args.rounds} rounds, evaluation {history['evaluation']}"
        f"{' (secure mode)' if args.secure else ''}: {result.status} in "
        f"{seconds:.0f} s; seconds per round {rounds}, mean {sum(rounds) / len(rounds):.1f}"
    )


if __name__ == "__main__":
    main()
