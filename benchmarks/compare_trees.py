#!/usr/bin/env python3
"""Run the same federation scenarios in two fedcredit source trees and compare what they leave behind.

Usage
-----
  python compare_trees.py run  --tree <old checkout> --out base.json [--only default,four] [--keep-outputs]
  python compare_trees.py diff base.json new.json [--only default,four] [--max 30]
  python compare_trees.py list                     # the scenarios

`run` starts one subprocess per scenario (cwd=<tree>, `sys.path.insert(0, tree)` before anything of
fedcredit is imported; the worker checks that fedcredit, its coordinator and `client_app` all come from
<tree> and fails loudly otherwise), one scenario at a time, and writes one JSON file with, per scenario
and per run of it:

  * history: history.json flattened to JSON-pointer path -> value (numbers, bools, null, strings, and
    empty containers as "{}"/"[]"), minus the keys listed under "dropped" (wall-clock times, run ids,
    paths, the .keras file digest); paths prefixed "history.json:". The same for the history dict that
    server.run / server.serve returned, prefixed "returned:" (history.json goes through the typed writer
    of fedcredit.federation.history, which fills defaults and drops empty keys, so it can hide changes);
  * weights: SHA-256 (plus shape, dtype) of every array of model-final.keras (loaded with Keras),
    model-best.keras, each bank's personalised model-kept.keras and every checkpoints/round-NNN.npz;
  * files: SHA-256 of the run's preprocessing.json and config.json (canonical JSON, paths dropped) and of
    the architecture of every .keras model (its config.json, Keras' memory-address shared_object_ids
    renumbered).

`diff` compares two such files scenario by scenario: identical, or the differing paths with both values,
"added in new" (keys only the new tree writes; tolerated), "removed" (keys the new tree no longer writes),
and whether the weight hashes are equal; files only the new tree writes are reported, tolerated. Exit status 0: no difference besides added keys; 1: differences;
2: a scenario failed or is missing.

A renamed public entry point (InProcessGrid, serverapp_identity, APP_DIR, server.serve, server.run,
RunConfig, ...) makes that scenario fail with "API CHANGED: ..." and `run` exit with status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FORMAT = 1

SCENARIOS: dict[str, str] = {
    "default": "2 banks (Flower's default federation size), default config, through server.serve",
    "four": "4 banks, default config, through server.run",
    "secure": "4 banks, privacy.secure-aggregation = true, through server.run",
    "folded": '4 banks, evaluation = "folded", through server.run',
    "sweep": '2 banks, sweep = "seed=42,1" (2 variants), through server.serve',
    "resume": "3 banks: a run crashed once history.json records round 2, then resume-from it into a new run "
    "(both runs recorded), through server.run",
}

# Keys whose values legitimately differ from run to run (JSON-pointer last component).
DROPPED_KEYS = {
    "seconds": "wall-clock time",
    "output-dir": "absolute path of a fresh temporary directory",
    "run-id": "the run id the caller passes",
    "model-final-sha256": "digest of the .keras zip, which holds save timestamps (its weights are compared instead)",
}
# Besides: any string value that contains an absolute path of this run (temp dir, tree) is dropped as a path.


# ----------------------------------------------------------------------------------------------------------
# worker: runs one scenario inside one tree
# ----------------------------------------------------------------------------------------------------------


class ApiChanged(RuntimeError):
    pass


def _require(module: Any, name: str) -> Any:
    if not hasattr(module, name):
        raise ApiChanged(
            f"API CHANGED: {module.__name__} (from {getattr(module, '__file__', '?')}) has no attribute {name!r}; "
            f"the comparison script drives the coordinator through that name (as wt-base names it). "
            f"Adapt the script deliberately rather than skip the scenario."
        )
    return getattr(module, name)


def _under(path: str | os.PathLike | None, tree: Path) -> bool:
    if not path:
        return False
    try:
        Path(path).resolve().relative_to(tree)
        return True
    except ValueError:
        return False


def _import_tree(tree: Path) -> dict[str, Any]:
    """Import fedcredit from `tree` (first on sys.path) and return the entry points, checked."""
    sys.path.insert(0, str(tree))
    import fedcredit

    if not _under(fedcredit.__file__, tree):
        raise RuntimeError(f"WRONG TREE: fedcredit imported from {fedcredit.__file__}, expected under {tree}")
    import importlib

    inprocess = importlib.import_module("fedcredit.deploy.inprocess")
    server = importlib.import_module("fedcredit.federation.server")
    config = importlib.import_module("fedcredit.core.config")
    api = {
        "InProcessGrid": _require(inprocess, "InProcessGrid"),
        "serverapp_identity": _require(inprocess, "serverapp_identity"),
        "APP_DIR": _require(inprocess, "APP_DIR"),
        "client_app": _require(inprocess, "client_app"),
        # The refactored tree moved serve to fedcredit.federation.sweep and returns typed History objects.
        "serve": _typed(
            getattr(server, "serve", None) or _require(importlib.import_module("fedcredit.federation.sweep"), "serve")
        ),
        "run": _typed(_require(server, "run")),
        "RunConfig": _require(config, "RunConfig"),
        "app_defaults": _require(config, "app_defaults"),
    }
    for name in ("serve", "run"):
        if not callable(api[name]):
            raise ApiChanged(f"API CHANGED: fedcredit.federation.server.{name} is not callable")
    for mod in (inprocess, server, config):
        if not _under(mod.__file__, tree):
            raise RuntimeError(f"WRONG TREE: {mod.__name__} imported from {mod.__file__}, expected under {tree}")
    if Path(api["APP_DIR"]).resolve() != tree:
        raise RuntimeError(f"WRONG TREE: APP_DIR is {api['APP_DIR']}, expected {tree}")
    client_app = api["client_app"]()
    if not _under(client_app.__file__, tree):
        raise RuntimeError(f"WRONG TREE: client_app imported from {client_app.__file__}, expected under {tree}")
    return api


def _check_modules(tree: Path) -> list[str]:
    """Every fedcredit module (and client_app/server_app) loaded in this process must come from `tree`."""
    wrong = []
    for name, mod in list(sys.modules.items()):
        if name == "fedcredit" or name.startswith("fedcredit.") or name in ("client_app", "server_app"):
            f = getattr(mod, "__file__", None)
            if f and not _under(f, tree):
                wrong.append(f"{name}: {f}")
    return wrong


def _default_config(api: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    flat = dict(api["RunConfig"]().to_flower())
    info: dict[str, Any] = {}
    try:
        app = dict(api["app_defaults"](Path(api["APP_DIR"])))
        differ = sorted(k for k in set(flat) | set(app) if flat.get(k) != app.get(k))
        info["runconfig-vs-pyproject-differ"] = differ
    except Exception as err:  # noqa: BLE001 - informational only
        info["runconfig-vs-pyproject-error"] = f"{type(err).__name__}: {err}"
    return flat, info


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _array_record(a: Any) -> dict[str, Any]:
    import numpy as np

    a = np.ascontiguousarray(a)
    return {"sha256": _sha(a.tobytes()), "shape": list(a.shape), "dtype": str(a.dtype)}


def _keras_weights(path: Path) -> list[dict[str, Any]]:
    import keras

    model = keras.saving.load_model(str(path), compile=False)
    return [_array_record(w) for w in model.get_weights()]


def _keras_architecture(path: Path, paths: list[str]) -> str:
    import zipfile

    with zipfile.ZipFile(path) as z:
        raw = json.loads(z.read("config.json"))
    return _sha(json.dumps(_renumber_shared(_strip_paths(raw, paths)), sort_keys=True).encode())


def _renumber_shared(value: Any) -> Any:
    """Keras writes `shared_object_id` = id() of the shared object (a memory address): number them 0, 1, ...
    in order of first appearance (keys sorted), so that only which objects are shared counts."""
    ids: dict[Any, int] = {}

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            out = {}
            for k in sorted(v):
                if k == "shared_object_id":
                    out[k] = ids.setdefault(v[k], len(ids))
                else:
                    out[k] = walk(v[k])
            return out
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(value)


def _strip_paths(value: Any, paths: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _strip_paths(v, paths) for k, v in value.items() if not (isinstance(v, str) and _is_path(v, paths))}
    if isinstance(value, list):
        return [_strip_paths(v, paths) for v in value]
    return value


def _is_path(value: str, paths: list[str]) -> bool:
    return any(p and p in value for p in paths)


def _esc(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def flatten(value: Any, paths: list[str], prefix: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    """history.json -> ({pointer: value}, {dropped pointer: why})."""
    out: dict[str, Any] = {}
    dropped: dict[str, str] = {}

    def walk(v: Any, p: str) -> None:
        last = p.rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~")
        if last in DROPPED_KEYS:
            dropped[p] = DROPPED_KEYS[last]
            return
        if isinstance(v, dict):
            if not v:
                out[p] = "{}"
            for k, x in v.items():
                walk(x, f"{p}/{_esc(k)}")
        elif isinstance(v, list):
            if not v:
                out[p] = "[]"
            for i, x in enumerate(v):
                walk(x, f"{p}/{i}")
        elif isinstance(v, str) and _is_path(v, paths):
            dropped[p] = "a file path"
        elif isinstance(v, float) and not math.isfinite(v):
            out[p] = repr(v)
        else:
            out[p] = v

    walk(value, prefix)
    return out, dropped


def _plain(value: Any) -> Any:
    """The history dict `run`/`serve` returned, as JSON would hold it (numpy scalars, tuples, NaN kept apart)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"<ndarray>": _array_record(value)}
    if isinstance(value, np.generic):
        return _plain(value.item())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"<{type(value).__name__}> {value!r}"


