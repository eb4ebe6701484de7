"""Strategy sweeps: every variant inside one `flwr run` against one `flwr run` per variant.

Default config (4 region banks, 5 rounds) on a private local SuperLink
(`fedcredit.deploy.localrun.LocalFlower`), `--federation-config "num-supernodes=4 client-resources-num-cpus=1"` (as `fedcredit compare`).
Prints the wall time of the whole comparison, per variant, and the hold-out
AUC of each variant (which must be the same both ways).

    python benchmarks/sweep.py [--strategies fedavg fedprox ...] [--seeds 42 1 2] [--separate]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fedcredit.core.config import STRATEGIES
from fedcredit.deploy.localrun import LocalFlower
from fedcredit.federation.history import History, read_history


def holdout(history: History) -> float | None:
    last = history.last_round()
    return last.holdout_auc if last is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--separate", action="store_true", help="one flwr run per variant (the old way)")
    parser.add_argument("--federation-config", default="num-supernodes=4 client-resources-num-cpus=1")
    args = parser.parse_args()
    variants = len(args.strategies) * len(args.seeds)
    with tempfile.TemporaryDirectory() as tmp, LocalFlower(Path(tmp) / "flwr") as flower:
        out = Path(tmp) / "runs"
        started = time.monotonic()
        results = []
        if args.separate:
            for name in args.strategies:
                for seed in args.seeds:
                    run_out = out / f"{name}-{seed}"
                    config = {"strategy.name": name, "seed": seed, "output-dir": str(run_out)}
                    results.append(flower.run(config, args.federation_config))
        else:
            sweep = f"strategy.name={','.join(args.strategies)}; seed={','.join(map(str, args.seeds))}"
            results.append(
                flower.run({"sweep": sweep, "output-dir": str(out)}, args.federation_config, timeout=6 * 3600)
            )
        seconds = time.monotonic() - started
        dirs = sorted(d for d in out.rglob("history.json"))
        aucs = {}
        for path in dirs:
            history = read_history(path)
            label = f"{history.config['strategy.name']} seed {history.config['seed']}"
            aucs[label] = holdout(history) if history.status == "completed" else history.reason
    mode = "one flwr run per variant" if args.separate else "one flwr run (sweep)"
    print(
        f"{mode}: {variants} variants in {seconds:.1f} s, {seconds / variants:.1f} s per variant; "
        f"statuses {sorted({r.status for r in results})}"
    )
    for label, auc in sorted(aucs.items()):
        print(f"  {label}: hold-out AUC {auc:.6f}" if isinstance(auc, float) else f"  {label}: {auc}")


if __name__ == "__main__":
    main()
