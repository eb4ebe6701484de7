"""`fedcredit baseline RUN_DIR`: is the federated model worth it?

On exactly the split and hold-out set of a simulation run, compare three
models: the federated run's final model; the same architecture trained on
all banks' training rows pooled (what the banks may not do, the upper
reference); and the same architecture trained by each bank alone on its own
rows with its own statistics (what each bank can do without the
federation). Pooled and bank-alone models get the federation's epoch budget
(num-server-rounds x local-epochs) and the run's seed. The table (AUC, Gini,
KS, Brier, log loss on the hold-out set) goes to `baseline.md` and
`baseline.json` in the run directory.

Also home of the run-directory readers that `fedcredit report` shares.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcredit.core.config import ConfigError, RunConfig, parse_run_config
from fedcredit.core.loading import DataValidationError
from fedcredit.core.partition import PartitionError
from fedcredit.core.schema import SchemaError
from fedcredit.federation.outputs import write_json

METRICS = ("auc", "gini", "ks", "brier", "logloss")
LABELS = {"auc": "AUC", "gini": "Gini", "ks": "KS", "brier": "Brier", "logloss": "log loss"}
HIGHER_IS_BETTER = {"auc": True, "gini": True, "ks": True, "brier": False, "logloss": False}


class RunDirError(ValueError):
    """A run directory cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Run:
    """What a run directory holds, read once."""

    dir: Path
    config: dict[str, Any]
    cfg: RunConfig
    history: dict[str, Any]

    @property
    def num_banks(self) -> int:
        """Federation size: banks that sent statistics plus those that failed to."""
        return len(self.history.get("banks") or {}) + len(self.history.get("statistics-failed") or {})

    @property
    def model_path(self) -> Path:
        return self.dir / "model-final.keras"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunDirError(f"{path} does not exist: is {path.parent} a fedcredit run directory?")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise RunDirError(f"{path} does not hold a JSON object")
    return value


def load_run(run_dir: str | Path) -> Run:
    """Config and history of a run directory, checked enough to be used."""
    path = Path(run_dir).expanduser().resolve()
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist")
    config = _read_json(path / "config.json")
    history = _read_json(path / "history.json")
    try:
        cfg = parse_run_config(config)
    except ConfigError as err:
        raise RunDirError(f"{path / 'config.json'}: {err}") from err
    if not isinstance(history.get("rounds"), list):
        raise RunDirError(f"{path / 'history.json'} has no 'rounds' list: not a fedcredit history")
    return Run(path, config, cfg, history)


def one_line(err: Exception) -> str:
    """Multi-line validation errors as one line for stderr."""
    if isinstance(err, DataValidationError):
        return f"{err.path}: " + "; ".join(str(p) for p in err.problems if p.blocking)
    return " ".join(str(err).split())


def simulated_banks(run: Run) -> list[Any]:
    """The run's simulated banks (train and validation rows), rebuilt from its config.

    Refuses a run whose banks are not the simulation's (a deployment): its
    rows never existed in one place and cannot be rebuilt.
    """
    from fedcredit.core.banks import load_bank

    recorded = set(run.history.get("banks") or {})
    if run.num_banks < 1:
        raise RunDirError(f"{run.dir / 'history.json'} records no banks: the run stopped before statistics")
    try:
        banks = [load_bank(run.cfg, {"partition-id": i, "num-partitions": run.num_banks}) for i in range(run.num_banks)]
    except (DataValidationError, SchemaError, PartitionError, OSError) as err:
        raise RunDirError(f"{run.dir}: its banks cannot be rebuilt as simulated banks from its config (a deployment "
                          f"run? this needs a simulation run): {one_line(err)}") from err
    names = {b.name for b in banks}
    if not recorded <= names:
        raise RunDirError(
            f"{run.dir}: its banks {sorted(recorded)} are not the simulated banks {sorted(names)} of its config "
            "(a deployment run?): this needs a simulation run"
        )
    return banks


def holdout(run: Run) -> pd.DataFrame:
    from fedcredit.core.banks import holdout_set

    try:
        return holdout_set(run.cfg)
    except (DataValidationError, SchemaError, PartitionError, OSError) as err:
        raise RunDirError(f"cannot rebuild the hold-out set of {run.dir}: {one_line(err)}") from err


