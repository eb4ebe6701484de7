"""What does borrower-level DP (privacy.dp-sgd = true) cost in hold-out AUC, and in training time?

For each seed, the default federation (Flower's default 2 banks, region
split, 5 rounds x 3 local epochs, batch size 64; personalisation off, which
dp-sgd requires) runs through the real ServerApp logic and ClientApp handlers
in this process (`fedcredit.deploy.inprocess`): once without DP, then once per
target epsilon with the noise multiplier that reaches it after the last round
at the bank that spends most (the smaller one), found by bisection on
`fedcredit.federation.accounting.bank_epsilon` (dp-accounting RDP) with the
banks' row counts of the run without DP. The clipping norm is the default 1.0,
or each of `--clipping-norms` in turn (to tune it: the norm does not enter epsilon).
`--data taiwan` runs the embedded Taiwan set instead (30,000 rows, `--banks`
banks, iid split, threshold 0.3), a split with about four times the rows per bank.

    python benchmarks/dp_sgd.py [--seeds 42 1 2] [--epsilons 1 3 8] [--clipping-norms 1.0]
    python benchmarks/dp_sgd.py --data taiwan --banks 4

Prints Markdown: per variant the noise multiplier, the epsilon the run
recorded (history.json `privacy`), hold-out AUC per seed and their mean, and
the mean seconds per round (each round's own wall time, training and aggregation, on this machine);
then a calibration table from the same runs' last-round hold-out figures: mean PD against the
observed default rate, Brier score, and the share of loans declined at `threshold`.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from typing import Any

import numpy as np

from fedcredit.core.config import parse_run_config
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import accounting, server

BASE = {"personalize.epochs": 0}
DATA = {
    "lending_club": {},
    "taiwan": {
        "data-path": "builtin:taiwan_credit_card",
        "schema-path": "fedcredit/data/taiwan_credit_card.toml",
        "partitioning": "iid",
        "threshold": 0.3,
    },
}


def noise_for(epsilon: float, rows: dict[str, int], base: dict[str, Any]) -> float:
    """The noise multiplier whose largest epsilon over the banks after the run's rounds is `epsilon`."""
    low, high = 0.3, 50.0
    for _ in range(40):
        mid = (low + high) / 2
        cfg = parse_run_config({**base, "privacy.dp-sgd": True, "privacy.example-noise-multiplier": mid})
        spent = max(accounting.bank_epsilon(cfg, n, cfg.num_server_rounds) for n in rows.values())
        low, high = (mid, high) if spent > epsilon else (low, mid)
    return round(high, 4)


def run(config: dict[str, Any], name: str, banks: int, out: str) -> tuple[float, float | None, float, dict]:
    """(hold-out AUC, recorded epsilon, seconds per round, last hold-out figures) of one in-process run."""
    history = server.run(InProcessGrid({**config, "output-dir": out}, banks), config, name, APP_DIR)
    holdout = history.rounds[-1].holdout
    return holdout["auc"], (history.privacy or {}).get("epsilon"), seconds_per_round(history), holdout


def declined_share(holdout: dict) -> float:
    """Share of hold-out loans scored at or above the threshold: (tp + fp) / n from recall and precision."""
    true_positive_share = holdout["recall"] * holdout["default-rate"]
    return true_positive_share / holdout["precision"] if holdout["precision"] else 0.0


def seconds_per_round(history: Any) -> float:
    """The mean of the rounds' own seconds (training and aggregation, `RoundEntry.seconds`)."""
    return float(np.mean([r.seconds for r in history.rounds if r.round > 0 and r.seconds is not None]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 3.0, 8.0])
    parser.add_argument("--banks", type=int, default=2, help="simulated banks (Flower's default federation: 2)")
    parser.add_argument("--data", choices=sorted(DATA), default="lending_club")
    parser.add_argument("--clipping-norms", nargs="+", type=float, default=[1.0], help="privacy.example-clipping-norm")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    results: dict[str, dict[str, list]] = {}
    noise: dict[str, list[float]] = {"no DP": []}  # per seed: the banks' rows, so the multiplier, differ
    with serverapp_identity(), tempfile.TemporaryDirectory() as out:
        for seed in args.seeds:
            config = {**BASE, **DATA[args.data], "seed": seed}
            history = server.run(
                InProcessGrid({**config, "output-dir": out}, args.banks), config, f"none-{seed}", APP_DIR
            )
            rows = {name: bank.training_rows for name, bank in history.banks.items()}
            holdout = history.rounds[-1].holdout
            plain = (holdout["auc"], None, seconds_per_round(history), holdout)
            results.setdefault("no DP", {}).setdefault("runs", []).append(plain)
            for eps in args.epsilons:
                sigma = noise_for(eps, rows, config)
                for clip in args.clipping_norms:
                    label = f"epsilon {eps:g}" + (f", clipping {clip:g}" if len(args.clipping_norms) > 1 else "")
                    noise.setdefault(label, []).append(sigma)
                    dp = {
                        **config,
                        "privacy.dp-sgd": True,
                        "privacy.example-noise-multiplier": sigma,
                        "privacy.example-clipping-norm": clip,
                    }
                    entry = results.setdefault(label, {}).setdefault("runs", [])
                    entry.append(run(dp, f"{label}-{seed}".replace(" ", "").replace(",", "-"), args.banks, out))
                    print(f"seed {seed} {label}: noise {sigma}, {entry[-1][:3]}", flush=True)
    seeds = " | ".join(f"seed {s}" for s in args.seeds)
    print(
        f"\n| variant | noise multiplier (mean over seeds) | recorded epsilon | {seeds} | mean AUC | seconds per round |"
    )
    print("| --- | ---: | ---: |" + " ---: |" * len(args.seeds) + " ---: | ---: |")
    for label, entry in results.items():
        runs = entry["runs"]
        aucs = " | ".join(f"{run[0]:.4f}" for run in runs)
        eps = runs[0][1]
        sigma = noise[label]
        print(
            f"| {label} | {f'{np.mean(sigma):.4f}' if sigma else '-'} | {'-' if eps is None else f'{eps:.3f}'} | {aucs} | "
            f"{np.mean([run[0] for run in runs]):.4f} | {np.mean([run[2] for run in runs]):.1f} |"
        )
    rows = results["no DP"]["runs"][0][3]["num-examples"]
    print(f"\nCalibration on the hold-out ({rows} rows), mean over seeds, last round:\n")
    print("| variant | mean PD | default rate | Brier | log loss | declined at threshold |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, entry in results.items():
        held = [run[3] for run in entry["runs"]]
        mean = {k: np.mean([h[k] for h in held]) for k in ("mean-pd", "default-rate", "brier", "logloss")}
        print(
            f"| {label} | {mean['mean-pd']:.4f} | {mean['default-rate']:.4f} | {mean['brier']:.4f} | "
            f"{mean['logloss']:.4f} | {np.mean([declined_share(h) for h in held]):.1%} |"
        )


if __name__ == "__main__":
    main()
