"""The ServerApp's round bookkeeping: a round counts as trained only if the global weights changed."""

from __future__ import annotations

import json

import pytest
from flwr.app import ArrayRecord

from fedcredit.core import model as mdl
from fedcredit.core.config import parse_run_config
from fedcredit.core.loading import load_csv
from fedcredit.core.schema import LENDING_CLUB
from fedcredit.core.stats import compute_stats, preprocessing_from_stats
from fedcredit.federation.errors import FederationError
from fedcredit.federation.history import History
from fedcredit.federation.outputs import RunOutputs
from fedcredit.federation.rounds import RecordsAggregation, RoundReporter, final_checks
from fedcredit.federation.tracking import Tracker


class _Stub:
    """Aggregates nothing in round 1 (as Bulyan below its quorum does), new weights in round 2."""

    def __init__(self, arrays: ArrayRecord) -> None:
        self.arrays = arrays

    def aggregate_train(self, server_round, replies):
        return (None, None) if server_round == 1 else (self.arrays, None)


def test_rounds_that_changed_nothing_are_not_counted_as_trained(tmp_path):
    cfg = parse_run_config({"holdout-eval": False, "num-server-rounds": 3, "hidden-units": "4"})
    prep = preprocessing_from_stats(compute_stats(load_csv("", LENDING_CLUB).head(500), LENDING_CLUB), 10)
    spec = mdl.ModelSpec(
        LENDING_CLUB.numeric, LENDING_CLUB.categorical, (4,), dropout=0.0, l2=0.0, learning_rate=1e-3, seed=0
    )
    model = mdl.build_model(prep, spec)
    tracker, history = Tracker(), History()
    out = RunOutputs(str(tmp_path), "t")
    reporter = RoundReporter(cfg, model, tracker, out, history, {})
    initial = ArrayRecord(model.get_weights())
    changed = ArrayRecord([w + 0.1 for w in model.get_weights()])
    strategy = RecordsAggregation(_Stub(changed), tracker)
    reporter(0, initial)
    assert strategy.aggregate_train(1, []) == (None, None)
    reporter(1, initial)  # the strategy aggregated nothing: Flower hands the same record on
    with pytest.raises(FederationError, match="no round trained \\(the global model never changed\\)"):
        final_checks(cfg, tracker, history)
    assert strategy.aggregate_train(2, [])[0] is changed
    reporter(2, changed)
    assert [r.aggregated for r in history.rounds] == [None, False, True]
    assert tracker.rounds_trained() == 1
    saved = json.loads((out.dir / "history.json").read_text())
    assert saved["rounds"][1]["aggregated"] is False


def test_a_failed_write_ends_the_run_as_failed_with_the_reason(tmp_path, monkeypatch):
    """A full disk while saving the final model: history says failed and why, no truncated model is left."""
    import errno

    from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
    from fedcredit.federation import server

    def full_disk(self, name, model):
        raise OSError(errno.ENOSPC, f"No space left on device: {self.path(name)}")

    monkeypatch.setattr(RunOutputs, "save_model", full_disk)
    config = {
        "partitioning": "iid",
        "num-server-rounds": 1,
        "local-epochs": 1,
        "hidden-units": "4",
        "holdout-eval": False,
        "output-dir": str(tmp_path),
    }
    with serverapp_identity(), pytest.raises(OSError, match="No space left"):
        server.run(InProcessGrid(config, 2), config, "disk", APP_DIR)
    (run_dir,) = tmp_path.iterdir()
    history = json.loads((run_dir / "history.json").read_text())
    assert history["status"] == "failed" and "No space left on device" in history["reason"]
    assert not list(run_dir.glob("model-*.keras*"))


def test_when_history_json_cannot_be_written_either_the_runs_own_error_is_raised(tmp_path, monkeypatch):
    """A full disk: the model save fails first, then so does every write of the history; the first error wins."""
    import errno

    from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
    from fedcredit.federation import rounds, server

    def full_disk(self, name, model):
        raise OSError(errno.ENOSPC, "No space left on device: model-final.keras")

    writes = {"n": 0}
    real = rounds.write_history

    def history_fails_after_the_rounds(path, history):
        writes["n"] += 1
        if history.status != "running":
            raise OSError(errno.ENOSPC, "No space left on device: history.json")
        real(path, history)

    monkeypatch.setattr(RunOutputs, "save_model", full_disk)
    monkeypatch.setattr(rounds, "write_history", history_fails_after_the_rounds)
    config = {
        "partitioning": "iid",
        "num-server-rounds": 1,
        "local-epochs": 1,
        "hidden-units": "4",
        "holdout-eval": False,
        "personalize.epochs": 0,
        "output-dir": str(tmp_path),
    }
    with serverapp_identity(), pytest.raises(OSError, match="model-final.keras"):
        server.run(InProcessGrid(config, 2), config, "disk", APP_DIR)
    assert writes["n"] > 1


def test_a_name_claimed_by_two_banks_is_kept_by_neither():
    from fedcredit.federation.statistics import unique_names

    assert unique_names({11: "midwest", 12: "midwest", 13: "south"}) == {
        11: "midwest#11",
        12: "midwest#12",
        13: "south",
    }


def test_a_banks_crash_reaches_the_history_as_its_last_lines_without_colour_codes():
    from fedcredit.federation.exchange import failure

    ray = (
        "\x1b[36mray::ClientAppActor.run()\x1b[39m (pid=123)\nTraceback (most recent call last):\n"
        + '  File "x.py", line 1, in f\n    g()\n' * 40
        + "fedcredit.core.loading.DataValidationError: /data/bank.csv: cannot be used\n"
    )
    text = failure(ray)
    assert "\x1b" not in text and "Traceback" not in text and len(text) < 300
    assert text.endswith("DataValidationError: /data/bank.csv: cannot be used")
    assert failure("one line") == "one line"


def test_edited_strategy_defaults_in_pyproject_never_fail_a_fedavg_run(tmp_path):
    """A data scientist edits strategy.eta in the app's pyproject.toml and leaves strategy.name = "fedavg"."""
    import tomllib

    from appcopy import copy_app

    from fedcredit.core.config import app_defaults
    from fedcredit.deploy.inprocess import InProcessGrid, serverapp_identity
    from fedcredit.federation import server

    app = copy_app(tmp_path / "app")
    toml = app / "pyproject.toml"
    text = toml.read_text()
    for old, new in (
        ("strategy.eta = 0.01", "strategy.eta = 0.02"),
        ("strategy.proximal-mu = 0.1", "strategy.proximal-mu = 0.5"),
    ):
        assert old in text
        text = text.replace(old, new)
    toml.write_text(text)
    assert tomllib.loads(text)["tool"]["flwr"]["app"]["config"]["strategy"]["name"] == "fedavg"
    # What Flower hands the ServerApp: the app's own (edited) defaults, plus a few command-line overrides.
    run_config = {
        **app_defaults(app),
        "partitioning": "iid",
        "num-server-rounds": 1,
        "local-epochs": 1,
        "hidden-units": "4",
        "personalize.epochs": 0,
        "holdout-eval": False,
        "output-dir": str(tmp_path / "out"),
    }
    with serverapp_identity():
        history = server.run(InProcessGrid(run_config, 2), run_config, "edited", app).to_json()
    assert history["status"] == "completed"
    assert history["ignored-keys"] == ["strategy.proximal-mu", "strategy.eta"]
