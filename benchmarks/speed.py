"""Simulation speed: federated `flwr run` against pooled training of the same model.

    python benchmarks/speed.py                       # default config + N = 5, 20, 50 iid banks
    python benchmarks/speed.py --banks 5 --rounds 3  # a quick look

For each federation it measures, in one process tree on this machine:
(a) pooled Keras training of the same model on all banks' training rows for
    the same number of sample-epochs (rounds x local epochs), fit time only;
(b) the real `flwr run` on a private local SuperLink: submit-to-finished wall
    time, the phases Flower records (pending -> running -> finished), and the
    strategy's own time (Flower's "Strategy execution finished in X s");
and prints the ratio b/a, the time per round and the peak memory (RSS) of the
whole process tree (SuperLink, ServerApp, Ray, ClientApps). Start-up costs
(SuperLink, TensorFlow import) are measured separately. Not a test: figures.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedcredit.deploy.localrun import LocalFlower
from fedcredit.federation.history import read_history


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(proc.name))
    return tree


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory(threading.Thread):
    """Polls the RSS of every process under `flwr_home`'s SuperLink (and this process's children)."""

    def __init__(self, marker: str) -> None:
        super().__init__(daemon=True)
        self.marker, self.peak_kib, self._stop_flag = marker, 0, threading.Event()

    def _roots(self) -> list[int]:
        roots = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if self.marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                        roots.append(int(proc.name))
                except OSError:
                    pass
        return roots

    def run(self) -> None:
        while not self._stop_flag.is_set():
            tree, seen, stack = _children(), set(), self._roots()
            while stack:
                pid = stack.pop()
                if pid not in seen:
                    seen.add(pid)
                    stack.extend(tree.get(pid, []))
            self.peak_kib = max(self.peak_kib, sum(_rss_kib(p) for p in seen))
            time.sleep(0.25)

    def stop(self) -> int:
        self._stop_flag.set()
        self.join()
        return self.peak_kib


def pooled_fit_seconds(run_config: dict, num_banks: int) -> float:
    """Pooled training of the same model, same sample-epochs, in a fresh process (fit only)."""
    code = f"""
import json, time, pandas as pd
from fedcredit.core import model as mdl
from fedcredit.core.banks import load_bank, schema_of
from fedcredit.core.config import app_defaults, parse_run_config
from fedcredit.core.stats import compute_stats, preprocessing_from_stats
import pathlib
base = app_defaults(pathlib.Path({str(Path(__file__).resolve().parents[1])!r}))
cfg = parse_run_config({{**base, **json.loads({json.dumps(json.dumps(run_config))})}})
schema = schema_of(cfg)
train = pd.concat([load_bank(cfg, {{"partition-id": i, "num-partitions": {num_banks}}}).train for i in range({num_banks})])
prep = preprocessing_from_stats(compute_stats(train, schema), cfg.min_category_count)
m = mdl.build_model(prep, mdl.ModelSpec.of(cfg, schema))
trainer = mdl.Trainer(m, cfg.learning_rate)
x, y = mdl.to_inputs(train, m), train[schema.target].to_numpy()
t = time.perf_counter()
trainer.fit(m.get_weights(), x, y, mdl.FitOptions(cfg.num_server_rounds * cfg.local_epochs, cfg.batch_size,
                                                 cfg.positive_weight, cfg.seed))
print(time.perf_counter() - t)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def tf_import_seconds() -> float:
    out = subprocess.run(
        [sys.executable, "-c", "import time; t=time.perf_counter(); import tensorflow; print(time.perf_counter()-t)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def federated(flower: LocalFlower, run_config: dict, federation: str, out: Path) -> dict:
    peak = PeakMemory(str(Path(flower.env["FLWR_HOME"]) / "local-superlink"))
    peak.start()
    result = flower.run({**run_config, "output-dir": str(out)}, federation)
    peak_kib = peak.stop()
    if not result.completed:
        raise SystemExit(f"run failed: {result.details}\n{result.logs[-3000:]}")
    info = json.loads(flower.flwr("list", "--run-id", result.run_id, "--format", "json").stdout)["runs"][0]
    strategy = re.search(r"Strategy execution finished in ([\d.]+)s", result.logs)
    run_dir = max(out.iterdir(), key=lambda p: p.stat().st_mtime)
    rounds = read_history(run_dir / "history.json").trained_rounds
    return {
        "wall s": result.seconds,
        "pending->running s": _ts(info["running-at"]) - _ts(info["pending-at"]),
        "running->finished s": _ts(info["finished-at"]) - _ts(info["running-at"]),
        "strategy s": float(strategy.group(1)) if strategy else float("nan"),
        "s/round": sum(r.seconds for r in rounds) / len(rounds),
        "peak RSS MiB": peak_kib / 1024,
        "hold-out AUC": rounds[-1].holdout_auc,
        "pooled val AUC": rounds[-1].pooled_auc,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--banks", type=int, nargs="*", default=[5, 20, 50], help="iid federation sizes")
    ap.add_argument("--rounds", type=int, default=None, help="override num-server-rounds")
    ap.add_argument("--skip-default", action="store_true", help="skip the default (4 region banks) federation")
    ap.add_argument("--cpus", type=int, default=None, help="client-resources-num-cpus (default: Flower's)")
    ap.add_argument("--out", default="/tmp/fedcredit-speed")
    ap.add_argument("--evaluation", default=None, choices=["folded", "separate"], help="the run config's evaluation")
    args = ap.parse_args()
    extra: dict = {"num-server-rounds": args.rounds} if args.rounds else {}
    if args.evaluation:
        extra["evaluation"] = args.evaluation
    cpus = f" client-resources-num-cpus={args.cpus}" if args.cpus else ""
    cases = [] if args.skip_default else [("default (4 region banks)", {**extra}, 4)]
    cases += [(f"{n} iid banks", {**extra, "partitioning": "iid"}, n) for n in args.banks]
    print(f"TensorFlow import: {tf_import_seconds():.1f} s (paid by the ServerApp and by every ClientApp process)")
    rows = []
    with LocalFlower() as flower:
        t = time.monotonic()
        flower.flwr("list", "--format", "json")  # starts the SuperLink
        print(f"SuperLink start (flwr ls on a fresh FLWR_HOME): {time.monotonic() - t:.1f} s", flush=True)
        for label, run_config, n in cases:
            fed = federated(flower, run_config, f"num-supernodes={n}{cpus}", Path(args.out) / label.split()[0])
            pooled = pooled_fit_seconds(run_config, n)
            rows.append(
                {"federation": label, "pooled fit s": pooled, **fed, "strategy / pooled": fed["strategy s"] / pooled}
            )
            print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows).round(3)
    print(table.to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
