"""What do the monotone constraints cost in hold-out AUC, and does the trained model hold them?

For each seed, the default federation (Flower's default 2 banks, region split,
5 rounds x 3 local epochs; personalisation off, it changes no global figure)
runs through the real ServerApp logic and ClientApp handlers in this process
(`fedcredit.deploy.inprocess`), once per variant:

* `unconstrained`: `monotone-constraints = false` (the plain MLP, one-hot categories);
* `orders only`: the built-in schema's orders, no direction;
* `issue`: directions only for int_rate, sub_grade, inq_last_6mths (increasing) and annual_inc (decreasing);
* `built-in`: the built-in schema as shipped (every direction of its [monotone] table).

A variant other than the last runs on a copy of the built-in schema whose
[monotone] table keeps only its features. Then the monotonicity check
(`fedcredit.risk.monotone.check_monotone`) of each variant's final model
against the built-in schema's constraints, on the first `--check-rows` hold-out
loans and the typical row.

    python benchmarks/monotone.py [--seeds 42 1 2] [--variants unconstrained built-in] [--banks 2]

Prints Markdown: hold-out AUC per variant and seed, the mean and the mean
difference to the unconstrained model; the check's table for the first seed.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fedcredit.core import model as mdl
from fedcredit.core.banks import holdout_set
from fedcredit.core.config import parse_run_config
from fedcredit.core.schema import BUILTIN_SCHEMA_FILE, LENDING_CLUB
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import server
from fedcredit.risk import monotone

ISSUE = ("int_rate", "sub_grade", "inq_last_6mths", "annual_inc")
# variant -> (run-config overrides, the [monotone] features kept; None: the built-in schema unchanged)
VARIANTS: dict[str, tuple[dict[str, Any], tuple[str, ...] | None]] = {
    "unconstrained": ({"monotone-constraints": False}, None),
    "orders only": ({}, ()),
    "issue": ({}, ISSUE),
    "built-in": ({}, None),
}


def schema_keeping(features: tuple[str, ...], directory: Path) -> str:
    """A copy of the built-in schema whose [monotone] table keeps only `features`; returns its path."""
    lines, inside = [], False
    for line in BUILTIN_SCHEMA_FILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            inside = line.strip() == "[monotone]"
        if inside and "=" in line and line.split("=")[0].strip() not in features:
            continue
        lines.append(line)
    path = directory / f"schema-{len(features)}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--banks", type=int, default=2, help="simulated banks (Flower's default federation: 2)")
    parser.add_argument("--check-rows", type=int, default=500)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    auc: dict[str, list[float]] = {}
    checks = {}
    with serverapp_identity(), tempfile.TemporaryDirectory() as out:
        for name in args.variants:
            overrides, keep = VARIANTS[name]
            if keep is not None:
                overrides = {**overrides, "schema-path": schema_keeping(keep, Path(out))}
            for seed in args.seeds:
                config = {"seed": seed, "output-dir": out, "personalize.epochs": 0, **overrides}
                history = server.run(InProcessGrid(config, args.banks), config, f"{name}-{seed}", APP_DIR)
                auc.setdefault(name, []).append(history.rounds[-1].holdout["auc"])
                if seed == args.seeds[0]:
                    rows = holdout_set(parse_run_config(config))[list(LENDING_CLUB.features)].head(args.check_rows)
                    model = mdl.load(Path(history.output_dir) / "model-final.keras")
                    checks[name] = monotone.check_monotone(model, rows, LENDING_CLUB)
    print(f"| variant | {' | '.join(f'seed {s}' for s in args.seeds)} | mean | vs unconstrained |")
    print(f"| --- | {' | '.join('---:' for _ in args.seeds)} | ---: | ---: |")
    base = auc.get("unconstrained")
    for name, values in auc.items():
        diff = f"{np.mean(np.subtract(values, base)):+.4f}" if base is not None else ""
        cells = " | ".join(f"{v:.4f}" for v in values)
        print(f"| {name} | {cells} | {np.mean(values):.4f} | {diff} |")
    for name, table in checks.items():
        verdict = monotone.summary(table)
        print(
            f"\nMonotonicity check, {name}, seed {args.seeds[0]}: {verdict['held']} of {verdict['constraints']} "
            f"constraints held on every row; largest violation {verdict['largest_violation']:.2g}\n"
        )
        print("| feature | direction | grid points | rows checked | violations | largest violation |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for r in table.itertuples(index=False):
            print(
                f"| {r.feature} | {r.direction} | {r.grid_points} | {r.rows_checked} | {r.violations} | "
                f"{r.largest_violation:.2g} |"
            )


if __name__ == "__main__":
    main()
