"""The default config through the real `flwr run` for several federation sizes.

Each size is its own `flwr run` on one private local SuperLink (own FLWR_HOME and
port, no per-run dependency installation), with only `num-supernodes` (and one
CPU per simulated bank) set: what `flwr run . --federation-config
"num-supernodes=N client-resources-num-cpus=1"` does. Prints status, wall time,
hold-out AUC and the banks.

    python benchmarks/federation_sizes.py [--sizes 2 3 4 7 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fedcredit.deploy.localrun import LocalFlower
from fedcredit.federation.history import read_history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[2, 3, 4, 7, 20])
    args = parser.parse_args()
    print("| banks | status | flwr run s | hold-out AUC | pooled val AUC | banks (training rows) |")
    print("| ---: | --- | ---: | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory() as tmp, LocalFlower(Path(tmp) / "flwr") as flower:
        for n in args.sizes:
            out = Path(tmp) / f"out{n}"
            result = flower.run({"output-dir": str(out)}, f"num-supernodes={n} client-resources-num-cpus=1")
            auc = pooled = "n/a"
            banks = result.details
            if result.completed:
                history = read_history(next(out.iterdir()) / "history.json")
                last = history.last_round()
                auc = f"{last.holdout_auc:.4f}" if last and last.holdout_auc is not None else "n/a"
                pooled = f"{last.pooled_auc:.4f}" if last and last.pooled_auc is not None else "n/a"
                banks = ", ".join(f"{b} ({r.training_rows})" for b, r in history.banks.items())
            print(f"| {n} | {result.status} | {result.seconds:.1f} | {auc} | {pooled} | {banks} |", flush=True)


if __name__ == "__main__":
    main()
