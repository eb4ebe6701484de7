"""Does personalisation help each bank, and which fine-tuning settings should be the default?

For each split and seed, one federated run (default config, 5 rounds) through
the real ServerApp logic and ClientApp handlers in this process
(`fedcredit.deploy.inprocess`); then every bank personalises the final global
model with each candidate setting (`fedcredit.federation.client.personalise`,
exactly what the ClientApp runs), on its validation rows and, with the region
split, on the hold-out loans of its own region.

    python benchmarks/personalise.py [--seeds 42 1 2] [--epochs 1 3 10] [--layers head all]

Prints Markdown: per setting, how often the fine-tuned model beats the global
one and by how much; per bank for the default setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from fedcredit.core.config import parse_run_config
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import client, server
from fedcredit.federation.outputs import load_checkpoint

SPLITS = {
    "region, 4 banks": ({"partitioning": "region"}, 4),
    "dirichlet 0.3, 8 banks": ({"partitioning": "dirichlet", "dirichlet-alpha": 0.3}, 8),
}


def federate(extra: dict, banks: int, seed: int, out: str) -> tuple[dict, list[np.ndarray], str]:
    config = {**extra, "seed": seed, "output-dir": out, "personalize.epochs": 0}
    history = server.run(InProcessGrid(config, banks), config, f"p{seed}", APP_DIR)
    run_dir = Path(history.output_dir)
    weights = load_checkpoint(max(run_dir.glob("checkpoints/round-*.npz")))
    prep = json.loads((run_dir / "preprocessing.json").read_text())
    return config, weights, json.dumps(prep, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--epochs", nargs="+", type=int, default=[1, 3, 10])
    parser.add_argument("--layers", nargs="+", default=["head", "all"])
    parser.add_argument("--default", default="", help="setting to show per bank, e.g. '3 all' (default: the best)")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    settings = [(e, layer) for layer in args.layers for e in args.epochs]
    rows = []  # one per split, seed, setting, bank
    with serverapp_identity(), tempfile.TemporaryDirectory() as out:
        for split, (extra, banks) in SPLITS.items():
            for seed in args.seeds:
                config, weights, prep_json = federate(extra, banks, seed, out)
                for epochs, layers in settings:
                    cfg = dataclasses.replace(
                        parse_run_config(config), personalize_epochs=epochs, personalize_layers=layers
                    )
                    for pid in range(banks):
                        node = {"partition-id": pid, "num-partitions": banks}
                        kept, summaries = client.personalise(cfg, node, weights, prep_json)
                        row = {
                            "split": split,
                            "seed": seed,
                            "epochs": epochs,
                            "layers": layers,
                            "bank": pid,
                            "kept": kept,
                            **{f"val {c}": summaries[c]["auc"] for c in client.CANDIDATES},
                        }
                        row.update(
                            {
                                f"holdout {c}": summaries[f"holdout-{c}"]["auc"]
                                for c in client.CANDIDATES
                                if f"holdout-{c}" in summaries
                            }
                        )
                        rows.append(row)
                print(f"{split} seed {seed}: done", flush=True)
    import pandas as pd

    table = pd.DataFrame(rows)
    table["val gain"] = table["val personalised"] - table["val global"]
    has_holdout = "holdout global" in table
    if has_holdout:
        table["holdout gain"] = table["holdout personalised"] - table["holdout global"]
        kept_col = table.apply(lambda r: r.get(f"holdout {r['kept']}", np.nan), axis=1)
        table["holdout kept - global"] = kept_col - table["holdout global"]
    summary = (
        table.groupby(["split", "layers", "epochs"])
        .agg(
            banks=("bank", "size"),
            **{"personalised > global (val)": ("val gain", lambda s: f"{(s > 0).mean():.0%}")},
            **{"mean val gain": ("val gain", "mean")},
            **(
                {
                    "personalised > global (own hold-out)": (
                        "holdout gain",
                        lambda s: f"{(s.dropna() > 0).mean():.0%}",
                    ),
                    "mean own hold-out gain": ("holdout gain", "mean"),
                    "kept - global (own hold-out)": ("holdout kept - global", "mean"),
                }
                if has_holdout
                else {}
            ),
            **{
                "kept: global/pers./local": ("kept", lambda s: "/".join(str((s == c).sum()) for c in client.CANDIDATES))
            },
        )
        .reset_index()
    )
    print("\n## Per setting (mean over banks and seeds)\n")
    print(summary.round(4).to_markdown(index=False))
    if args.default:
        epochs, layers = args.default.split()
        default = (int(epochs), layers)
    else:
        best = table.groupby(["epochs", "layers"])["val gain"].mean().idxmax()
        default = (int(best[0]), best[1])
    print(f"\n## Per bank, setting {default[0]} epoch(s), layers {default[1]} (validation / own-region hold-out AUC)\n")
    per_bank = table[(table["epochs"] == default[0]) & (table["layers"] == default[1])]
    cols = ["split", "seed", "bank", "kept"] + [
        c for c in per_bank.columns if c.startswith(("val ", "holdout ")) and "gain" not in c and "kept" not in c
    ]
    print(per_bank[cols].round(4).to_markdown(index=False))


if __name__ == "__main__":
    main()
