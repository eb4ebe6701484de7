"""`fedcredit baseline` on a tiny run: pooled, bank-alone and federated models on the run's hold-out set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from runfixture import as_deployment, copy_run, tiny_run  # noqa: F401  (fixture)

from fedcredit.cli import main
from fedcredit.federation.history import read_history
from fedcredit.risk import baseline, rundir


@pytest.fixture(scope="module")
def result(tiny_run, tmp_path_factory):  # noqa: F811
    run_dir = copy_run(tiny_run, tmp_path_factory.mktemp("baseline") / "run")
    assert main(["baseline", str(run_dir)]) == 0
    return run_dir, json.loads((run_dir / "baseline.json").read_text())


def test_table_covers_every_model_on_the_runs_holdout(result):
    run_dir, table = result
    history = read_history(run_dir / "history.json")
    banks = history.banks
    assert set(table["bank-alone"]["banks"]) == set(banks)
    for name, m in table["bank-alone"]["banks"].items():
        assert m["training-rows"] == banks[name].training_rows
    assert table["pooled"]["training-rows"] == sum(b.training_rows for b in banks.values())
    assert table["epochs"] == 2 and table["seed"] == 7
    # The federated model scored on the rebuilt hold-out set reproduces the run's own figure: same split.
    last = history.last_round()
    assert table["federated"]["auc"] == pytest.approx(last.holdout_auc, abs=1e-6)
    assert table["federated"]["history-holdout-auc"] == last.holdout_auc
    assert table["holdout"]["rows"] == last.holdout["num-examples"]
    for row in [table["federated"], table["pooled"], *table["bank-alone"]["banks"].values()]:
        assert 0.5 < row["auc"] <= 1 and row["gini"] == pytest.approx(2 * row["auc"] - 1)
        assert 0 < row["brier"] < 0.25 and row["logloss"] > 0


def test_mean_and_worst_over_banks(result):
    _, table = result
    alone = table["bank-alone"]
    aucs = [m["auc"] for m in alone["banks"].values()]
    losses = [m["logloss"] for m in alone["banks"].values()]
    assert alone["mean"]["auc"] == pytest.approx(np.mean(aucs))
    assert alone["worst"]["auc"] == min(aucs)
    assert alone["worst"]["logloss"] == max(losses)  # worst loss is the highest


def test_markdown_table(result):
    run_dir, table = result
    md = (run_dir / "baseline.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | training rows | AUC | Gini | KS | Brier | log loss |")
    names = [r.split("|")[1].strip() for r in rows[2:]]
    assert names == [
        "federated (final model)",
        "pooled (all banks' rows)",
        *[f"bank alone: {b}" for b in table["bank-alone"]["banks"]],
        "bank alone: mean",
        "bank alone: worst",
    ]
    assert f"{table['pooled']['auc']:.4f}" in rows[3]


def test_training_is_seeded(result):
    run_dir, table = result
    run = rundir.load_run(run_dir)
    bank = rundir.simulated_banks(run)[0]
    test = rundir.holdout(run)
    model = baseline.train_alone(run.cfg, bank.train, table["epochs"])
    again = baseline.holdout_metrics(baseline.holdout_scores(model, test), test, run.cfg)
    assert again["auc"] == pytest.approx(table["bank-alone"]["banks"][bank.name]["auc"], abs=1e-9)


def test_report_shows_the_baseline_table(result):
    run_dir, table = result
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    section = page[page.index('<section id="baseline">') :]
    section = section[: section.index("</section>")]
    assert "Not computed" not in section
    for name in [
        "federated (final model)",
        "pooled (all banks&#x27; rows)",
        *table["bank-alone"]["banks"],
        "bank alone: worst",
    ]:
        assert name in section
    assert f"{table['pooled']['auc']:.4f}" in section and f"{table['bank-alone']['worst']['logloss']:.4f}" in section


def test_deployment_run_is_refused(tiny_run, tmp_path, capsys):  # noqa: F811
    run_dir = as_deployment(copy_run(tiny_run, tmp_path / "run"))
    assert main(["baseline", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fedcredit baseline: error:") and "simulation run" in err[-1]
    assert not (run_dir / "baseline.json").exists()


def test_truncated_model_is_named_as_damaged_not_missing(tiny_run, tmp_path, capsys):  # noqa: F811
    run_dir = copy_run(tiny_run, tmp_path / "run")
    model = run_dir / "model-final.keras"
    model.write_bytes(model.read_bytes()[:-100])
    assert main(["baseline", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"fedcredit baseline: error: {model} is not a valid Keras model file")
    assert "may be truncated or corrupt" in err and "not found" not in err.lower()
    assert not (run_dir / "baseline.json").exists()
    model.unlink()
    assert main(["baseline", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "model-final.keras does not exist" in err and "valid Keras" not in err


def test_not_a_run_dir(tmp_path, capsys):
    assert main(["baseline", str(tmp_path)]) == 2
    assert f"{tmp_path / 'config.json'} does not exist" in capsys.readouterr().err
