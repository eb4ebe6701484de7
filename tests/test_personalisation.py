"""Personalisation after the last round: each bank keeps the best of three models; only summaries leave it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord

from fedcredit.core import model as mdl
from fedcredit.core.banks import load_bank
from fedcredit.core.config import parse_run_config
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import protocol, server

CONFIG = {
    "partitioning": "region",
    "num-server-rounds": 2,
    "local-epochs": 1,
    "hidden-units": "8",
    "learning-rate": 0.01,
    "histogram-bins": 200,
    "personalize.epochs": 2,
    "personalize.layers": "all",
}


class Spy(InProcessGrid):
    """Keeps every personalise reply as the coordinator receives it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.replies = []

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        self.replies += [r for r, m in zip(replies, messages) if m.metadata.message_type == protocol.PERSONALISE]
        return replies


@pytest.fixture(scope="module")
def personalised(tmp_path_factory):
    config = {**CONFIG, "output-dir": str(tmp_path_factory.mktemp("out"))}
    grid = Spy(config, 4)
    with serverapp_identity():
        history = server.run(grid, config, "pers", APP_DIR).to_json()
    return config, grid, history


def test_each_bank_keeps_a_model_never_worse_than_the_global_one_on_its_validation_rows(personalised):
    config, _, history = personalised
    record = history["personalisation"]
    assert record["failed"] == {} and len(record["banks"]) == 4
    for bank, r in record["banks"].items():
        val = r["validation"]
        assert val[r["kept"]]["auc"] >= val["global"]["auc"], bank
        assert r["kept"] == "global" or val[r["kept"]]["auc"] == max(val[c]["auc"] for c in protocol.CANDIDATES)
        assert set(r["holdout"]) == set(protocol.CANDIDATES)  # region split: its own region's hold-out loans
    assert record["pooled-validation"]["kept"]["auc"] >= record["pooled-validation"]["global"]["auc"] - 1e-3


def test_the_kept_model_is_written_at_the_bank_and_scores_its_rows(personalised):
    config, _, history = personalised
    cfg = parse_run_config(config)
    for pid, (bank, r) in enumerate(history["personalisation"]["banks"].items()):
        model = mdl.load(r["model"])
        rows = load_bank(cfg, {"partition-id": pid, "num-partitions": 4}).val
        scores = mdl.score(model, rows)
        assert np.all((scores > 0) & (scores < 1))
        assert Path(r["model"]).parent.name == bank


def test_only_summaries_leave_a_bank(personalised):
    _, grid, _ = personalised
    assert len(grid.replies) == 4
    for reply in grid.replies:
        content = reply.content
        assert not content.array_records  # no weights, no model
        assert set(content.metric_records) <= {
            *protocol.CANDIDATES,
            *(protocol.HOLDOUT_PREFIX + c for c in protocol.CANDIDATES),
        }
        assert dict(content.config_records[protocol.PERSONALISATION]).keys() == {"kept"}
        for record in content.metric_records.values():
            assert set(record) == set(protocol.EVALUATE_KEYS)


def test_a_bank_claiming_an_unknown_model_is_refused_and_the_run_completes(tmp_path):
    def lie(kind, content, msg):
        if kind == protocol.PERSONALISE:
            content[protocol.PERSONALISATION] = ConfigRecord({"kept": "my-own-model"})
        return content

    config = {**CONFIG, "partitioning": "iid", "output-dir": str(tmp_path)}
    with serverapp_identity():
        history = server.run(InProcessGrid(config, 3, lie), config, "lie", APP_DIR).to_json()
    assert history["status"] == "completed"
    ((bank, reason),) = history["personalisation"]["failed"].items()
    assert "kept must be one of" in reason and len(history["personalisation"]["banks"]) == 2
    saved = json.loads((Path(history["output-dir"]) / "history.json").read_text())
    assert saved["personalisation"]["failed"] == {bank: reason}


def test_zero_epochs_switch_personalisation_off(tmp_path):
    config = {**CONFIG, "partitioning": "iid", "personalize.epochs": 0, "output-dir": str(tmp_path)}
    with serverapp_identity():
        history = server.run(InProcessGrid(config, 2), config, "off", APP_DIR).to_json()
    assert "personalisation" not in history and not (Path(history["output-dir"]) / "banks").exists()


def _summary(auc: float, bad: int = 20, n: int = 400) -> dict:
    return {"auc": auc, "num-bad": bad, "num-examples": n}


def test_another_model_is_kept_only_when_it_is_clearly_better_than_the_global_one():
    from fedcredit.federation.client import choose

    # 20 defaults among 400 loans: the standard error of an AUC of 0.70 is about 0.06.
    assert choose({"global": _summary(0.70), "personalised": _summary(0.72), "local-only": _summary(0.69)}) == "global"
    assert choose({"global": _summary(0.70), "personalised": _summary(0.72), "local-only": _summary(0.80)}) == (
        "local-only"
    )
    assert choose({"global": _summary(float("nan")), "personalised": _summary(0.9), "local-only": _summary(0.9)}) == (
        "global"
    )
    # Many defaults: a smaller gain is already clear.
    big = {
        "global": _summary(0.70, 2000, 40000),
        "personalised": _summary(0.72, 2000, 40000),
        "local-only": _summary(0.60, 2000, 40000),
    }
    assert choose(big) == "personalised"
