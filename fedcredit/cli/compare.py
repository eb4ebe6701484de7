"""`fedcredit compare --out DIR`: the command line of `fedcredit.deploy.compare`.

Exit code 0 when every run completed, 1 when some did not (the table says
which and why), 2 when a variant's run config is wrong (nothing ran).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fedcredit.core.config import STRATEGY_PARAMS, ConfigError
from fedcredit.deploy import compare

EXAMPLE = "fedcredit compare --strategies fedavg fedprox --seeds 42 1 --out comparison"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["fedavg", "fedprox", "fedadam", "fedavgm"],
        help=f"strategy names: {' '.join(STRATEGY_PARAMS)}",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[42], help="one run per seed for each variant")
    parser.add_argument("--privacy", default="none", help="privacy.mode for every run, e.g. server-fixed")
    parser.add_argument(
        "--noise",
        nargs="+",
        type=float,
        default=[],
        help="privacy.noise-multiplier values to compare, with --privacy (default: the run config's one value)",
    )
    parser.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        metavar="FEATURES",
        help="excluded-features values to compare, '' for all features, a+b to drop two (less discriminatory alternatives)",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra run-config values for every run, TOML syntax, e.g. num-server-rounds=10",
    )
    parser.add_argument(
        "--federation-config",
        default="num-supernodes=4 client-resources-num-cpus=1",
        help="Flower simulation size and resources; one CPU per simulated bank runs two at once on two cores",
    )
    parser.add_argument("--out", required=True, help="directory for the runs and the comparison files")


def parse_set(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE ... in the TOML syntax of `flwr run --run-config`, parsed by Flower itself."""
    import click
    from flwr.common.config import parse_config_args

    try:
        return parse_config_args([" ".join(items)]) if items else {}
    except click.ClickException as err:
        raise ConfigError(
            f"--set {' '.join(items)}: {err.format_message()} (text values need TOML quotes: "
            "--set 'strategy.name=\"fedprox\"')"
        ) from None


# Neither changes a compared figure, both save time (--set overrides them): personalisation runs after the
# last round (off), and folded evaluation gives the same figures with one message per bank per round.
COMPARE_DEFAULTS = {"personalize.epochs": 0, "evaluation": "folded"}


def common_config(args: argparse.Namespace) -> dict[str, Any]:
    """Run-config values every variant shares: compare's defaults, then --set."""
    return {**COMPARE_DEFAULTS, **parse_set(args.set)}


def plan(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """The variants the arguments ask for; ConfigError before any run when one is wrong."""
    return compare.variants(args.strategies, args.privacy, args.noise, common_config(args), args.exclude)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    try:
        todo = plan(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = compare.run_all(
        todo, args.seeds, args.federation_config, out, lambda line: print(line, flush=True), common_config(args)
    )
    means = compare.write(table, out, args.federation_config, args.seeds)
    print(means.to_string(index=False))
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.csv'}, {out / 'comparison.png'}")
    complete = len(table) == len(todo) * len(args.seeds) and (table["status"] == compare.COMPLETED).all()
    return 0 if complete else 1