def load_final_model(run: Run) -> Any:
    from fedcredit.core import model as mdl

    if not run.model_path.is_file():
        raise RunDirError(f"{run.model_path} does not exist: the run did not finish (status {run.history.get('status')!r})")
    try:
        return mdl.load(str(run.model_path))
    except Exception as err:  # Keras raises many types for a damaged file
        raise RunDirError(f"{run.model_path} cannot be loaded: {one_line(err)[:300]}") from err


def target_of(run: Run) -> str:
    from fedcredit.core.banks import schema_of

    try:
        return schema_of(run.cfg).target
    except SchemaError as err:
        raise RunDirError(f"{run.dir / 'config.json'}: {one_line(err)}") from err


def quiet_tensorflow() -> None:
    """Keep TensorFlow's retracing warnings (harmless here: one model per bank) off the user's terminal."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


# --- the baselines --------------------------------------------------------------

def train_alone(cfg: RunConfig, train: pd.DataFrame, epochs: int) -> Any:
    """The run's architecture trained on these rows with their own statistics, seeded."""
    from fedcredit.core import model as mdl
    from fedcredit.core.banks import schema_of
    from fedcredit.core.stats import compute_stats, preprocessing_from_stats

    schema = schema_of(cfg)
    prep = preprocessing_from_stats(compute_stats(train, schema), cfg.min_category_count)
    model = mdl.build_model(prep, schema.numeric, schema.categorical, cfg.hidden_layers, cfg.dropout, cfg.l2,
                            cfg.learning_rate, cfg.seed)
    mdl.fit(model, model.get_weights(), mdl.to_inputs(train, model), train[schema.target].to_numpy(),
            epochs, cfg.batch_size, cfg.positive_weight, cfg.seed)
    return model


def holdout_metrics(model: Any, test: pd.DataFrame, cfg: RunConfig) -> dict[str, float]:
    from fedcredit.core import metrics
    from fedcredit.core import model as mdl
    from fedcredit.core.banks import schema_of

    m = metrics.exact(mdl.score(model, test), test[schema_of(cfg).target].to_numpy(), cfg.threshold)
    return {k: float(m[k]) for k in METRICS}


