"""A tiny run directory like the ServerApp's, built in seconds without Flower.

A FedAvg loop over three simulated iid banks cut from 2,500 rows of the
embedded data (tiny model, 2 rounds x 1 local epoch) writes config.json,
history.json (through `fedcredit.federation.history`, as the coordinator), preprocessing.json
and model-final.keras. Built once per test session; tests copy it before
writing into it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedcredit.core import metrics
from fedcredit.core import model as mdl
from fedcredit.core.banks import holdout_set, load_bank, schema_of
from fedcredit.core.config import RunConfig, parse_run_config
from fedcredit.core.stats import compute_stats, merge_stats, preprocessing_from_stats
from fedcredit.federation.history import BankRecord, History, PhaseRecord, RoundEntry, read_history, write_history
from fedcredit.federation.outputs import write_json
from fedcredit.federation.scores import RoundScores, path_of, read_scores, write_scores

NUM_BANKS = 3
_BUILT: dict[str, Path] = {}


def tiny_config(data_path: Path, output_dir: Path) -> dict[str, Any]:
    return {
        **RunConfig().to_flower(),
        "data-path": str(data_path),
        "partitioning": "iid",
        "num-server-rounds": 2,
        "local-epochs": 1,
        "hidden-units": "8",
        "learning-rate": 0.01,
        "seed": 7,
        "output-dir": str(output_dir),
    }


def _hist(summary: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(summary["hist-bad"]), np.asarray(summary["hist-good"])


def _phase(per_bank: dict[str, dict[str, Any]], pooled: dict[str, Any]) -> PhaseRecord:
    return PhaseRecord(ok=list(per_bank), pooled=pooled, banks=per_bank)


def build_run(run_dir: Path, config: dict[str, Any]) -> Path:
    """FedAvg by hand over the simulated banks of `config`; writes a run directory."""
    cfg = parse_run_config(config)
    schema = schema_of(cfg)
    banks = [load_bank(cfg, {"partition-id": i, "num-partitions": NUM_BANKS}) for i in range(NUM_BANKS)]
    stats = [compute_stats(b.train, schema) for b in banks]
    prep = preprocessing_from_stats(merge_stats(stats), cfg.min_category_count)
    model = mdl.build_model(prep, mdl.ModelSpec.of(cfg, schema))
    trainer = mdl.Trainer(model, cfg.learning_rate)
    test = holdout_set(cfg)
    test_inputs, test_labels = mdl.to_inputs(test, model), test[schema.target].to_numpy()
    data = {
        b.name: (
            mdl.to_inputs(b.train, model),
            b.train[schema.target].to_numpy(),
            mdl.to_inputs(b.val, model),
            b.val[schema.target].to_numpy(),
        )
        for b in banks
    }
    weights = model.get_weights()
    rounds = [RoundEntry(0, holdout=metrics.exact(mdl.predict(model, test_inputs), test_labels, cfg.threshold))]
    start = metrics.summarise(mdl.predict(model, test_inputs), test_labels, cfg.threshold, cfg.histogram_bins)
    kept = [RoundScores(0, None, {}, _hist(start))]
    for r in range(1, cfg.num_server_rounds + 1):
        updates, train_metrics = [], {}
        for name, (x, y, _, _) in data.items():
            loss = trainer.fit(
                weights, x, y, mdl.FitOptions(cfg.local_epochs, cfg.batch_size, cfg.positive_weight, seed=cfg.seed + r)
            )
            updates.append((model.get_weights(), len(y)))
            train_metrics[name] = {"train-loss": loss, "num-examples": len(y)}
        total = sum(n for _, n in updates)
        weights = [sum(w[i] * n for w, n in updates) / total for i in range(len(weights))]
        model.set_weights(weights)
        summaries = {
            name: metrics.summarise(mdl.predict(model, xv), yv, cfg.threshold, cfg.histogram_bins)
            for name, (_, _, xv, yv) in data.items()
        }
        test_scores = mdl.predict(model, test_inputs)
        kept.append(
            RoundScores(
                r,
                tuple(np.sum([_hist(x)[i] for x in summaries.values()], axis=0) for i in (0, 1)),
                {n: _hist(s) for n, s in summaries.items()},
                _hist(metrics.summarise(test_scores, test_labels, cfg.threshold, cfg.histogram_bins)),
            )
        )
        rounds.append(
            RoundEntry(
                r,
                holdout=metrics.exact(test_scores, test_labels, cfg.threshold),
                aggregated=True,
                train=_phase(
                    train_metrics, {"train-loss": float(np.mean([m["train-loss"] for m in train_metrics.values()]))}
                ),
                evaluate=_phase(
                    {n: metrics.pooled([s]) for n, s in summaries.items()}, metrics.pooled(list(summaries.values()))
                ),
                seconds=0.1,
            )
        )
    run_dir.mkdir(parents=True)
    for scores in kept:
        write_scores(run_dir, scores)
    model.save(run_dir / "model-final.keras")
    write_json(run_dir / "config.json", cfg.to_flower())
    write_json(
        run_dir / "preprocessing.json", {"mean": prep.mean, "variance": prep.variance, "vocabulary": prep.vocabulary}
    )
    write_history(
        run_dir / "history.json",
        History(
            run_id="424242",
            status="completed",
            config=cfg.to_flower(),
            output_dir=str(run_dir),
            banks={b.name: BankRecord(str(i + 1), s.rows) for i, (b, s) in enumerate(zip(banks, stats))},
            rounds=rounds,
            best_round=cfg.num_server_rounds,
            model_final_sha256=hashlib.sha256((run_dir / "model-final.keras").read_bytes()).hexdigest(),
            seconds=1.0,
        ),
    )
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, raw_frame: pd.DataFrame) -> Path:
    """The pristine tiny run directory (copy it with `copy_run` before writing into it)."""
    if "tiny" not in _BUILT:
        base = tmp_path_factory.mktemp("tinyrun")
        data = base / "loans.csv"
        raw_frame.head(2500).to_csv(data, index=False)
        _BUILT["tiny"] = build_run(base / "run", tiny_config(data, base))
    return _BUILT["tiny"]


def copy_run(run_dir: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run_dir, dest))


def as_deployment(run_dir: Path) -> Path:
    """Rewrite a copied run as a deployment would leave it: own bank names, no hold-out set."""
    config = json.loads((run_dir / "config.json").read_text())
    config["holdout-eval"] = False
    history = read_history(run_dir / "history.json")
    history.config = config
    rename = {old: f"partner-{i}" for i, old in enumerate(history.banks)}
    history.banks = {rename[k]: v for k, v in history.banks.items()}
    for entry in history.rounds:
        entry.holdout = None
        for phase in (entry.train, entry.evaluate):
            if phase is not None:
                phase.ok = [rename[b] for b in phase.ok]
                phase.banks = {rename[k]: v for k, v in phase.banks.items()}
    for scores in read_scores(run_dir).values():
        if scores.pooled is None:  # hold-out only: a deployment has none
            path_of(run_dir, scores.round).unlink()
        else:
            renamed = {rename[k]: v for k, v in scores.banks.items()}
            write_scores(run_dir, RoundScores(scores.round, scores.pooled, renamed, None))
    write_json(run_dir / "config.json", config)
    write_history(run_dir / "history.json", history)
    return run_dir
