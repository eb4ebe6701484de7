"""history.json through `fedcredit.federation.history`: every key survives a round trip, old files read, bad ones name the key."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from fedcredit.federation.history import (
    BankRecord,
    History,
    HistoryError,
    PhaseRecord,
    RoundEntry,
    read_history,
    write_history,
)


def _metrics(auc: float, n: int) -> dict[str, Any]:
    return {"num-examples": n, "default-rate": 0.2, "auc": auc, "gini": 2 * auc - 1, "ks": 0.31, "logloss": 0.48}


def _phase(ok: list[str], pooled: dict[str, Any] | None, banks: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "ok": ok,
        "failed": {},
        "refused": {},
        "clipped": {},
        "missing": [],
        "pooled": pooled,
        "banks": banks,
        **more,
    }


def server_history() -> dict[str, Any]:
    """A DP run with a failing bank as `fedcredit.federation.server` writes it, plus keys a newer writer may add."""
    privacy = {
        "mode": "server-fixed",
        "noise-multiplier": 1.0,
        "epsilon": 2.5,
        "delta": 1e-5,
        "releases": 2,
        "accounting": "rdp",
    }
    return {
        "run-id": "77",
        "status": "failed",
        "config": {"num-server-rounds": 2, "strategy.name": "fedavg"},
        "output-dir": "/runs/20250101-000000-run77",
        "schema-sha256": "cd" * 32,
        "banks": {
            "acme": {"node-id": "11", "training-rows": 900, "region": "west"},
            "bravo": {"node-id": "12", "training-rows": 700},
        },
        "rounds": [
            {"round": 0, "holdout": _metrics(0.5, 500)},
            {
                "round": 1,
                "holdout": _metrics(0.68, 500),
                "aggregated": True,
                "train": {
                    **_phase(
                        ["acme", "bravo"],
                        {"train-loss": 0.52, "num-examples": 1600},
                        {
                            "acme": {"train-loss": 0.5, "num-examples": 900},
                            "bravo": {"train-loss": 0.55, "num-examples": 700},
                        },
                    ),
                    "clipped": {"bravo": 0.81},
                },
                "evaluate": _phase(
                    ["acme", "bravo"],
                    _metrics(0.69, 400),
                    {"acme": _metrics(0.7, 220), "bravo": _metrics(0.66, 180)},
                    **{"hash-checked": ["acme", "bravo"]},
                ),
                "seconds": 3.25,
                "privacy": {**privacy, "epsilon": 1.7},
                "clipping-norm": 2.0,
            },
            {
                "round": 2,
                "holdout": {**_metrics(0.7, 500), "brier": None},
                "aggregated": False,
                "train": {
                    **_phase(
                        ["acme"],
                        {"train-loss": 0.5, "num-examples": 900},
                        {"acme": {"train-loss": 0.5, "num-examples": 900}},
                        **{"not-aggregated": "differential privacy: a sampled bank failed"},
                    ),
                    "failed": {"bravo": "ValueError: column 'grade' is empty"},
                },
                "evaluate": {
                    **_phase([], None, {}),
                    "refused": {"acme": "reply refused: 'auc' is not a number"},
                    "missing": ["bravo"],
                },
                "seconds": 61.0,
                "privacy": privacy,
            },
        ],
        "statistics-failed": {"node-13": "no reply within 60 s"},
        "strategy": {
            "name": "fedavg",
            "flower-class": "DifferentialPrivacyServerSideFixedClipping",
            "privacy": "server-fixed",
            "wrapped": "FedAvg",
        },
        "privacy": privacy,
        "best-round": 1,
        "model-final-sha256": "ab" * 32,
        "reason": "FederationError: no round was evaluated",
        "seconds": 64.5,
        "ignored-keys": ["strategy.eta"],
        "coordinator": {"host": "bank-consortium"},
    }


def _write(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def test_round_trip_keeps_every_key_including_unknown_ones(tmp_path):
    original = server_history()
    history = read_history(_write(tmp_path / "history.json", original))
    write_history(tmp_path / "again.json", history)
    assert json.loads((tmp_path / "again.json").read_text()) == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.json", "history.json"]  # no temporary file left
    # The typed view of the same file.
    assert history.ignored_keys == ["strategy.eta"]
    assert history.extra == {"coordinator": {"host": "bank-consortium"}}
    assert history.schema_sha256 == "cd" * 32
    assert history.banks["acme"] == BankRecord("11", 900, {"region": "west"})
    assert (
        history.num_banks == 3 and history.epsilon == 2.5 and history.strategy.flower_class.startswith("Differential")
    )
    first, last = history.trained_rounds
    assert first.evaluate.extra == {"hash-checked": ["acme", "bravo"]} and first.train.clipped == {"bravo": 0.81}
    assert first.extra == {"clipping-norm": 2.0} and first.pooled_auc == 0.69 and first.holdout_auc == 0.68
    assert last.aggregated is False and last.train.not_aggregated.startswith("differential privacy")
    assert last.failures == {
        "bravo": "ValueError: column 'grade' is empty",
        "acme": "reply refused: 'auc' is not a number",
    }
    assert last.train.sampled == 2 and last.evaluate.sampled == 2
    assert last.pooled is None and history.last_pooled() is None and last.bank_metrics == {}
    assert last.holdout["brier"] is None


def test_round_zero_stays_as_short_as_written(tmp_path):
    history = read_history(_write(tmp_path / "history.json", server_history()))
    assert history.rounds[0].to_json() == {"round": 0, "holdout": _metrics(0.5, 500)}
    assert RoundEntry(0).to_json() == {"round": 0}


def test_an_older_file_without_optional_keys(tmp_path):
    old = {
        "run-id": "3",
        "status": "completed",
        "config": {"num-server-rounds": 1},
        "banks": {"acme": {"training-rows": 10}},
        "rounds": [{"round": 0}, {"round": 1, "evaluate": {"ok": ["acme"], "pooled": _metrics(0.6, 10), "banks": {}}}],
    }
    history = read_history(_write(tmp_path / "history.json", old))
    assert history.statistics_failed == {} and history.strategy is None and history.privacy is None
    assert history.best_round is None and history.model_final_sha256 is None and history.seconds is None
    assert history.epsilon is None and history.reason is None and history.num_banks == 1
    assert history.banks["acme"].node_id is None
    entry = history.last_round()
    assert entry.train is None and entry.aggregated is None and entry.holdout is None and entry.holdout_auc is None
    assert entry.evaluate.failed == entry.evaluate.refused == entry.evaluate.clipped == {} and entry.failures == {}
    assert entry.evaluate.missing == [] and entry.evaluate.sampled == 1
    assert history.last_pooled()["auc"] == 0.6 and entry.pooled_auc == 0.6
    # What the file lacked is not invented on writing, apart from empty collections.
    again = history.to_json()
    assert again == {
        **old,
        "statistics-failed": {},
        "rounds": [old["rounds"][0], {"round": 1, "evaluate": _phase(["acme"], _metrics(0.6, 10), {})}],
    }


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "key", "expected"),
    [
        (("rounds", 1, "evaluate", "pooled", "auc"), "0.69", "rounds[1].evaluate.pooled.auc", "a number or null"),
        (("banks", "acme", "training-rows"), "900", "banks.acme.training-rows", "an integer"),
        (("rounds", 2, "train", "ok"), "acme", "rounds[2].train.ok", "a list of strings"),
        (("rounds", 2, "train", "failed", "bravo"), 3, "rounds[2].train.failed.bravo", "a string"),
        (("rounds", 1, "train", "clipped", "bravo"), None, "rounds[1].train.clipped.bravo", "a number"),
        (("rounds", 1, "aggregated"), "yes", "rounds[1].aggregated", "true or false"),
        (("best-round",), True, "best-round", "an integer"),
        (("rounds",), {"0": {}}, "rounds", "a list of round entries"),
        (("strategy",), "fedavg", "strategy", "an object"),
    ],
)
def test_a_wrong_type_names_the_file_and_the_key(tmp_path, path, value, key, expected):
    file = _write(tmp_path / "history.json", _set(server_history(), path, value))
    with pytest.raises(HistoryError) as err:
        read_history(file)
    message = str(err.value)
    assert message.startswith(f"{file}: key '{key}' must be {expected}, not ")


def test_a_file_that_is_no_history(tmp_path):
    missing_round = _set(server_history(), ("rounds", 1), {"holdout": {}})
    with pytest.raises(HistoryError, match=r"key 'rounds\[1\].round' is missing"):
        read_history(_write(tmp_path / "a.json", missing_round))
    with pytest.raises(HistoryError, match="key 'rounds' is missing: not a fedcredit history.json"):
        read_history(_write(tmp_path / "config.json", {"num-server-rounds": 3}))
    with pytest.raises(HistoryError, match="does not hold a JSON object"):
        read_history(_write(tmp_path / "b.json", [1, 2]))
    (tmp_path / "c.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(HistoryError, match=f"{tmp_path / 'c.json'} is not valid JSON"):
        read_history(tmp_path / "c.json")
    with pytest.raises(HistoryError, match="does not exist"):
        read_history(tmp_path / "nowhere" / "history.json")


def test_written_in_memory_then_read(tmp_path):
    """The coordinator's path: records built in memory (NaN metrics included) and written after each round."""
    history = History(run_id="5", status="running", banks={"acme": BankRecord("1", 50)})
    history.rounds.append(RoundEntry(0))
    history.rounds.append(
        RoundEntry(
            1,
            aggregated=True,
            seconds=1.5,
            evaluate=PhaseRecord(ok=["acme"], pooled={"auc": math.nan, "ks": 0.2}, banks={"acme": {"auc": math.nan}}),
        )
    )
    write_history(tmp_path / "history.json", history)
    back = read_history(tmp_path / "history.json")
    assert back.last_pooled() == {"auc": None, "ks": 0.2}  # JSON has no NaN: null
    assert back.rounds[1].pooled_auc is None and back.rounds[1].bank_metrics == {"acme": {"auc": None}}
    assert back.to_json() == {
        **history.to_json(),
        "rounds": [
            {"round": 0},
            {
                "round": 1,
                "aggregated": True,
                "evaluate": _phase(["acme"], {"auc": None, "ks": 0.2}, {"acme": {"auc": None}}),
                "seconds": 1.5,
            },
        ],
    }


