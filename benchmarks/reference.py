"""Federated vs pooled, on the same split and hold-out set, in one script.

Runs the real app (`flwr run`, private local SuperLink, default run config
unless overridden) and then trains the same Keras architecture on all banks'
training rows pooled (which the law forbids in practice), for the same number
of epochs (rounds x local epochs), and scores both on the same hold-out set.

    python benchmarks/reference.py                      # default federation (4 region banks)
    python benchmarks/reference.py --seeds 42 1 2 --federation-config "num-supernodes=4"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from fedcredit.core.banks import holdout_set, load_bank
from fedcredit.core.config import app_defaults, parse_run_config
from fedcredit.deploy.localrun import APP_DIR, LocalFlower
from fedcredit.federation.history import read_history
from fedcredit.risk.baseline import holdout_metrics, holdout_scores, train_alone


def pooled_auc(cfg, num_banks: int) -> float:
    """Same architecture on all banks' training rows pooled, same epochs, same hold-out set."""
    banks = [load_bank(cfg, {"partition-id": i, "num-partitions": num_banks}) for i in range(num_banks)]
    train = pd.concat([b.train for b in banks], ignore_index=True)
    model = train_alone(cfg, train, cfg.num_server_rounds * cfg.local_epochs)
    test = holdout_set(cfg)
    return holdout_metrics(holdout_scores(model, test), test, cfg)["auc"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--federation-config", default="num-supernodes=4")
    ap.add_argument("--out", default="/tmp/fedcredit-reference")
    args = ap.parse_args()
    num_banks = int(dict(kv.split("=") for kv in args.federation_config.split())["num-supernodes"])
    defaults = app_defaults(APP_DIR)
    rows = []
    with LocalFlower() as flower:
        for seed in args.seeds:
            out = Path(args.out) / f"seed{seed}"
            run_config = {"seed": seed, "output-dir": str(out)}
            result = flower.run(run_config, args.federation_config)
            if not result.completed:
                print(result.logs[-3000:], file=sys.stderr)
                raise SystemExit(f"run failed: {result.status} {result.details}")
            run_dir = max(out.iterdir(), key=lambda p: p.stat().st_mtime)
            history = read_history(run_dir / "history.json")
            last = history.last_round()
            t = time.monotonic()
            pooled = pooled_auc(parse_run_config({**defaults, **run_config}), num_banks)
            rows.append(
                {
                    "seed": seed,
                    "federated hold-out AUC": last.holdout_auc,
                    "pooled (centralised) hold-out AUC": pooled,
                    "federated pooled val AUC": last.pooled_auc,
                    "flwr run wall s": round(result.seconds, 1),
                    "strategy s": history.seconds,
                    "pooled training s": round(time.monotonic() - t, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    print(table.round(4).to_string(index=False))
    print("mean:", table.drop(columns="seed").mean().round(4).to_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
