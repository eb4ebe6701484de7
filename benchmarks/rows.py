"""Cost of a deployed bank against its rows: cache build, cached load, statistics, one epoch, evaluation.

For each size a synthetic bank file (`fedcredit synth`, seed 0) is written
once into `--work`; every case runs in its own process, as a deployed bank's
messages do, and reports its own peak RSS (`resource.RUSAGE_SELF` in the
child, as `RUSAGE_CHILDREN` would in the parent):

- `first`: the first message's data load (the cache build: hash, chunked validation, column files);
- `train`: a later message's data load (the training rows through the cache), statistics and
  one local epoch (`client.train`) at the batch size: a statistics and a train message in one
  process, an upper bound on either;
- `eval`: an evaluate message (`client.evaluate`, the validation rows only) of the weights the
  train case left;
- `plain`: the same Keras model (`build_model`) compiled and fitted for one epoch on the same
  rows in a plain script (`model.fit` on `to_inputs`), for the throughput ratio; on the first
  `--plain-rows` training rows only (default 1M: plain Keras at batch 64 takes minutes per
  million rows), so the ratio compares seconds per row.

Prints a table, a straight-line fit of seconds per million rows for each
column, and the load average beside them. `--auc` runs the hold-out AUC check
too: a bank's whole message sequence with and without the cache must agree
exactly. `--stages ROWS` prints where a train message's memory goes instead.

    python benchmarks/rows.py --sizes 10000 100000 1000000 5000000 --batch-sizes 64 1024
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HIDDEN = "32,16"


def _cfg(batch: int):
    from fedcredit.core.config import parse_run_config

    return parse_run_config({"local-epochs": 1, "batch-size": batch, "hidden-units": HIDDEN})


def _prep(cfg, node) -> str:
    from fedcredit.core.stats import merge_stats, preprocessing_from_stats
    from fedcredit.federation import client

    stats = client.statistics(cfg, node)[3]
    return preprocessing_from_stats(merge_stats([stats]), cfg.min_category_count).to_json()


def child(case: str, csv: str, cache_dir: str, batch: int, plain_rows: int = 0) -> dict[str, float]:
    """One case in this (fresh) process; seconds per step and this process's peak RSS."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from fedcredit.core.banks import load_bank

    cfg = _cfg(batch)
    node = {"data-path": csv, "bank-name": "big", "cache-dir": cache_dir}
    out: dict[str, float] = {}
    state = Path(cache_dir + ".message-state.npz")  # what the train case hands the eval case, as the coordinator would
    t = time.perf_counter()
    bank = load_bank(cfg, node)
    rows = bank.val if case == "eval" else bank.train  # a message reads the part it uses
    out["load"] = time.perf_counter() - t
    if case in ("train", "plain"):
        t = time.perf_counter()
        prep = _prep(cfg, node)
        out["stats"] = time.perf_counter() - t
    if case == "train":
        import numpy as np

        from fedcredit.federation import client

        _, model, _ = client._model(cfg, prep)
        t = time.perf_counter()
        weights, _, out["rows"] = client.train(cfg, node, model.get_weights(), prep, 1)
        out["epoch"] = time.perf_counter() - t
        np.savez(state, prep=np.array(prep), **{f"w{i}": w for i, w in enumerate(weights)})
    if case == "eval":
        import numpy as np

        from fedcredit.federation import client

        with np.load(state) as saved:
            prep = str(saved["prep"])
            weights = [saved[f"w{i}"] for i in range(len(saved.files) - 1)]
        client._model(cfg, prep)  # built (TensorFlow's start-up) outside the timing, as in the train case
        t = time.perf_counter()
        client.evaluate(cfg, node, weights, prep)
        out["eval"] = time.perf_counter() - t
        out["rows"] = len(rows)
    if case == "plain":
        import keras
        import numpy as np

        from fedcredit.core import model as mdl
        from fedcredit.core.banks import schema_of
        from fedcredit.core.stats import Preprocessing

        schema = schema_of(cfg)
        model = mdl.build_model(Preprocessing.from_json(prep), mdl.ModelSpec.of(cfg, schema))
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="binary_crossentropy")
        rows = rows.iloc[:plain_rows] if plain_rows else rows
        inputs = mdl.to_inputs(rows, model)
        labels = rows[schema.target].to_numpy().astype(np.float32)
        out["rows"] = len(rows)
        t = time.perf_counter()
        model.fit(inputs, labels, batch_size=batch, epochs=1, shuffle=True, verbose=0)
        out["epoch"] = time.perf_counter() - t
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def auc_check(csv: str, work: Path, batch: int) -> dict[str, float]:
    """One bank's whole message sequence (statistics, one epoch, evaluation) through the cache and from the CSV.

    The same initial weights both times; returns both validation AUCs, whether
    the two evaluation summaries are equal, and the largest weight difference.
    """
    import numpy as np

    from fedcredit.federation import client

    cfg = _cfg(batch)
    runs = {}
    for name, node in {
        "cached": {"data-path": csv, "bank-name": "big", "cache-dir": str(work / "auc-cache")},
        "csv": {"data-path": csv, "bank-name": "big", "cache": "off"},
    }.items():
        prep = _prep(cfg, node)
        _, model, _ = client._model(cfg, prep)
        start = runs["cached"][2] if runs else model.get_weights()
        weights, _, _ = client.train(cfg, node, start, prep, 1)
        runs[name] = (client.evaluate(cfg, node, weights, prep), weights, start)
        client._INPUTS.clear()
    (a, wa, _), (b, wb, _) = runs["cached"], runs["csv"]
    gap = max(float(np.max(np.abs(x - y))) for x, y in zip(wa, wb, strict=True))
    return {"auc-cached": a["auc"], "auc-csv": b["auc"], "equal": float(a == b), "largest-weight-gap": gap}