@pytest.fixture(scope="module")
def real_history_file(tmp_path_factory) -> Path:
    """history.json as the real coordinator writes it: an in-process run of the real ServerApp and ClientApp."""
    from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
    from fedcredit.federation import server

    out = tmp_path_factory.mktemp("real")
    config = {
        "partitioning": "iid",
        "num-server-rounds": 2,
        "local-epochs": 1,
        "hidden-units": "4",
        "histogram-bins": 100,
        "personalize.epochs": 1,
        "output-dir": str(out),
    }
    with serverapp_identity():
        history = server.run(InProcessGrid(config, 3), config, "real", APP_DIR)
    return Path(history.output_dir) / "history.json"


def test_a_real_runs_history_round_trips_and_every_key_it_writes_is_a_field(real_history_file, tmp_path):
    written = json.loads(real_history_file.read_text())
    history = read_history(real_history_file)
    write_history(tmp_path / "again.json", history)
    assert json.loads((tmp_path / "again.json").read_text()) == written
    # No key of the coordinator's own writing is left to `extra`: each has its typed field.
    assert history.extra == {}
    assert all(r.extra == {} for r in history.rounds)
    assert all(p.extra == {} for r in history.rounds for p in (r.train, r.evaluate) if p is not None)
    assert history.evaluation == "separate" and history.ignored_keys == [] and history.personalisation is not None
    assert [r.round for r in history.rounds] == [0, 1, 2] and all(r.checkpoint_sha256 for r in history.trained_rounds)
    assert history.best_round in (1, 2) and all(len(r.evaluate.leave_one_out_auc) == 3 for r in history.trained_rounds)
