"""`fedcredit compare`: several strategies (and seeds, and DP noise levels) through the real Flower engine.

Every variant runs as its own `flwr run` on one private local SuperLink, on
the same partitions for the same seed, and the table compares what a
consortium would look at: pooled validation AUC and KS, hold-out AUC,
rounds, wall time, and epsilon when differential privacy is on. Writes
comparison.md, comparison.csv and comparison.png (AUC per round).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from fedcredit.core.config import STRATEGY_PARAMS, ConfigError, parse_run_config
from fedcredit.deploy.localrun import LocalFlower


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategies", nargs="+", default=["fedavg", "fedprox", "fedadam", "fedavgm"],
                        help=f"strategy names: {' '.join(STRATEGY_PARAMS)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--privacy", default="none", help="privacy.mode for every run (e.g. server-fixed)")
    parser.add_argument("--noise", nargs="+", type=float, default=[],
                        help="privacy.noise-multiplier values to compare (with --privacy)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra run-config values for every run, TOML syntax (e.g. num-server-rounds=10)")
    parser.add_argument("--federation-config", default="num-supernodes=4",
                        help="Flower simulation size (the default split needs 4 or 9 banks)")
    parser.add_argument("--out", required=True, help="directory for the runs and the comparison files")


def _parse_set(items: list[str]) -> dict[str, Any]:
    from flwr.common.config import parse_config_args

    return parse_config_args([" ".join(items)]) if items else {}


def variants(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(label, run config) for every strategy x noise level, checked before anything runs."""
    if args.noise and args.privacy == "none":
        raise ConfigError("--noise needs --privacy (e.g. --privacy server-fixed): without it every noise level "
                          "would be the same run")
    extra = _parse_set(args.set)
    out = []
    for name in args.strategies:
        for noise in args.noise or [None]:
            config = {**extra, "strategy.name": name}
            label = name
            if args.privacy != "none":
                config["privacy.mode"] = args.privacy
                label = f"{name} {args.privacy}"
                if noise is not None:
                    config["privacy.noise-multiplier"] = noise
                    label = f"{name} {args.privacy} z={noise:g}"
            parse_run_config(config)  # a typo fails now, not after an hour of runs
            out.append((label, config))
    return out


def summarise_run(run_dir: Path) -> dict[str, Any]:
    history = json.loads((run_dir / "history.json").read_text())
    rounds = [r for r in history["rounds"] if r["round"] > 0]
    last = rounds[-1]
    pooled = (last.get("evaluate") or {}).get("pooled") or {}
    return {
        "pooled val AUC": pooled.get("auc"), "pooled val KS": pooled.get("ks"),
        "hold-out AUC": (last.get("holdout") or {}).get("auc"), "rounds": len(rounds),
        "strategy s": history.get("seconds"),
        "epsilon": (history.get("privacy") or {}).get("epsilon"),
        "auc per round": [((r.get("evaluate") or {}).get("pooled") or {}).get("auc") for r in rounds],
        "hold-out per round": [(r.get("holdout") or {}).get("auc") for r in rounds],
    }


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = plt.get_cmap("tab10")
    for i, (label, rows) in enumerate(table.groupby("variant", sort=False)):
        for ax, column in zip(axes, ("auc per round", "hold-out per round")):
            curves = [c for c in rows[column] if isinstance(c, list) and c and all(v is not None for v in c)]
            if not curves:
                continue
            for curve in curves:
                ax.plot(range(1, len(curve) + 1), curve, color=colours(i % 10), alpha=0.25, linewidth=1)
            mean = pd.DataFrame(curves).mean()
            ax.plot(range(1, len(mean) + 1), mean, color=colours(i % 10), linewidth=2, marker="o", label=label)
    axes[0].set_title("Pooled validation AUC per round")
    axes[1].set_title("Hold-out AUC per round")
    for ax in axes:
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ROC AUC")
    fig.suptitle("thick lines: mean over seeds; thin lines: each seed", fontsize=9, y=0.995)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    try:
        todo = variants(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = []
    with LocalFlower(out / "flwr") as flower:
        for label, config in todo:
            for seed in args.seeds:
                run_out = out / "runs" / label.replace(" ", "_").replace("=", "") / f"seed{seed}"
                result = flower.run({**config, "seed": seed, "output-dir": str(run_out)}, args.federation_config)
                row: dict[str, Any] = {"variant": label, "seed": seed, "status": result.status,
                                       "flwr run s": round(result.seconds, 1)}
                if result.completed:
                    row.update(summarise_run(max(run_out.iterdir(), key=lambda p: p.stat().st_mtime)))
                else:
                    row["error"] = result.details
                rows.append(row)
                print(f"{label} seed {seed}: {result.status} "
                      f"hold-out AUC {row.get('hold-out AUC')} pooled val AUC {row.get('pooled val AUC')}", flush=True)
    table = pd.DataFrame(rows)
    columns = [c for c in ("variant", "seed", "status", "pooled val AUC", "pooled val KS", "hold-out AUC",
                           "rounds", "epsilon", "flwr run s", "strategy s") if c in table]
    table[columns].to_csv(out / "comparison.csv", index=False)
    numeric = [c for c in ("pooled val AUC", "pooled val KS", "hold-out AUC", "epsilon", "flwr run s", "strategy s")
               if c in table]
    means = table.groupby("variant", sort=False)[numeric].mean().round(4).reset_index()
    (out / "comparison.md").write_text(
        "# Strategy comparison\n\nEach run: its own `flwr run` of the app, "
        f"federation `{args.federation_config}`, seeds {args.seeds}.\n\n## Per run\n\n"
        + table[columns].round(4).to_markdown(index=False) + "\n\n## Mean over seeds\n\n"
        + means.to_markdown(index=False) + "\n")
    if "auc per round" in table:
        plot(table, out / "comparison.png")
    print(means.to_string(index=False))
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.csv'}, {out / 'comparison.png'}")
    return 0 if (table["status"] == "finished:completed").all() else 1
