"""What k colluding banks of N can do to the global model, under the default and the robust strategies.

The real ServerApp logic (`fedcredit.federation.server.run`) drives the real
ClientApp handlers in this process (`fedcredit.deploy.inprocess`); the
replies of the first k banks (node ids 11, 12, ...) are rewritten on their
way back, every round, as colluding banks would send them:

- `sign-flip`: each sends its update with the sign flipped and scaled,
  w = g - F * (w_own - g)   (g: the incoming global weights, F: --factor, 10)
- `boost`:     each sends its update scaled, w = g + F * (w_own - g)

Config: the default run config (`RunConfig().to_flower()`: region split,
5 rounds x 3 local epochs, seed 42, update-clip 2.0 for the averaging
strategies) with personalisation off and a temporary output directory.
Krum, multi-Krum and Bulyan are told f = max(k, 1) hostile banks
(`strategy.num-malicious-nodes`; `--num-malicious` to fix it); multi-Krum averages the N - f updates it
selects (`--multikrum-select` to change); a strategy the federation is too
small for (Krum 2f+3 banks, Bulyan 4f+3) is "n/a". FedTrimmedAvg cuts
int(trim-beta x N) updates at each end: none with 4 banks at the default 0.2.

Per run: the final model's hold-out AUC; its cost (AUC lost) against the honest
run of the same N and strategy and against honest FedAvg of the same N; what
history.json recorded (colluders' updates scaled down by update-clip, honest
banks' scaled, replies refused); wall and CPU seconds. k = 0 rows are the honest
runs, whose cost against FedAvg is what the strategy costs an honest federation.

    python benchmarks/collusion.py                                # all cells, sign-flip
    python benchmarks/collusion.py --banks 4 9 --colluders 0 2 --strategies fedavg fedmedian
    python benchmarks/collusion.py --attack boost --strategies fedavg
    python benchmarks/collusion.py --rounds 3 --results runs.jsonl   # cache: reruns only what is missing

Run it from the checkout to measure with that checkout first on the path
(`PYTHONPATH=. python benchmarks/collusion.py`): the header names the
fedcredit package it imported.

`--results FILE` keeps one JSON line per run and reuses a line whose settings
match, so a grid can be run in parts (e.g. the boost rows reuse the honest rows).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import fedcredit
from fedcredit.core.config import ConfigError, RunConfig, parse_run_config
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, Tamper, boosted_update, serverapp_identity
from fedcredit.federation import server
from fedcredit.federation.errors import FederationError
from fedcredit.federation.history import History
from fedcredit.federation.strategies import check_against_banks

STRATEGIES = ("fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")
KRUM_FAMILY = ("krum", "multikrum", "bulyan")
ATTACKS = ("sign-flip", "boost")


def attack_tamper(attack: str, factor: float) -> Tamper:
    return boosted_update(-factor if attack == "sign-flip" else factor)


def run_config(args: argparse.Namespace, banks: int, colluders: int, strategy: str, out: str) -> dict[str, Any]:
    config = RunConfig().to_flower()
    config.update(
        {
            "output-dir": out,
            "personalize.epochs": 0,
            "strategy.name": strategy,
            "num-server-rounds": args.rounds,
            "local-epochs": args.local_epochs,
            "partitioning": args.partitioning,
            "seed": args.seed,
            "update-direction": args.update_direction,
        }
    )
    if strategy in KRUM_FAMILY:
        f = args.num_malicious if args.num_malicious >= 0 else max(colluders, 1)
        config["strategy.num-malicious-nodes"] = f
        if strategy == "multikrum":
            config["strategy.num-nodes-to-select"] = args.multikrum_select or max(banks - f, 1)
    return config


def settings(args: argparse.Namespace, banks: int, colluders: int, strategy: str, attack: str) -> dict[str, Any]:
    """What identifies one run in the results cache."""
    return {
        "banks": banks,
        "colluders": colluders,
        "strategy": strategy,
        "attack": attack if colluders else "none",
        "factor": args.factor if colluders else None,
        "rounds": args.rounds,
        "local-epochs": args.local_epochs,
        "partitioning": args.partitioning,
        "seed": args.seed,
        "multikrum-select": args.multikrum_select if strategy == "multikrum" else None,
        "num-malicious": args.num_malicious if strategy in KRUM_FAMILY and args.num_malicious >= 0 else None,
        "update-direction": args.update_direction,
    }


def summarise(history: History, colluder_ids: set[int]) -> dict[str, Any]:
    """Hold-out AUC and what the history recorded about the colluders and the honest banks."""
    colluders = {name for name, info in history.banks.items() if info.node_id in {str(n) for n in colluder_ids}}
    trained = [r for r in history.trained_rounds if r.train is not None]
    clipped_c = [f for r in trained for b, f in r.train.clipped.items() if b in colluders]
    clipped_h = [f for r in trained for b, f in r.train.clipped.items() if b not in colluders]
    refused = sum(len(r.train.refused) for r in trained) + sum(
        len(r.evaluate.refused) for r in history.rounds if r.evaluate is not None
    )
    last = history.last_round()
    auc = last.holdout_auc if last is not None else None
    return {
        "status": history.status,
        "auc": float("nan") if auc is None else auc,
        "trained-rounds": len(trained),
        "colluder-updates": len(colluders) * len(trained),
        "colluders-scaled": len(clipped_c),
        "colluder-factor-max": max(clipped_c) if clipped_c else None,
        "colluder-factor-min": min(clipped_c) if clipped_c else None,
        "honest-scaled": len(clipped_h),
        "honest-factor-min": min(clipped_h) if clipped_h else None,
        "refused": refused,
        "colluders-suspicious": sum(b in colluders for r in trained for b in r.train.suspicious),
        "honest-suspicious": sum(b not in colluders for r in trained for b in r.train.suspicious),
        "other-extra": sorted({k for r in trained for k in r.train.extra}),
    }


def one_run(args: argparse.Namespace, banks: int, colluders: int, strategy: str, attack: str) -> dict[str, Any]:
    result: dict[str, Any] = settings(args, banks, colluders, strategy, attack)
    with tempfile.TemporaryDirectory() as out:
        config = run_config(args, banks, colluders, strategy, out)
        try:
            check_against_banks(parse_run_config(config), banks)
        except ConfigError as e:
            return {**result, "status": "n/a", "reason": str(e).split(":")[0]}
        ids = set(range(11, 11 + colluders))
        tamper = attack_tamper(attack, args.factor) if colluders else None
        wall, cpu = time.monotonic(), time.process_time()
        try:
            history = server.run(
                InProcessGrid(config, banks, tamper, hostile=ids), config, f"collude-{banks}-{colluders}", APP_DIR
            )
        except FederationError as err:  # e.g. no round trained: the run released no model
            return {**result, "status": "failed", "reason": str(err).split(":")[0], "seconds": time.monotonic() - wall}
        result.update(seconds=time.monotonic() - wall, cpu_seconds=time.process_time() - cpu)
        result.update(summarise(history, ids))
    return result


def recorded(r: dict[str, Any]) -> str:
    parts = []
    if r["colluders-scaled"]:
        lo, hi = r["colluder-factor-min"], r["colluder-factor-max"]
        span = f"x{lo:.2g}" if f"{lo:.2g}" == f"{hi:.2g}" else f"x{lo:.2g}..{hi:.2g}"
        parts.append(f"colluders scaled {r['colluders-scaled']}/{r['colluder-updates']} ({span})")
    elif r["colluders"]:
        parts.append("colluders: nothing")
    if r["honest-scaled"]:
        parts.append(f"honest scaled {r['honest-scaled']} (min x{r['honest-factor-min']:.2g})")
    if r.get("colluders-suspicious") or r.get("honest-suspicious"):
        parts.append(f"pointing away: colluders {r['colluders-suspicious']}, honest {r['honest-suspicious']}")
    if r["refused"]:
        parts.append(f"refused {r['refused']}")
    return "; ".join(parts) or "nothing"


def cost(auc: float, reference: float | None) -> str:
    if reference is None or not math.isfinite(auc) or not math.isfinite(reference):
        return ""
    return f"{reference - auc:+.4f}"


def table(results: list[dict[str, Any]]) -> str:
    honest = {(r["banks"], r["strategy"]): r["auc"] for r in results if r["colluders"] == 0 and "auc" in r}
    rows = [
        "| k | N | strategy | attack | hold-out AUC | cost vs honest (same N, strategy) | cost vs honest fedavg | "
        "recorded in history | s (CPU s) |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in sorted(results, key=lambda r: (r["colluders"], r["banks"], STRATEGIES.index(r["strategy"]), r["attack"])):
        attack = r["attack"] if r["colluders"] else "honest"
        if r["status"] in ("n/a", "failed"):
            what = "n/a" if r["status"] == "n/a" else "no model (run failed)"
            rows.append(
                f"| {r['colluders']} | {r['banks']} | {r['strategy']} | {attack} | {what} | | | {r['reason']} | |"
            )
            continue
        same = None if r["colluders"] == 0 else honest.get((r["banks"], r["strategy"]))
        status = "" if r["status"] == "completed" else f" ({r['status']})"
        rows.append(
            f"| {r['colluders']} | {r['banks']} | {r['strategy']} | {attack} | {r['auc']:.4f}{status} | "
            f"{cost(r['auc'], same)} | {cost(r['auc'], honest.get((r['banks'], 'fedavg')))} | {recorded(r)} | "
            f"{r['seconds']:.0f} ({r['cpu_seconds']:.0f}) |"
        )
    return "\n".join(rows)


def load(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--banks", nargs="+", type=int, default=[4, 9, 20], help="federation sizes N")
    parser.add_argument("--colluders", nargs="+", type=int, default=[0, 1, 2], help="colluding banks k (0: honest)")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--attack", nargs="+", choices=ATTACKS, default=["sign-flip"])
    parser.add_argument("--factor", type=float, default=10.0, help="F of the attack (default 10)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=3)
    parser.add_argument("--partitioning", default="region")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--update-direction",
        choices=("record", "exclude", "off"),
        default=RunConfig().update_direction,
        help="the run-config key",
    )
    parser.add_argument("--multikrum-select", type=int, default=0, help="multi-Krum's m (0: N - f)")
    parser.add_argument(
        "--num-malicious", type=int, default=-1, help="f told to krum/multikrum/bulyan (default -1: max(k, 1))"
    )
    parser.add_argument("--results", type=Path, default=None, help="JSON-lines cache of runs (read and appended)")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)

    cache = load(args.results)
    wanted = [
        (n, k, s, a)
        for n in args.banks
        for k in sorted(set(args.colluders) | {0})  # the honest runs are the reference of every cost
        for s in dict.fromkeys([*args.strategies, "fedavg"])
        for a in (args.attack if k else ["none"])
        if k < n and (k == 0 or s in args.strategies)
    ]
    results, started = [], time.monotonic()
    with serverapp_identity():
        for n, k, s, a in wanted:
            key = settings(args, n, k, s, a)
            hit = next((r for r in cache if all(r.get(f) == v for f, v in key.items())), None)
            if hit is None:
                hit = one_run(args, n, k, s, a)
                if args.results is not None:
                    with args.results.open("a") as f:
                        f.write(json.dumps(hit) + "\n")
                auc = f"{hit['auc']:.4f}" if "auc" in hit else hit["status"]
                print(f"# k={k} N={n} {s} {key['attack']}: {auc} {hit.get('seconds', 0):.0f} s", flush=True)
            results.append(hit)
    print(
        f"\n{args.rounds} rounds x {args.local_epochs} local epochs, {args.partitioning} split, seed {args.seed}, "
        f"attack factor {args.factor:g}"
        + (f", Krum family told f={args.num_malicious}" if args.num_malicious >= 0 else "")
        + f"; colluders are node ids 11..; {time.monotonic() - started:.0f} s; "
        f"fedcredit from {Path(fedcredit.__file__).parent}\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
