"""Seconds per round of the local TLS + node-auth deployment behind the proxy (one 2-core host).

`fedcredit.deploy.consortium.LocalDeployment`: a SuperLink, nginx and one
SuperNode per bank on this machine, each message a fresh ClientApp process
(Flower 1.42). Banks hold iid slices of the embedded data; default config
otherwise. Also times the ClientApp's import, which every message pays.

    python benchmarks/deployment.py [--banks 4] [--rounds 5] [--secure] [--identity] [--evaluation folded|separate]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedcredit.deploy.consortium import LocalDeployment
from fedcredit.deploy.localrun import APP_DIR
from fedcredit.deploy.split import split_builtin
from fedcredit.federation.history import read_history


def import_seconds(statement: str) -> float:
    code = f"import sys, time; sys.path.insert(0, {str(APP_DIR)!r}); t = time.monotonic(); {statement}; print(time.monotonic() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


PROFILE = """
import sys, time
sys.path.insert(0, sys.argv[1])
marks = [("start", time.monotonic())]
import client_app
marks.append(("import client_app", time.monotonic()))
import tensorflow
marks.append(("import tensorflow", time.monotonic()))
from fedcredit.core.banks import load_bank, schema_of
from fedcredit.core.config import parse_run_config
from fedcredit.core.stats import compute_stats, merge_stats, preprocessing_from_stats
from fedcredit.core import model as mdl
from fedcredit.federation import client
node = {"partition-id": 0, "num-partitions": 4}
cfg = parse_run_config({"partitioning": "iid"})
bank = load_bank(cfg, node)
marks.append(("load the bank's rows", time.monotonic()))
prep = preprocessing_from_stats(merge_stats([compute_stats(bank.train, schema_of(cfg))]), cfg.min_category_count)
weights = mdl.build_model(prep, mdl.ModelSpec.of(cfg, schema_of(cfg))).get_weights()
marks.append(("(preprocessing and initial weights: the coordinator's part)", time.monotonic()))
client.evaluate(cfg, node, weights, prep.to_json())
marks.append(("build the model, evaluate (folded)", time.monotonic()))
client.train(cfg, node, weights, prep.to_json(), 1)
marks.append(("train 3 local epochs", time.monotonic()))
for (_, a), (name, b) in zip(marks, marks[1:]):
    print(f"  {name}: {b - a:.2f} s")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--banks", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--secure", action="store_true", help="privacy.secure-aggregation = true")
    parser.add_argument(
        "--identity", action="store_true", help="with the consortium roster: every reply signed and egress-logged"
    )
    parser.add_argument("--evaluation", default="auto", choices=["auto", "folded", "separate"])
    parser.add_argument("--profile", action="store_true", help="only profile one cold train message of one bank")
    args = parser.parse_args()
    if args.profile:
        print("one cold ClientApp process (what each deployment message costs), bank 1 of 4 iid:")
        print(subprocess.run([sys.executable, "-c", PROFILE, str(APP_DIR)], capture_output=True, text=True).stdout)
        return
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
        with LocalDeployment(tmp_path / "dep", csvs, identity=args.identity) as dep:
            dep.wait_for_nodes(args.banks)
            started = time.monotonic()
            result = dep.run(config)
            seconds = time.monotonic() - started
        (run_dir,) = list(out.iterdir())
        history = read_history(run_dir / "history.json")
    rounds = [e.seconds for e in history.trained_rounds]
    print(
        f"{args.banks} banks, {args.rounds} rounds, evaluation {history.evaluation}"
        f"{' (secure mode)' if args.secure else ''}{' (roster: signed replies)' if args.identity else ''}: "
        f"{result.status} in "
        f"{seconds:.0f} s; seconds per round {rounds}, mean {sum(rounds) / len(rounds):.1f}"
    )


if __name__ == "__main__":
    main()
