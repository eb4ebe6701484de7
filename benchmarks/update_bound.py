"""How `update-clip` treats honest banks, and what it leaves of a boosted one.

The real ServerApp logic drives the real ClientApp handlers in this process
(`fedcredit.deploy.inprocess`), default config (region split, 5 rounds):

1. Honest federations of 2 to 50 banks: how often, and how hard, an honest
   bank's update is scaled down (its distance from the global model above
   update-clip x the median of the others'), and the largest such ratio seen.
2. One bank boosting its update x10 and x1000 every round: hold-out AUC with
   the bound on against the honest run's.

    python benchmarks/update_bound.py [--banks 2 4 9 20 50] [--boosts 10 1000] [--clip 3.0]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, boosted_update, serverapp_identity
from fedcredit.federation import server
from fedcredit.federation.history import History


def holdout_auc(history: History) -> float:
    """The final global model's hold-out AUC (NaN when undefined)."""
    last = history.last_round()
    auc = last.holdout_auc if last is not None else None
    return float("nan") if auc is None else auc


def run(banks: int, clip: float, tamper=None) -> tuple[History, float]:
    with tempfile.TemporaryDirectory() as out:
        config = {"output-dir": out, "update-clip": clip}
        started = time.monotonic()
        history = server.run(InProcessGrid(config, banks, tamper), config, f"bound-{banks}", APP_DIR)
        return history, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--banks", nargs="+", type=int, default=[2, 4, 9, 20, 50])
    parser.add_argument("--boosts", nargs="+", type=float, default=[10.0, 1000.0])
    parser.add_argument("--boost-banks", nargs="+", type=int, default=[2, 4, 9])
    parser.add_argument("--clip", type=float, default=3.0)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    print(f"update-clip = {args.clip}; default config (region split, 5 rounds x 3 local epochs, seed 42)\n")
    print("| banks | honest updates | scaled down | smallest factor | hold-out AUC | seconds |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    honest_auc = {}
    with serverapp_identity():
        for n in args.banks:
            history, seconds = run(n, args.clip)
            rounds = [r for r in history.trained_rounds if r.train is not None]
            updates = sum(len(r.train.ok) for r in rounds)
            factors = [f for r in rounds for f in r.train.clipped.values()]
            honest_auc[n] = holdout_auc(history)
            print(
                f"| {n} | {updates} | {len(factors)} | {min(factors) if factors else 1.0:.3f} | "
                f"{honest_auc[n]:.4f} | {seconds:.0f} |",
                flush=True,
            )
        print("\n| banks | boost | hold-out AUC | honest run | difference | boosted bank's factor (max) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for n in args.boost_banks:
            if n not in honest_auc:
                honest_auc[n] = holdout_auc(run(n, args.clip)[0])
            for factor in args.boosts:
                history, _ = run(n, args.clip, boosted_update(factor))
                auc = holdout_auc(history)
                name = next(b for b, info in history.banks.items() if info.node_id == "11")
                applied = [r.train.clipped.get(name, 1.0) for r in history.trained_rounds if r.train is not None]
                print(
                    f"| {n} | x{factor:g} | {auc:.4f} | {honest_auc[n]:.4f} | {auc - honest_auc[n]:+.4f} | "
                    f"{max(applied):.3g} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
