"""Folded evaluation: one message per bank per round, and the same figures as a separate evaluate message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import MetricRecord

from fedcredit.core.config import ConfigError
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import protocol, server
from fedcredit.federation.outputs import load_checkpoint

CONFIG = {
    "partitioning": "iid",
    "num-server-rounds": 3,
    "local-epochs": 1,
    "hidden-units": "8",
    "histogram-bins": 100,
    "personalize.epochs": 0,
}


class CountingGrid(InProcessGrid):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, int]] = []  # (message type, server round)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for m in messages:
            config = m.content.config_records.get(protocol.CONFIG) or {}
            self.sent.append((m.metadata.message_type, int(config.get("server-round", 0))))
        return super().send_and_receive(messages, timeout=timeout)


def _run(tmp_path: Path, mode: str, tamper=None, **extra) -> tuple[dict, CountingGrid]:
    config = {**CONFIG, **extra, "evaluation": mode, "output-dir": str(tmp_path / mode)}
    grid = CountingGrid(config, 3, tamper)
    with serverapp_identity():
        return server.run(grid, config, mode, APP_DIR).to_json(), grid


def _final(history: dict) -> list[np.ndarray]:
    return load_checkpoint(max(Path(history["output-dir"]).glob("checkpoints/round-*.npz")))


@pytest.mark.parametrize("secure", [False, True])
def test_folded_evaluation_gives_the_same_figures_as_separate_evaluate_messages(tmp_path, secure):
    extra = {"privacy.secure-aggregation": True} if secure else {}
    separate, _ = _run(tmp_path, "separate", **extra)
    folded, grid = _run(tmp_path, "folded", **extra)
    assert separate["evaluation"] == "separate" and folded["evaluation"] == "folded"
    for a, b in zip(separate["rounds"][1:], folded["rounds"][1:], strict=True):
        assert b["evaluate"]["pooled"] == a["evaluate"]["pooled"], a["round"]  # same model, same rows
        assert sorted(b["evaluate"]["ok"]) == sorted(a["evaluate"]["ok"])
    assert folded["rounds"][0]["evaluate"]["pooled"]["num-examples"] > 0  # the starting model, scored in round 1
    assert folded["best-round"] == separate["best-round"]
    assert all(np.array_equal(x, y) for x, y in zip(_final(separate), _final(folded), strict=True))
    kinds = [kind for kind, _ in grid.sent if kind in ("train", "evaluate")]
    assert kinds.count("train") == 3 * 3 and kinds.count("evaluate") == 3  # evaluate: only the final model's
    assert all(r == 3 for kind, r in grid.sent if kind == "evaluate")


def test_a_bogus_folded_summary_refuses_that_banks_reply(tmp_path):
    def inflate(kind, content, msg):
        if kind == "train" and protocol.EVALUATION in content.metric_records:
            summary = dict(content[protocol.EVALUATION].items())
            summary["hist-bad"] = [x * 1000 for x in summary["hist-bad"]]
            content[protocol.EVALUATION] = MetricRecord(summary)
        return content

    history, _ = _run(tmp_path, "folded", inflate)
    for entry in history["rounds"][1:]:
        assert list(entry["train"]["refused"]) == ["bank-0"] and entry["aggregated"]
        assert "hist-bad" in entry["train"]["refused"]["bank-0"]
    assert list(history["rounds"][0]["evaluate"]["refused"]) == ["bank-0"]


def test_folded_evaluation_with_client_adaptive_clipping_is_refused():
    with pytest.raises(ConfigError, match="one metric record per train reply"):
        server.parse_run_config({"evaluation": "folded", "privacy.mode": "client-adaptive"})