def stages(csv: str, cache_dir: str, batch: int) -> None:
    """Where a train message's memory goes: RSS and peak (`/proc/self/status`) after each step, in this process."""

    def status() -> str:
        with open("/proc/self/status", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
        return " | ".join(f"{int(fields[k].split()[0]) // 1024:,}" for k in ("VmRSS", "VmHWM"))

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from fedcredit.core.banks import load_bank
    from fedcredit.federation import client

    cfg = _cfg(batch)
    node = {"data-path": csv, "bank-name": "big", "cache-dir": cache_dir}
    print("| step | RSS MiB | peak MiB |\n|---|---|---|")
    print(f"| Python, pandas and Flower imported | {status()} |")
    train = load_bank(cfg, node).train
    deep = train.memory_usage(deep=False).sum() / 2**20
    print(f"| the {len(train):,} training rows read ({deep:.1f} MiB, `memory_usage()`) | {status()} |")
    prep = _prep(cfg, node)
    print(f"| statistics | {status()} |")
    _, model, _ = client._model(cfg, prep)
    print(f"| TensorFlow imported, model built | {status()} |")
    client.train(cfg, node, model.get_weights(), prep, 1)
    print(f"| one epoch | {status()} |", flush=True)


def run_case(case: str, csv: Path, cache_dir: Path, batch: int, plain_rows: int = 0) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", case, str(csv), str(cache_dir), str(batch), str(plain_rows)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{case} {csv.name} batch {batch} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(seconds per million rows, intercept) of a least-squares line."""
    import numpy as np

    if len(xs) < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(np.array(xs) / 1e6, np.array(ys), 1)
    return float(slope), float(intercept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 5_000_000])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fedcredit-rows"))
    parser.add_argument("--auc", type=int, default=0, help="rows of the AUC check (0: skip)")
    parser.add_argument("--plain-rows", type=int, default=1_000_000, help="training rows of the plain Keras fit")
    parser.add_argument("--stages", type=int, metavar="ROWS", help="where a train message's memory goes, at ROWS rows")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages:
        from fedcredit.core.synth import synthesise

        csv = args.work / f"bank-{args.stages}.csv"
        if not csv.exists():
            args.work.mkdir(parents=True, exist_ok=True)
            synthesise(csv, args.stages, seed=0)
        stages(str(csv), str(args.work / f"cache-{args.stages}"), args.batch_sizes[-1])
        return
    if args.child:
        case, csv, cache_dir, batch, plain_rows = args.child
        print(json.dumps(child(case, csv, cache_dir, int(batch), int(plain_rows))))
        return
    from fedcredit.core.synth import synthesise

    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()}")
    rows_out = []
    for size in args.sizes:
        csv = args.work / f"bank-{size}.csv"
        if not csv.exists():
            t = time.perf_counter()
            synthesise(csv, size, seed=0)
            print(f"synth {size:,} rows: {time.perf_counter() - t:.1f} s", flush=True)
        cache_dir = args.work / f"cache-{size}"
        for batch in args.batch_sizes:
            shutil.rmtree(cache_dir, ignore_errors=True)
            first = run_case("first", csv, cache_dir, batch)
            bank = run_case("train", csv, cache_dir, batch)
            evaluation = run_case("eval", csv, cache_dir, batch)
            plain = run_case("plain", csv, cache_dir, batch, args.plain_rows)
            row = {
                "rows": size,
                "batch": batch,
                "first": first["load"],
                "load": bank["load"],
                "stats": bank["stats"],
                "epoch": bank["epoch"],
                "eval": evaluation["eval"],
                "plain": plain["epoch"],
                "plain_rows": plain["rows"],
                "ratio": (bank["epoch"] / bank["rows"]) / (plain["epoch"] / plain["rows"]),
                "rss_first": first["rss_mb"],
                "rss_train": bank["rss_mb"],
                "rss_eval": evaluation["rss_mb"],
                "rss_plain": plain["rss_mb"],
                "loadavg": os.getloadavg()[0],
            }
            rows_out.append(row)
            print(json.dumps(row), flush=True)
    head = (
        "| rows | batch | first msg s | cached load s | stats s | epoch s | eval s | plain Keras epoch s (rows) "
        "| ratio per row | peak RSS MB (first / train / eval / plain) | load 1 min |"
    )
    print("\n" + head + "\n|" + "---|" * 11)
    for r in rows_out:
        print(
            f"| {r['rows']:,} | {r['batch']} | {r['first']:.2f} | {r['load']:.2f} | {r['stats']:.2f} | "
            f"{r['epoch']:.2f} | {r['eval']:.2f} | {r['plain']:.2f} ({r['plain_rows']:,}) | {r['ratio']:.2f} | "
            f"{r['rss_first']:.0f} / {r['rss_train']:.0f} / {r['rss_eval']:.0f} / {r['rss_plain']:.0f} | {r['loadavg']:.1f} |"
        )
    for batch in args.batch_sizes:
        sel = [r for r in rows_out if r["batch"] == batch]
        xs = [r["rows"] for r in sel]
        fits = {k: fit(xs, [r[k] for r in sel]) for k in ("first", "load", "stats", "epoch", "eval")}
        print(f"batch {batch}: seconds per million rows " + ", ".join(f"{k} {s:.2f}" for k, (s, _) in fits.items()))
    if args.auc:
        csv = args.work / f"bank-{args.auc}.csv"
        if not csv.exists():
            synthesise(csv, args.auc, seed=0)
        print("hold-out AUC check:", json.dumps(auc_check(str(csv), args.work, 1024)))
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
