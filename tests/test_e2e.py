"""The real app through `flwr run` on a private local SuperLink (simulation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from appcopy import copy_app

from fedcredit.core import metrics
from fedcredit.core import model as mdl
from fedcredit.core.banks import load_bank
from fedcredit.core.config import parse_run_config
from fedcredit.deploy.localrun import LocalFlower
from fedcredit.federation.outputs import load_checkpoint

pytestmark = pytest.mark.e2e
SMALL = {"num-server-rounds": 2, "partitioning": "iid", "local-epochs": 2}


@pytest.fixture(scope="module")
def flower(tmp_path_factory):
    with LocalFlower(tmp_path_factory.mktemp("flwr")) as local:
        yield local


def _run_dir(out) -> Path:
    dirs = list(out.iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_simulation_completes_with_outputs_and_exact_pooled_auc(flower, tmp_path):
    out = tmp_path / "out"
    run_config = {**SMALL, "output-dir": str(out)}
    result = flower.run(run_config, "num-supernodes=3 client-resources-num-cpus=1")
    assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    run_dir = _run_dir(out)
    assert str(run_dir) in result.logs  # the log says where the outputs are
    for name in (
        "config.json",
        "history.json",
        "preprocessing.json",
        "model-final.keras",
        "model-best.keras",
        "checkpoints/round-001.npz",
        "checkpoints/round-002.npz",
    ):
        assert (run_dir / name).is_file(), name
    assert "fedcredit round 2/2: banks train 3/3 ok, evaluate 3/3 ok" in result.logs
    _assert_tensorboard_scalars(run_dir / "tensorboard")

    history = json.loads((run_dir / "history.json").read_text())
    assert history["status"] == "completed" and [r["round"] for r in history["rounds"]] == [0, 1, 2]
    last = history["rounds"][-1]
    assert len(last["evaluate"]["banks"]) == 3 and not last["train"]["failed"]
    assert 0.65 < last["holdout"]["auc"] < 0.9 and 0.5 < last["evaluate"]["pooled"]["auc"] < 0.95
    assert 0.0 < last["evaluate"]["pooled"]["brier"] < 0.1

    # Pooled validation AUC from histograms equals the exact AUC on all banks' validation rows.
    model = mdl.load(str(run_dir / "model-final.keras"))
    cfg = parse_run_config(run_config)
    banks = [load_bank(cfg, {"partition-id": i, "num-partitions": 3}) for i in range(3)]
    val = pd.concat([b.val for b in banks])
    exact = metrics.exact_auc(mdl.score(model, val), val["Class"].to_numpy())
    assert last["evaluate"]["pooled"]["auc"] == pytest.approx(exact, abs=1e-3)
    # The last checkpoint holds the final global weights.
    final = load_checkpoint(run_dir / "checkpoints" / "round-002.npz")
    assert all(np.array_equal(a, b) for a, b in zip(final, model.get_weights()))
    # The saved model scores raw applicant columns.
    raw = val.drop(columns=["Class"]).head(10)
    assert np.all((mdl.score(model, raw) > 0) & (mdl.score(model, raw) < 1))


def _assert_tensorboard_scalars(log_dir) -> None:
    import tensorflow as tf

    tags = {}
    for event_file in log_dir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                tags.setdefault(value.tag, set()).add(event.step)
    assert tags["pooled/auc"] == {1, 2} and tags["holdout/auc"] == {1, 2}
    assert sum(1 for t in tags if t.startswith("bank/") and t.endswith("/auc")) == 3


def test_fedprox_with_client_side_privacy_runs_and_reports_epsilon(flower, tmp_path):
    out = tmp_path / "out"
    result = flower.run(
        {
            "num-server-rounds": 1,
            "partitioning": "iid",
            "local-epochs": 1,
            "output-dir": str(out),
            "strategy.name": "fedprox",
            "privacy.mode": "client-fixed",
            "privacy.noise-multiplier": 0.5,
            "privacy.clipping-norm": 5.0,
        },
        "num-supernodes=3 client-resources-num-cpus=1",
    )
    assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    history = json.loads((_run_dir(out) / "history.json").read_text())
    assert history["strategy"] == {
        "name": "fedprox",
        "flower-class": "DifferentialPrivacyClientSideFixedClipping",
        "privacy": "client-fixed",
    }
    assert history["privacy"]["epsilon"] > 0 and history["privacy"]["releases"] == 1
    assert "epsilon" in result.logs and "fixedclipping_mod: parameters are clipped" in result.logs


@pytest.fixture(scope="module")
def default_run(flower, tmp_path_factory):
    """`flwr run .` as a newcomer types it: Flower's default federation (2 banks), the default config."""
    out = tmp_path_factory.mktemp("default") / "out"
    result = flower.run({"output-dir": str(out)})
    assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    return result, json.loads((_run_dir(out) / "history.json").read_text())


