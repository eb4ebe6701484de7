"""A real deployment on 127.0.0.1: SuperLink with TLS and SuperNode authentication, one SuperNode per bank."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
from appcopy import copy_app

from fedcredit.core.schema import BUILTIN_SCHEMA_FILE
from fedcredit.deploy.consortium import LocalDeployment
from fedcredit.deploy.split import split_builtin

pytestmark = pytest.mark.e2e


def _history(out):
    (run_dir,) = list(out.iterdir())
    return run_dir, json.loads((run_dir / "history.json").read_text())


def test_three_banks_over_tls_with_the_apps_schema_and_their_own_columns(tmp_path):
    """Real bank files carry more columns; the schema travels in the app; strangers are kept out."""
    csvs = split_builtin(tmp_path / "banks", 4, "iid")
    for i, path in enumerate(csvs.values()):  # a customer id no schema knows: ignored, never sent
        frame = pd.read_csv(path, dtype=str)
        frame.insert(0, "customer_id", [f"C{i}-{n:06d}" for n in range(len(frame))])
        frame.to_csv(path, index=False)
    app = copy_app(tmp_path / "app")
    (app / "schemas").mkdir()
    (app / "schemas" / "loans.toml").write_text(BUILTIN_SCHEMA_FILE.read_text())
    # bank-3 keeps its own edited copy of the schema (one more agreed term): the coordinator must refuse it.
    other = tmp_path / "bank-3-schema.toml"
    other.write_text(
        BUILTIN_SCHEMA_FILE.read_text().replace(
            'term = ["term_36", "term_60"]', 'term = ["term_36", "term_60", "term_84"]'
        )
    )
    out = tmp_path / "out"
    with LocalDeployment(tmp_path / "dep", csvs, node_configs={"bank-3": {"schema-path": str(other)}}) as dep:
        rogue = dep.add_unregistered_bank("rogue")
        dep.wait_for_nodes(4)
        started = time.monotonic()
        run_id = dep.submit(
            {"num-server-rounds": 1, "output-dir": str(out), "schema-path": "schemas/loans.toml"}, app_dir=app
        )
        result = dep.wait(run_id, started)
        rogue.process.wait(timeout=120)  # it gives up: the SuperLink never lets it in
        online = dep.connected_nodes()
        superlink_log = (dep.workdir / "superlink.log").read_text()
    assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    assert rogue.process.returncode != 0 and len(online) == 4
    assert "No SuperNode found with the given public key" in superlink_log
    assert "Connection attempt failed" in rogue.log.read_text()
    run_dir, history = _history(out)
    assert history["status"] == "completed" and sorted(history["banks"]) == ["bank-0", "bank-1", "bank-2"]
    (reason,) = history["statistics-failed"].values()
    assert "schema" in reason and "differs from the coordinator's" in reason
    assert "C0-000" not in result.logs and "C0-000" not in (run_dir / "history.json").read_text()
    assert "holdout" not in history["rounds"][-1]  # the coordinator holds no data
    assert (run_dir / "model-final.keras").is_file()
    assert "BEGIN" not in (tmp_path / "dep" / "flwr-home" / "config.toml").read_text()  # no key material in the config


def _wait_for_round(out, server_round: int, started: float) -> None:
    while not list(out.glob(f"*/checkpoints/round-{server_round:03d}.npz")):
        assert time.monotonic() - started < 900, f"round {server_round} never finished"
        time.sleep(0.5)


def test_broken_csv_and_killed_node_do_not_stop_the_run_and_a_restarted_node_rejoins(tmp_path):
    csvs = split_builtin(tmp_path / "banks", 4, "iid")
    broken = pd.read_csv(csvs["bank-3"], dtype=str).drop(columns=["int_rate"])
    broken.to_csv(csvs["bank-3"], index=False)
    out = tmp_path / "out"
    with LocalDeployment(tmp_path / "dep", csvs) as dep:
        dep.wait_for_nodes(4)
        started = time.monotonic()
        run_id = dep.submit({"num-server-rounds": 4, "output-dir": str(out), "round-timeout": 240.0})
        _wait_for_round(out, 1, started)
        dep.kill_bank("bank-2")  # mid-run: round 2 goes on without it
        _wait_for_round(out, 2, started)
        dep.start_supernode("bank-2")  # same key, same CSV: it rejoins for the later rounds
        result = dep.wait(run_id, started)
        bank3_log = dep.banks["bank-3"].log.read_text()
    assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    _, history = _history(out)
    ((broken_node, reason),) = history["statistics-failed"].items()
    assert "int_rate" in reason and "bank-3" in reason  # the reason names the column and its file
    assert "int_rate" in bank3_log  # the bank sees the reason in its own SuperNode log
    rounds = {r["round"]: r for r in history["rounds"]}
    assert "bank-2" in rounds[1]["train"]["ok"]
    # Its statistics never reached the model, so it is not asked to train on it either.
    assert all(
        broken_node not in r["train"]["failed"] and broken_node not in r["train"]["ok"]
        for r in rounds.values()
        if r["round"] > 0
    )
    assert "bank-2" not in rounds[2]["train"]["ok"] and "bank-2" not in rounds[2]["evaluate"]["ok"]
    assert sorted(rounds[2]["train"]["ok"]) == ["bank-0", "bank-1"]
    assert sorted(rounds[4]["train"]["ok"]) == ["bank-0", "bank-1", "bank-2"]
    assert history["status"] == "completed"
