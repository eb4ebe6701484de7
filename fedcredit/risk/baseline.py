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

The run directory is read by `fedcredit.risk.rundir`; the command line is
`fedcredit.cli.baseline`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcredit.core.config import RunConfig
from fedcredit.federation.outputs import write_json
from fedcredit.risk.rundir import Run, holdout, load_final_model, one_line, simulated_banks, target_of

METRICS = ("auc", "gini", "ks", "brier", "logloss")
LABELS = {"auc": "AUC", "gini": "Gini", "ks": "KS", "brier": "Brier", "logloss": "log loss"}
HIGHER_IS_BETTER = {"auc": True, "gini": True, "ks": True, "brier": False, "logloss": False}


# --- the baselines --------------------------------------------------------------


def train_alone(cfg: RunConfig, train: pd.DataFrame, epochs: int) -> Any:
    """The run's architecture trained on these rows with their own statistics, seeded."""
    from fedcredit.core import model as mdl
    from fedcredit.core.banks import schema_of
    from fedcredit.core.stats import compute_stats, preprocessing_from_stats

    schema = schema_of(cfg)
    prep = preprocessing_from_stats(compute_stats(train, schema), cfg.min_category_count)
    model = mdl.build_model(prep, mdl.ModelSpec.of(cfg, schema))
    options = mdl.FitOptions(
        epochs=epochs, batch_size=cfg.batch_size, positive_weight=cfg.positive_weight, seed=cfg.seed
    )
    mdl.Trainer(model, cfg.learning_rate).fit(
        model.get_weights(), mdl.to_inputs(train, model), train[schema.target].to_numpy(), options
    )
    return model


def holdout_scores(model: Any, test: pd.DataFrame) -> np.ndarray:
    from fedcredit.core import model as mdl

    return mdl.score(model, test)


def holdout_metrics(scores: np.ndarray, test: pd.DataFrame, cfg: RunConfig) -> dict[str, float]:
    from fedcredit.core import metrics
    from fedcredit.core.banks import schema_of

    m = metrics.exact(scores, test[schema_of(cfg).target].to_numpy(), cfg.threshold)
    return {k: float(m[k]) for k in METRICS}


def paired_auc(scores: np.ndarray, federated: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """This model's AUC minus the federated model's, on the same hold-out loans: paired DeLong.

    Both models scored the same loans, so their AUC errors are correlated;
    DeLong's covariance accounts for it (an unpaired test would not).
    """
    from fedcredit.core import metrics

    aucs, cov = metrics.delong([scores, federated], labels)
    se = math.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)) if np.isfinite(cov).all() else math.nan
    diff = float(aucs[0] - aucs[1])
    return {
        "auc-se": math.sqrt(cov[0, 0]) if np.isfinite(cov[0, 0]) else math.nan,
        "auc-minus-federated": diff,
        "se": se,
        "beyond-se": bool(math.isfinite(se) and abs(diff) > se),
        "beyond-2-se": bool(math.isfinite(se) and abs(diff) > 2 * se),
    }


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
    labels = test[target_of(run)].to_numpy()
    federated_scores = holdout_scores(load_final_model(run), test)
    federated = holdout_metrics(federated_scores, test, cfg)
    federated.update({"auc-se": paired_auc(federated_scores, federated_scores, labels)["auc-se"]})
    pooled_train = pd.concat([b.train for b in banks], ignore_index=True)
    say(f"pooled: training on {len(pooled_train)} rows for {epochs} epochs")
    pooled_scores = holdout_scores(train_alone(cfg, pooled_train, epochs), test)
    pooled = {
        **holdout_metrics(pooled_scores, test, cfg),
        **paired_auc(pooled_scores, federated_scores, labels),
    }
    alone: dict[str, dict[str, Any]] = {}
    for bank in banks:
        say(f"bank alone: {bank.name}, {len(bank.train)} rows")
        try:
            scores = holdout_scores(train_alone(cfg, bank.train, epochs), test)
            alone[bank.name] = {
                "training-rows": len(bank.train),
                **holdout_metrics(scores, test, cfg),
                **paired_auc(scores, federated_scores, labels),
            }
        except ValueError as err:  # e.g. a numeric column this bank never fills: no model of its own
            say(f"bank alone: {bank.name} cannot train a model alone: {one_line(err)}")
            alone[bank.name] = {
                "training-rows": len(bank.train),
                **{k: math.nan for k in METRICS},
                "error": one_line(err),
            }
    last = run.history.last_round()
    return {
        "run-id": run.history.run_id,
        "run-dir": str(run.dir),
        "seed": cfg.seed,
        "epochs": epochs,
        "architecture": {
            "hidden-units": cfg.hidden_units,
            "dropout": cfg.dropout,
            "l2": cfg.l2,
            "learning-rate": cfg.learning_rate,
            "batch-size": cfg.batch_size,
            "positive-weight": cfg.positive_weight,
        },
        "holdout": {"rows": len(test), "default-rate": float(labels.mean())},
        "metrics": list(METRICS),
        "comparison": "each model's hold-out AUC minus the federated model's, with the standard error of the "
        "difference from paired DeLong (same loans, correlated errors); beyond-se / beyond-2-se: the difference "
        "exceeds one / two standard errors (two standard errors: about a 5 % two-sided test)",
        "federated": {
            "training-rows": len(pooled_train),
            **federated,
            "history-holdout-auc": last.holdout_auc if last is not None else None,
        },
        "pooled": {"training-rows": len(pooled_train), **pooled},
        "bank-alone": {"banks": alone, **summarise_banks(alone)},
        "seconds": round(time.monotonic() - started, 1),
    }


# --- writing ----------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.4f}"


def table_rows(result: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(model, training rows, metrics) in display order; shared with the report."""
    rows = [
        ("federated (final model)", str(result["federated"]["training-rows"]), result["federated"]),
        ("pooled (all banks' rows)", str(result["pooled"]["training-rows"]), result["pooled"]),
    ]
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
    lines += [
        "",
        "Worst: each column on its own, the lowest AUC, Gini and KS and the highest Brier score and "
        "log loss over the banks. AUC, Gini, KS: higher is better; Brier, log loss: lower is better.",
        "",
    ]
    return "\n".join(lines)


def reproduction_warning(result: dict[str, Any], tolerance: float = 1e-4) -> str | None:
    """Why the federated row may not be the run's model on the run's data (None: it reproduces history.json)."""
    recorded, actual = result["federated"]["history-holdout-auc"], result["federated"]["auc"]
    if recorded is None or abs(recorded - actual) <= tolerance:
        return None
    return (
        f"the final model's hold-out AUC {actual:.4f} differs from the last round's {recorded:.4f} in "
        "history.json: has the data changed since the run?"
    )


def write(run_dir: Path, result: dict[str, Any]) -> tuple[Path, Path]:
    """baseline.json (for the report) and baseline.md (for people) in the run directory."""
    json_path, md_path = run_dir / "baseline.json", run_dir / "baseline.md"
    write_json(json_path, result)
    md_path.write_text(to_markdown(result), encoding="utf-8")
    return json_path, md_path