def test_plain_flwr_run_on_the_default_federation_completes_with_a_readable_log(default_run):
    result, history = default_run
    assert len(history["banks"]) == 2 and len(history["rounds"]) == 6
    assert history["rounds"][-1]["holdout"]["auc"] > 0.7
    assert "fedcredit round 5/5: banks train 2/2 ok, evaluate 2/2 ok" in result.logs
    # Ray's start-up FutureWarning (337 characters) and TensorFlow's oneDNN notice (301 with Ray's actor prefix)
    # are printed by the libraries as they load, before the app's code runs: not ours to shorten.
    foreign = ("site-packages/ray/", "oneDNN custom operations are on")
    lines = [line for line in result.logs.splitlines() if not any(f in line for f in foreign)]
    assert max(len(line) for line in lines) <= 300, sorted(lines, key=len)[-3:]
    assert '"vocabulary"' not in result.logs  # the preprocessing travels in its own record, not in the log
    personal = history["personalisation"]  # on by default: both banks compared their three models and kept one
    assert sorted(personal["banks"]) == sorted(history["banks"]) and not personal["failed"]
    assert all(Path(r["model"]).is_file() for r in personal["banks"].values())
    print(f"default federation: {result.seconds:.1f} s, hold-out AUC {history['rounds'][-1]['holdout']['auc']:.4f}")


def test_secure_mode_on_the_default_federation_matches_plain_mode(flower, default_run, tmp_path):
    plain_result, plain = default_run
    out = tmp_path / "out"
    result = flower.run({"output-dir": str(out), "privacy.secure-aggregation": True})
    assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    secure = json.loads((_run_dir(out) / "history.json").read_text())
    assert all(entry["aggregated"] for entry in secure["rounds"][1:])
    # No bank's own figures reached the coordinator: per-bank records are empty, personalisation only summed.
    assert not any(
        m for e in secure["rounds"][1:] for phase in ("train", "evaluate") for m in e[phase]["banks"].values()
    )
    assert secure["personalisation"]["banks"] == {} and sum(secure["personalisation"]["kept-counts"].values()) == 2
    auc = [h["rounds"][-1]["holdout"]["auc"] for h in (plain, secure)]
    print(
        f"default federation: hold-out AUC plain {auc[0]:.4f} secure {auc[1]:.4f}; seconds per round plain "
        f"{[e['seconds'] for e in plain['rounds'][1:]]} secure {[e['seconds'] for e in secure['rounds'][1:]]}; "
        f"whole runs {plain_result.seconds:.1f} s and {result.seconds:.1f} s"
    )
    assert abs(auc[0] - auc[1]) < 0.005


def test_a_bank_boosting_its_update_x1000_every_round_cannot_wreck_the_model(flower, tmp_path):
    out = tmp_path / "out"
    app = copy_app(tmp_path / "app", boost=1000.0)
    result = flower.run({"output-dir": str(out)}, "num-supernodes=4 client-resources-num-cpus=1", app_dir=app)
    assert result.completed, f"{result.status}: {result.details}\n{result.logs[-3000:]}"
    history = json.loads((_run_dir(out) / "history.json").read_text())
    hostile = next(name for name in history["banks"] if name == "northeast")  # partition 0
    for entry in history["rounds"][1:]:
        assert hostile in entry["train"]["clipped"] and entry["train"]["clipped"][hostile] < 0.01
    assert history["rounds"][-1]["holdout"]["auc"] >= 0.73
    print(f"boosted x1000: hold-out AUC {history['rounds'][-1]['holdout']['auc']:.4f}")


def test_unservable_split_fails_the_run_with_one_line(flower, tmp_path):
    out = tmp_path / "out"
    # 1 % of the rows left for 3 banks: fewer than 50 rows each, which no partitioning can train on.
    result = flower.run(
        {"num-server-rounds": 1, "partitioning": "iid", "test-fraction": 0.99, "output-dir": str(out)},
        "num-supernodes=3 client-resources-num-cpus=1",
    )
    assert result.status == "finished:failed"
    history = json.loads((_run_dir(out) / "history.json").read_text())
    assert history["status"] == "failed"
    assert "PartitionError" in history["reason"] and "(3 banks)" in history["reason"]
    assert "0 bank(s) sent usable statistics" in history["reason"] and "\n" not in history["reason"]
    # The banks answer with their one-line reason: the only traceback is Flower's for the failed ServerApp.
    assert result.logs.count("Traceback") <= 1 and "ClientAppException" not in result.logs


def test_compare_runs_every_variant_inside_one_flwr_run(tmp_path):
    from fedcredit.cli import main

    out = tmp_path / "cmp"
    argv = ["compare", "--strategies", "fedavg", "fedprox", "--seeds", "42", "7", "--out", str(out)]
    code = main(
        [*argv, "--set", "num-server-rounds=1", "personalize.epochs=0", "--federation-config", "num-supernodes=3"]
    )
    assert code == 0
    table = pd.read_csv(out / "comparison.csv")
    assert sorted(zip(table["variant"], table["seed"])) == [
        ("fedavg", 7),
        ("fedavg", 42),
        ("fedprox", 7),
        ("fedprox", 42),
    ]
    assert (table["status"] == "completed").all() and table["hold-out AUC"].between(0.5, 1).all()
    runs = sorted((out / "runs").iterdir(), key=lambda r: r.name.rsplit("-", 1)[1])
    # One Flower run (one run id), four variants numbered 001 to 004.
    assert len({r.name.split("-run")[1].rsplit("-", 1)[0] for r in runs}) == 1
    assert [r.name.rsplit("-", 1)[1] for r in runs] == ["001", "002", "003", "004"]
    configs = [json.loads((r / "config.json").read_text()) for r in runs]
    assert [(c["strategy.name"], c["seed"], c["sweep"]) for c in configs] == [
        ("fedavg", 42, ""),
        ("fedavg", 7, ""),
        ("fedprox", 42, ""),
        ("fedprox", 7, ""),
    ]
