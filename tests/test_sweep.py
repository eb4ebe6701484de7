"""Sweeps: several variants in one run over the same banks, each exactly as a run of its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcredit.core.config import ConfigError, sweep_variants
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import protocol, server, sweep
from fedcredit.federation.outputs import load_checkpoint

CONFIG = {
    "partitioning": "iid",
    "num-server-rounds": 2,
    "local-epochs": 1,
    "hidden-units": "8",
    "histogram-bins": 100,
    "personalize.epochs": 1,
}
SWEEP = "strategy.name=fedavg,fedprox; seed=3,4"


class CountingGrid(InProcessGrid):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.statistics_queries = 0
        self.profile_queries = 0

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.statistics_queries += sum(m.metadata.message_type == "query" for m in messages)
        self.profile_queries += sum(m.metadata.message_type == protocol.PROFILE for m in messages)
        return super().send_and_receive(messages, timeout=timeout)


def _final(history: dict) -> list[np.ndarray]:
    return load_checkpoint(max(Path(history["output-dir"]).glob("checkpoints/round-*.npz")))


def test_every_variant_of_a_sweep_equals_a_run_of_its_own(tmp_path):
    config = {**CONFIG, "output-dir": str(tmp_path / "sweep"), "sweep": SWEEP}
    grid = CountingGrid(config, 3)
    with serverapp_identity():
        swept = [h.to_json() for h in sweep.serve(grid, config, "sw", APP_DIR)]
        alone = []
        for overrides in sweep_variants(SWEEP):
            single = {**CONFIG, **overrides, "output-dir": str(tmp_path / "alone")}
            alone.append(server.run(InProcessGrid(single, 3), single, f"alone-{len(alone)}", APP_DIR).to_json())
    assert [h["sweep"]["overrides"] for h in swept] == sweep_variants(SWEEP)
    assert all(h["status"] == "completed" and h["config"]["sweep"] == "" for h in swept)
    for variant, single in zip(swept, alone, strict=True):
        assert variant["config"] == single["config"] | {"output-dir": variant["config"]["output-dir"]}
        for a, b in zip(variant["rounds"], single["rounds"], strict=True):
            assert a["holdout"]["auc"] == pytest.approx(b["holdout"]["auc"], abs=1e-6)
        assert all(np.array_equal(x, y) for x, y in zip(_final(variant), _final(single), strict=True))
        assert variant["personalisation"]["pooled-validation"]["kept"]["auc"] == pytest.approx(
            single["personalisation"]["pooled-validation"]["kept"]["auc"], abs=1e-9
        )
    # Statistics once per distinct split (two seeds), not once per variant; profiles once per split too.
    assert grid.statistics_queries == 2 * 3
    assert grid.profile_queries == 2 * 3
    for variant, single in zip(swept, alone, strict=True):  # a reused profile is the one a run of its own asks
        profiles = [json.loads((Path(h["output-dir"]) / "profile.json").read_text()) for h in (variant, single)]
        assert profiles[0] == profiles[1] and len(profiles[0]["banks"]) == 3


def test_a_sweep_that_names_no_valid_variant_is_refused_before_anything_runs(tmp_path):
    for text, reason in (
        ("strategy.name=fedavg,fedmagic", "not a strategy.name value"),
        ("learning-rate=fast", "not a number"),
        ("no-such-key=1", "not `key=value1,value2` with a run-config key"),
        ("seed=1; seed=2", "appears twice"),
    ):
        config = {**CONFIG, "output-dir": str(tmp_path), "sweep": text}
        with serverapp_identity(), pytest.raises(ConfigError, match=reason):
            sweep.serve(InProcessGrid(config, 3), config, "bad", APP_DIR)
    assert not list(tmp_path.iterdir())