def _record_run(run_dir: Path, returned: dict[str, Any] | None, paths: list[str]) -> dict[str, Any]:
    """What one run directory holds (and the history `run`/`serve` returned), reduced to comparable values."""
    import numpy as np

    rec: dict[str, Any] = {"dir-name-suffix": run_dir.name.split("-run", 1)[-1]}
    history = json.loads((run_dir / "history.json").read_text(encoding="utf-8"))
    hist, dropped = flatten(history, paths)
    # Two sections: history.json as written (through fedcredit.federation.history's typed writer, which
    # normalises), and the history dict the entry point returned (None for the run that crashed).
    rec["history"] = {f"history.json:{k}": v for k, v in hist.items()}
    rec["dropped"] = {f"history.json:{k}": v for k, v in dropped.items()}
    if returned is not None:
        ret, rdropped = flatten(_plain(returned), paths)
        rec["history"].update({f"returned:{k}": v for k, v in ret.items()})
        rec["dropped"].update({f"returned:{k}": v for k, v in rdropped.items()})
        if returned.get("output-dir") and Path(returned["output-dir"]).resolve() != run_dir.resolve():
            raise RuntimeError(f"returned history's output-dir {returned['output-dir']} is not {run_dir}")
    weights: dict[str, Any] = {}
    for ckpt in sorted(run_dir.glob("checkpoints/*.npz")):
        with np.load(ckpt) as data:
            weights[f"checkpoints/{ckpt.name}"] = [_array_record(data[f"arr_{i}"]) for i in range(len(data.files))]
    for model in [
        "model-final.keras",
        "model-best.keras",
        *sorted(str(p.relative_to(run_dir)) for p in run_dir.glob("banks/*/*.keras")),
    ]:
        if (run_dir / model).is_file():
            weights[model] = _keras_weights(run_dir / model)
    rec["weights"] = weights
    files: dict[str, str] = {}
    for name in ("preprocessing.json", "config.json"):
        if (run_dir / name).is_file():
            raw = json.loads((run_dir / name).read_text(encoding="utf-8"))
            files[name] = _sha(json.dumps(_strip_paths(raw, paths), sort_keys=True).encode())
    for model in (k for k in weights if k.endswith(".keras")):
        files[f"{model}:config.json (architecture)"] = _keras_architecture(run_dir / model, paths)
    rec["files"] = files
    rec["listing"] = sorted(
        str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and "tensorboard" not in p.parts
    )
    # Informational consistency: the final model's weights are the last checkpoint's.
    ckpts = sorted(k for k in weights if k.startswith("checkpoints/"))
    if ckpts and "model-final.keras" in weights:
        rec["final-equals-last-checkpoint"] = [w["sha256"] for w in weights["model-final.keras"]] == [
            w["sha256"] for w in weights[ckpts[-1]]
        ]
    return rec