def summarise_banks(per_bank: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and worst of each metric over banks (worst: lowest AUC/Gini/KS, highest Brier/log loss)."""
    values = {k: np.array([m[k] for m in per_bank.values()], dtype=np.float64) for k in METRICS}
    if not any(np.isfinite(v).any() for v in values.values()):
        return {"mean": {k: math.nan for k in METRICS}, "worst": {k: math.nan for k in METRICS}}
    return {
        "mean": {k: float(np.nanmean(v)) for k, v in values.items()},
        "worst": {k: float(np.nanmin(v) if HIGHER_IS_BETTER[k] else np.nanmax(v)) for k, v in values.items()},
    }


def compute(run: Run, log: Any = None) -> dict[str, Any]:
    """The baseline table of a run, as written to baseline.json."""
    say = log or (lambda msg: None)
    cfg = run.cfg
    epochs = cfg.num_server_rounds * cfg.local_epochs
    banks = simulated_banks(run)
    test = holdout(run)
    started = time.monotonic()
    federated = holdout_metrics(load_final_model(run), test, cfg)
    pooled_train = pd.concat([b.train for b in banks], ignore_index=True)
    say(f"pooled: training on {len(pooled_train)} rows for {epochs} epochs")
    pooled = holdout_metrics(train_alone(cfg, pooled_train, epochs), test, cfg)
    alone: dict[str, dict[str, Any]] = {}
    for bank in banks:
        say(f"bank alone: {bank.name}, {len(bank.train)} rows")
        try:
            model = train_alone(cfg, bank.train, epochs)
            alone[bank.name] = {"training-rows": len(bank.train), **holdout_metrics(model, test, cfg)}
        except ValueError as err:  # e.g. a numeric column this bank never fills: no model of its own
            say(f"bank alone: {bank.name} cannot train a model alone: {one_line(err)}")
            alone[bank.name] = {"training-rows": len(bank.train), **{k: math.nan for k in METRICS}, "error": one_line(err)}
    labels = test[target_of(run)].to_numpy()
    last = run.history["rounds"][-1] if run.history["rounds"] else {}
    return {
        "run-id": run.history.get("run-id"),
        "run-dir": str(run.dir),
        "seed": cfg.seed,
        "epochs": epochs,
        "architecture": {"hidden-units": cfg.hidden_units, "dropout": cfg.dropout, "l2": cfg.l2,
                         "learning-rate": cfg.learning_rate, "batch-size": cfg.batch_size,
                         "positive-weight": cfg.positive_weight},
        "holdout": {"rows": len(test), "default-rate": float(labels.mean())},
        "metrics": list(METRICS),
        "federated": {"training-rows": len(pooled_train), **federated,
                      "history-holdout-auc": (last.get("holdout") or {}).get("auc")},
        "pooled": {"training-rows": len(pooled_train), **pooled},
        "bank-alone": {"banks": alone, **summarise_banks(alone)},
        "seconds": round(time.monotonic() - started, 1),
    }


# --- writing ----------------------------------------------------------------------

def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.4f}"


def table_rows(result: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(model, training rows, metrics) in display order; shared with the report."""
    rows = [("federated (final model)", str(result["federated"]["training-rows"]), result["federated"]),
            ("pooled (all banks' rows)", str(result["pooled"]["training-rows"]), result["pooled"])]
    for name, m in result["bank-alone"]["banks"].items():
        rows.append((f"bank alone: {name}", str(m["training-rows"]), m))
    rows.append(("bank alone: mean", "", result["bank-alone"]["mean"]))
    rows.append(("bank alone: worst", "", result["bank-alone"]["worst"]))
    return rows


def to_markdown(result: dict[str, Any]) -> str:
    h = result["holdout"]
    lines = [
        f"# Baselines of run {result['run-id']}",
        "",
        f"Hold-out set of the run: {h['rows']} loans, {100 * h['default-rate']:.1f} % defaulted (seed {result['seed']}). "
        f"Pooled and bank-alone models: the run's architecture (hidden units {result['architecture']['hidden-units']}), "
        f"{result['epochs']} epochs (num-server-rounds x local-epochs), seed {result['seed']}; each bank alone uses "
        "only its own training rows and its own preprocessing statistics.",
        "",
        "| model | training rows | " + " | ".join(LABELS[k] for k in METRICS) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in METRICS) + " |",
    ]
    for name, rows, m in table_rows(result):
        lines.append(f"| {name} | {rows} | " + " | ".join(_fmt(m.get(k)) for k in METRICS) + " |")
    failed = {b: m["error"] for b, m in result["bank-alone"]["banks"].items() if m.get("error")}
    if failed:
        lines += [""] + [f"- bank alone: {b} could not train a model alone: {why}" for b, why in failed.items()]
    lines += ["", "Worst: each column on its own, the lowest AUC, Gini and KS and the highest Brier score and "
              "log loss over the banks. AUC, Gini, KS: higher is better; Brier, log loss: lower is better.", ""]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a simulation run's output directory")


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()

    def say(msg: str) -> None:
        print(f"fedcredit baseline: {msg}", file=sys.stderr, flush=True)

    try:
        run_dir = load_run(args.run_dir)
        result = compute(run_dir, say)
    except RunDirError as err:
        print(f"fedcredit baseline: error: {err}", file=sys.stderr)
        return 2
    recorded = result["federated"]["history-holdout-auc"]
    if recorded is not None and abs(recorded - result["federated"]["auc"]) > 1e-4:
        say(f"warning: the final model's hold-out AUC {result['federated']['auc']:.4f} differs from the last round's "
            f"{recorded:.4f} in history.json: has the data changed since the run?")
    write_json(run_dir.dir / "baseline.json", result)
    (run_dir.dir / "baseline.md").write_text(to_markdown(result), encoding="utf-8")
    print(to_markdown(result))
    say(f"wrote {run_dir.dir / 'baseline.md'} and baseline.json ({result['seconds']} s)")
    return 0
