"""Seconds per round against the number of virtual banks, and where the coordinator's time goes.

Sweep (default): one `flwr run` of the real app per bank count on a private local
SuperLink (`num-supernodes=N client-resources-num-cpus=1`, Ray's default local
cluster, or the cluster `RAY_ADDRESS` names), seconds per round read from each
run's history.json, the 1-minute load beside each figure, and a straight-line
fit `seconds per round = a + b x banks` (b: cost per bank per round).

    python benchmarks/bank_count.py --banks 10 50 200 --data taiwan --rounds 1

`--profile N`: the same run logic in one process (`fedcredit.deploy.inprocess`:
the ServerApp's code against the ClientApp handlers, no Ray), with timing spans
around the coordinator's areas; each span's time excludes the spans nested in it,
and the banks' handlers are their own span, so "coordinator, other" is the rest.

    python benchmarks/bank_count.py --profile 500 --data taiwan
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fedcredit.deploy.localrun import LocalFlower
from fedcredit.federation.history import read_history

DATA = {
    "lending": {},  # the embedded LendingClub set (the default)
    "taiwan": {"data-path": "builtin:taiwan_credit_card", "schema-path": "fedcredit/data/taiwan_credit_card.toml"},
}


def run_config(args: argparse.Namespace, out: str) -> dict[str, Any]:
    """A short run: few rounds, one local epoch, no personalisation, the split asked for."""
    return {
        **DATA[args.data],
        "num-server-rounds": args.rounds,
        "local-epochs": 1,
        "personalize.epochs": 0,
        "partitioning": args.partitioning,
        "test-fraction": args.test_fraction,
        "output-dir": out,
    }


def sweep(args: argparse.Namespace) -> None:
    rows: list[tuple[int, float]] = []
    print("| banks | data | split | status | s/round (rounds 1..R) | flwr run s | load 1 min before / after |")
    print("| ---: | --- | --- | --- | --- | ---: | --- |")
    with tempfile.TemporaryDirectory() as tmp, LocalFlower(Path(tmp) / "flwr") as flower:
        for n in args.banks:
            out = Path(tmp) / f"out{n}"
            before = os.getloadavg()[0]
            result = flower.run(
                run_config(args, str(out)), f"num-supernodes={n} client-resources-num-cpus=1", timeout=7200
            )
            after = os.getloadavg()[0]
            per_round = "n/a"
            if result.completed:
                history = read_history(next(out.iterdir()) / "history.json")
                seconds = [r.seconds for r in history.rounds[1:] if r.seconds is not None]
                per_round = ", ".join(f"{s:.1f}" for s in seconds)
                rows.append((n, float(np.mean(seconds))))
            status = result.status if result.completed else f"{result.status}: {result.details[:80]}"
            print(
                f"| {n} | {args.data} | {args.partitioning} | {status} | {per_round} | {result.seconds:.1f} "
                f"| {before:.1f} / {after:.1f} |",
                flush=True,
            )
    if len(rows) >= 2:
        slope, intercept = np.polyfit([n for n, _ in rows], [s for _, s in rows], 1)
        print(f"fit: seconds per round = {intercept:.2f} + {slope:.3f} x banks ({len(rows)} points)")


class Spans:
    """Exclusive wall time per area: a span's time minus the spans running inside it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[float]] = []  # per open span: [start, time of nested spans]

    def wrap(self, area: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **kw: Any) -> Any:
            self._stack.append([time.perf_counter(), 0.0])
            try:
                return fn(*a, **kw)
            finally:
                start, nested = self._stack.pop()
                spent = time.perf_counter() - start
                self.seconds[area] += spent - nested
                self.calls[area] += 1
                if self._stack:
                    self._stack[-1][1] += spent

        return timed


def _patch_everywhere(spans: Spans, area: str, owner: Any, name: str) -> Iterator[tuple[Any, str, Any]]:
    """Wrap `owner.name` and every fedcredit module's imported copy of it; yield what to restore."""
    original = getattr(owner, name)
    timed = spans.wrap(area, original)
    targets = [owner] + [
        m
        for key, m in list(sys.modules.items())
        if key.startswith("fedcredit") and m is not owner and getattr(m, name, None) is original
    ]
    for target in targets:
        yield target, name, original
        setattr(target, name, timed)


def profile(args: argparse.Namespace) -> None:
    from fedcredit.core import stats
    from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
    from fedcredit.federation import outputs, protocol, rounds, server, tracking

    spans = Spans()
    areas: list[tuple[str, Any, str]] = [("statistics merge", stats, "merge_stats")]
    areas += [("reply checks", protocol, n) for n in dir(protocol) if n.startswith("read_")]
    areas += [("reply checks", tracking.TrackingGrid, "_check")]
    areas += [("aggregation", rounds.RecordsAggregation, n) for n in ("aggregate_train", "aggregate_evaluate")]
    areas += [("history writes", rounds, "save_history"), ("history writes", outputs, "write_scalars")]
    areas += [("history writes", outputs.RunOutputs, n) for n in ("save_json", "save_model", "save_checkpoint")]
    with tempfile.TemporaryDirectory() as out:
        config = run_config(args, out)
        grid = InProcessGrid(config, args.profile)
        restore = [r for area, owner, name in areas for r in _patch_everywhere(spans, area, owner, name)]
        grid.app = spans.wrap("banks' ClientApp handlers (in process)", grid.app)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        try:
            with serverapp_identity():
                server.run(grid, config, f"profile-{args.profile}", APP_DIR)
        finally:
            total = time.perf_counter() - started
            for target, name, original in reversed(restore):
                setattr(target, name, original)
    own = total - sum(spans.seconds.values())
    print(f"{args.profile} banks, {args.data}, {args.partitioning}, {args.rounds} round(s), load {load:.1f}:")
    print("| area | seconds (exclusive) | calls |")
    print("| --- | ---: | ---: |")
    for area, seconds in sorted(spans.seconds.items(), key=lambda kv: -kv[1]):
        print(f"| {area} | {seconds:.2f} | {spans.calls[area]} |")
    print(f"| coordinator, other (model evaluation on the hold-out set, Flower, logging) | {own:.2f} | |")
    print(f"| total | {total:.2f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--banks", nargs="+", type=int, default=[10, 50, 200, 500])
    parser.add_argument("--data", choices=sorted(DATA), default="lending")
    parser.add_argument("--partitioning", choices=["iid", "dirichlet"], default="iid")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--profile", type=int, metavar="N", help="profile the coordinator at N banks (in process)")
    args = parser.parse_args()
    if args.profile:
        profile(args)
    else:
        sweep(args)


if __name__ == "__main__":
    main()