def _run_dirs(out_dir: Path) -> list[Path]:
    return sorted(p.parent for p in out_dir.glob("*/history.json"))


def worker(tree: Path, scenario: str, result_path: Path, keep: bool) -> int:
    started = time.monotonic()
    result: dict[str, Any] = {"scenario": scenario, "tree": str(tree), "cwd": os.getcwd()}
    tmp = Path(tempfile.mkdtemp(prefix=f"fedcredit-cmp-{scenario}-"))
    result["output-dir"] = str(tmp)
    paths = [str(tmp), str(tmp.resolve()), str(tree)]
    try:
        if Path.cwd().resolve() != tree:
            raise RuntimeError(f"worker cwd is {Path.cwd()}, expected {tree}")
        api = _import_tree(tree)
        import fedcredit

        result["fedcredit-file"] = fedcredit.__file__
        base, info = _default_config(api)
        result["defaults-info"] = info
        runs = SCENARIO_FUNCS[scenario](api, base, tmp)
        result["runs"] = {}
        for label, (run_dir, returned) in runs.items():
            result["runs"][label] = _record_run(run_dir, returned, paths)
        wrong = _check_modules(tree)
        if wrong:
            raise RuntimeError("WRONG TREE: modules loaded from elsewhere: " + "; ".join(wrong))
        result["status"] = "ok"
    except BaseException as err:  # noqa: BLE001 - reported, and the exit status says so
        result["status"] = "error"
        result["error"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc()
        print(result["traceback"], file=sys.stderr)
    finally:
        result["seconds"] = round(time.monotonic() - started, 1)
        result_path.write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")
        if keep:
            print(f"kept outputs in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if result["status"] == "ok" else 1


# ------------------------------------------------------------------ scenarios (inside the worker)


def _as_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    return value.to_json() if hasattr(value, "to_json") else value


def _typed(fn: Any) -> Any:
    """The entry point, its returned History (or list of them) as the JSON dict the old tree returned."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return _as_json(fn(*args, **kwargs))

    return call


def _one_run(
    api: dict[str, Any], config: dict[str, Any], banks: int, run_id: str, entry: str
) -> tuple[Path, dict[str, Any]]:
    out = Path(config["output-dir"])
    before = set(_run_dirs(out))
    grid = api["InProcessGrid"](config, banks)
    with api["serverapp_identity"]():
        result = api[entry](grid, config, run_id, api["APP_DIR"])
    if entry == "serve":
        if not (isinstance(result, list) and len(result) == 1):
            raise RuntimeError(f"serve returned {result!r:.200}, expected a list of 1 history")
        result = result[0]
    new = [d for d in _run_dirs(out) if d not in before]
    if len(new) != 1:
        raise RuntimeError(f"expected one new run directory in {out}, found {new}")
    return new[0], result


def sc_default(api, base, tmp):
    config = {**base, "output-dir": str(tmp / "out")}
    return {"run": _one_run(api, config, 2, "default", "serve")}


def sc_four(api, base, tmp):
    config = {**base, "output-dir": str(tmp / "out")}
    return {"run": _one_run(api, config, 4, "four", "run")}


def sc_secure(api, base, tmp):
    config = {**base, "privacy.secure-aggregation": True, "output-dir": str(tmp / "out")}
    return {"run": _one_run(api, config, 4, "secure", "run")}


def sc_folded(api, base, tmp):
    config = {**base, "evaluation": "folded", "output-dir": str(tmp / "out")}
    return {"run": _one_run(api, config, 4, "folded", "run")}


def sc_sweep(api, base, tmp):
    out = tmp / "out"
    config = {**base, "sweep": "seed=42,1", "output-dir": str(out)}
    grid = api["InProcessGrid"](config, 2)
    with api["serverapp_identity"]():
        histories = api["serve"](grid, config, "sweep", api["APP_DIR"])
    if not isinstance(histories, list) or len(histories) != 2:
        raise RuntimeError(f"serve returned {histories!r:.200}, expected 2 histories")
    dirs = _run_dirs(out)
    if len(dirs) != 2:
        raise RuntimeError(f"expected 2 variant run directories, found {dirs}")
    # Order by the variant index the histories record (directory names hold a timestamp, then -run<id>).
    by_suffix = {d.name.split("-run", 1)[-1]: d for d in dirs}
    if sorted(by_suffix) != ["sweep-001", "sweep-002"]:
        raise RuntimeError(f"unexpected variant directories: {sorted(by_suffix)}")
    for h, suffix in zip(histories, ("sweep-001", "sweep-002")):
        if Path(h["output-dir"]).resolve() != by_suffix[suffix].resolve():
            raise RuntimeError(f"serve's histories are not in variant order: {h['output-dir']} is not {suffix}")
    return {
        "variant-1": (by_suffix["sweep-001"], histories[0]),
        "variant-2": (by_suffix["sweep-002"], histories[1]),
    }


class Crash(Exception):
    """The coordinator's host going down."""


def sc_resume(api, base, tmp):
    InProcessGrid = api["InProcessGrid"]
    crash_out, resume_out = tmp / "crash", tmp / "resumed"

    class CrashingGrid(InProcessGrid):
        """Banks that answer until history.json records round 2; then the coordinator crashes, once."""

        crashed_at: tuple[str, int] | None = None

        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            if self.crashed_at is None:
                for hist in crash_out.glob("*/history.json"):
                    try:
                        rounds = json.loads(hist.read_text(encoding="utf-8")).get("rounds") or []
                    except (OSError, ValueError):
                        continue
                    if any(r.get("round") == 2 for r in rounds):
                        first = messages[0] if messages else None
                        kind = first.metadata.message_type if first else "(none)"
                        cfg = first.content.config_records.get("config") if first else None
                        rnd = int(cfg.get("server-round", -1)) if cfg else -1
                        CrashingGrid.crashed_at = (kind, rnd)
                        raise Crash(f"the coordinator's host went down (before sending {kind} of round {rnd})")
            return super().send_and_receive(messages, timeout=timeout)

    config = {**base, "output-dir": str(crash_out)}
    with api["serverapp_identity"]():
        try:
            api["run"](CrashingGrid(config, 3), config, "crash", api["APP_DIR"])
        except Crash:
            pass
        else:
            raise RuntimeError("the crashing run did not crash: history.json never recorded round 2")
    (crashed,) = _run_dirs(crash_out)
    status = json.loads((crashed / "history.json").read_text(encoding="utf-8"))["status"]
    if status != "failed":
        raise RuntimeError(f"crashed run's history.json has status {status!r}, expected 'failed'")
    print(f"crashed at {CrashingGrid.crashed_at}", file=sys.stderr)
    resumed_cfg = {**base, "output-dir": str(resume_out), "resume-from": str(crashed)}
    return {"crashed": (crashed, None), "resumed": _one_run(api, resumed_cfg, 3, "resumed", "run")}


SCENARIO_FUNCS = {
    "default": sc_default,
    "four": sc_four,
    "secure": sc_secure,
    "folded": sc_folded,
    "sweep": sc_sweep,
    "resume": sc_resume,
}
assert set(SCENARIO_FUNCS) == set(SCENARIOS)


# ----------------------------------------------------------------------------------------------------------
# run: one subprocess per scenario, one after the other
# ----------------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    tree = Path(args.tree).resolve()
    if not (tree / "fedcredit" / "__init__.py").is_file():
        print(f"error: {tree} is not a fedcredit tree", file=sys.stderr)
        return 2
    names = list(SCENARIOS) if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"error: unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}", file=sys.stderr)
        return 2
    out_path = Path(args.out).resolve()
    log_dir = out_path.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    doc: dict[str, Any] = {
        "format": FORMAT,
        "tree": str(tree),
        "commit": commit,
        "tracked-changes": dirty.splitlines(),
        "python": sys.version.split()[0],
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "dropped-keys": DROPPED_KEYS | {"<any string holding a path of the run>": "a file path"},
        "note": "history values are recorded twice: 'history.json:' (the file, through the typed writer) and "
        "'returned:' (the dict server.run/serve returned)",
        "scenarios": {},
    }
    failed = []
    for name in names:
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {SCENARIOS[name]} ... ", end="", flush=True)
        with tempfile.TemporaryDirectory(prefix="fedcredit-cmp-result-") as td:
            result_path = Path(td) / "result.json"
            log_path = log_dir / f"{out_path.stem}-{name}.log"
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
            env.pop("PYTHONPATH", None)
            started = time.monotonic()
            with log_path.open("w") as log:
                proc = subprocess.run(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "_worker",
                        "--tree",
                        str(tree),
                        "--scenario",
                        name,
                        "--result",
                        str(result_path),
                    ]
                    + (["--keep-outputs"] if args.keep_outputs else []),
                    cwd=tree,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            wall = round(time.monotonic() - started, 1)
            if result_path.is_file():
                result = json.loads(result_path.read_text(encoding="utf-8"))
            else:
                result = {"status": "error", "error": f"worker exited {proc.returncode} without a result"}
        result["wall-seconds"] = wall
        result["log"] = str(log_path)
        doc["scenarios"][name] = result
        if result.get("status") != "ok":
            failed.append(name)
            print(f"FAILED after {wall} s: {result.get('error')}  (log: {log_path})")
        else:
            slow = "  (over 3 minutes)" if wall > 180 else ""
            print(f"ok, {wall} s{slow}")
        out_path.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")  # progress survives
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out_path.write_text(json.dumps(doc, indent=1, sort_keys=True), encoding="utf-8")
    print(f"wrote {out_path}")
    for name in names:
        print(f"  {name:8s} {doc['scenarios'][name]['wall-seconds']:7.1f} s  {doc['scenarios'][name]['status']}")
    if failed:
        print(f"\nERROR: scenario(s) failed in {tree}: {failed}", file=sys.stderr)
        for name in failed:
            print(f"  {name}: {doc['scenarios'][name].get('error')}", file=sys.stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------------------------------------
# diff
# ----------------------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    s = json.dumps(v)
    return s if len(s) <= 200 else s[:197] + "..."


def _diff_weights(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    problems = []
    for name in sorted(set(a) | set(b)):
        if name not in b:
            problems.append(f"{name}: only in base")
        elif name not in a:
            continue  # a file only the new tree writes: reported with the added files, tolerated
        elif len(a[name]) != len(b[name]):
            problems.append(f"{name}: {len(a[name])} arrays in base, {len(b[name])} in new")
        else:
            bad = [i for i, (x, y) in enumerate(zip(a[name], b[name])) if x != y]
            if bad:
                problems.append(f"{name}: arrays {bad} differ (of {len(a[name])})")
    return problems


def cmd_diff(args: argparse.Namespace) -> int:
    base = json.loads(Path(args.base).read_text(encoding="utf-8"))
    new = json.loads(Path(args.new).read_text(encoding="utf-8"))
    print(
        f"base: {base.get('tree')} @ {base.get('commit') or '(no git)'}"
        + (" (tracked changes)" if base.get("tracked-changes") else "")
    )
    print(
        f"new:  {new.get('tree')} @ {new.get('commit') or '(no git)'}"
        + (" (tracked changes)" if new.get("tracked-changes") else "")
    )
    status = 0
    names = list(
        dict.fromkeys(
            [
                *(n for n in SCENARIOS if n in base["scenarios"] or n in new["scenarios"]),
                *base["scenarios"],
                *new["scenarios"],
            ]
        )
    )
    if args.only:
        only = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in only if n not in SCENARIOS]
        if unknown:
            print(f"error: unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}", file=sys.stderr)
            return 2
        names = only
    summary = []
    for name in names:
        print(f"\n=== {name} ===")
        a, b = base["scenarios"].get(name), new["scenarios"].get(name)
        if a is None or b is None:
            print(f"  MISSING: only in {'new' if a is None else 'base'}")
            summary.append((name, "missing"))
            status = max(status, 2)
            continue
        if a.get("status") != "ok" or b.get("status") != "ok":
            for label, r in (("base", a), ("new", b)):
                if r.get("status") != "ok":
                    print(f"  ERROR in {label}: {r.get('error')}  (log: {r.get('log')})")
            summary.append((name, "error"))
            status = max(status, 2)
            continue
        verdicts = []
        for run in list(dict.fromkeys([*a["runs"], *b["runs"]])):
            ra, rb = a["runs"].get(run), b["runs"].get(run)
            if ra is None or rb is None:
                print(f"  [{run}] MISSING: only in {'new' if ra is None else 'base'}")
                verdicts.append("differs")
                continue
            ha, hb = ra["history"], rb["history"]
            changed = [p for p in ha if p in hb and (ha[p] != hb[p] or type(ha[p]) is not type(hb[p]))]
            added = [p for p in hb if p not in ha]
            removed = [p for p in ha if p not in hb]
            wprob = _diff_weights(ra["weights"], rb["weights"])
            fprob = [k for k in sorted(set(ra["files"]) | set(rb["files"])) if ra["files"].get(k) != rb["files"].get(k)]
            lprob = sorted(set(ra["listing"]) - set(rb["listing"]))  # files the new tree no longer writes
            ladded = sorted(set(rb["listing"]) - set(ra["listing"]))  # files only the new tree writes (tolerated)
            dropped_diff = sorted(set(ra["dropped"]) ^ set(rb["dropped"]))
            n_arrays = sum(len(v) for v in ra["weights"].values())
            if not (changed or removed or wprob or fprob or lprob):
                line = f"  [{run}] identical ({len(ha)} history values, {n_arrays} weight arrays in {len(ra['weights'])} files equal"
                line += f"; {len(added)} keys, {len(ladded)} files added in new)" if added or ladded else ")"
                print(line)
                verdicts.append("identical" if not (added or ladded) else "identical+added")
            else:
                print(f"  [{run}] DIFFERS: {len(changed)} changed, {len(removed)} removed, {len(added)} added in new")
                verdicts.append("differs")
            if changed:
                print(f"    changed ({len(changed)}; first {min(len(changed), args.max)}):")
                for p in changed[: args.max]:
                    print(f"      {p}: base {_fmt(ha[p])}  new {_fmt(hb[p])}")
            if removed:
                print(f"    removed ({len(removed)}; first {min(len(removed), args.max)}):")
                for p in removed[: args.max]:
                    print(f"      {p}: base {_fmt(ha[p])}")
            if added:
                print(f"    added in new ({len(added)}; first {min(len(added), args.max)}):")
                for p in added[: args.max]:
                    print(f"      {p}: new {_fmt(hb[p])}")
            print(
                f"    weight hashes: {'equal' if not wprob else 'DIFFER'}"
                f" ({len(ra['weights'])} files: {', '.join(sorted(ra['weights']))})"
            )
            for p in wprob[: args.max]:
                print(f"      {p}")
            if fprob:
                print(f"    files differ: {fprob}")
            if lprob:
                print(f"    removed files (in base's run directory, not in new's): {lprob[: args.max]}")
            if ladded:
                print(f"    files added in new (tolerated): {ladded[: args.max]}")
            if dropped_diff:
                print(f"    (note: dropped keys differ: {dropped_diff[: args.max]})")
        verdict = (
            "identical"
            if all(v == "identical" for v in verdicts)
            else ("identical (+ keys added in new)" if all(v.startswith("identical") for v in verdicts) else "DIFFERS")
        )
        summary.append((name, verdict))
        if verdict == "DIFFERS":
            status = max(status, 1)
    print("\nsummary:")
    for name, verdict in summary:
        print(f"  {name:8s} {verdict}")
    return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the scenarios in one tree")
    r.add_argument("--tree", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    r.add_argument("--keep-outputs", action="store_true", help="keep each scenario's temporary output dir")
    d = sub.add_parser("diff", help="compare two run outputs")
    d.add_argument("base")
    d.add_argument("new")
    d.add_argument("--only", default="", help="compare only these scenarios (comma-separated)")
    d.add_argument("--max", type=int, default=30, help="differing paths shown per kind (default 30)")
    sub.add_parser("list", help="list the scenarios")
    w = sub.add_parser("_worker", help=argparse.SUPPRESS)
    w.add_argument("--tree", required=True)
    w.add_argument("--scenario", required=True, choices=list(SCENARIOS))
    w.add_argument("--result", required=True)
    w.add_argument("--keep-outputs", action="store_true")
    args = ap.parse_args()
    if args.cmd == "run":
        return cmd_run(args)
    if args.cmd == "diff":
        return cmd_diff(args)
    if args.cmd == "list":
        for k, v in SCENARIOS.items():
            print(f"{k:8s} {v}")
        return 0
    return worker(Path(args.tree).resolve(), args.scenario, Path(args.result), args.keep_outputs)


if __name__ == "__main__":
    sys.exit(main())
