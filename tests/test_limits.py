"""What a run may ask of a bank: bounded by the config table, and by each bank's own limits (node config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcredit.core.config import BankLimits, ConfigError, parse_run_config
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import server


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num-server-rounds", 10**9),
        ("local-epochs", 10**6),
        ("histogram-bins", 10**9),
        ("batch-size", 10**9),
        ("personalize.epochs", 10**6),
        ("hidden-units", "100000000"),
        ("hidden-units", ",".join(["8"] * 17)),
    ],
)
def test_a_run_config_beyond_the_tables_bounds_is_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        parse_run_config({key: value})


def test_the_default_config_is_within_every_banks_default_limits():
    BankLimits().check(parse_run_config({}))


@pytest.mark.parametrize(
    ("node_key", "run_key", "value"),
    [
        ("max-local-epochs", "local-epochs", 4),
        ("max-rounds", "num-server-rounds", 6),
        ("max-histogram-bins", "histogram-bins", 3000),
        ("max-hidden-units", "hidden-units", "64,64"),
        ("max-batch-size", "batch-size", 512),
        ("max-personalize-epochs", "personalize.epochs", 20),
    ],
)
def test_a_bank_refuses_a_run_that_asks_more_than_its_limit(node_key, run_key, value):
    limits = BankLimits.from_node_config({node_key: {"max-hidden-units": 100}.get(node_key, 3)})
    with pytest.raises(ConfigError, match=f"{run_key} = .*node config '{node_key}'"):
        limits.check(parse_run_config({run_key: value}))


@pytest.mark.parametrize("bad", [0, -5, "many", True, 2.5])
def test_a_limit_that_is_not_a_positive_whole_number_is_refused(bad):
    with pytest.raises(ConfigError, match="node config 'max-local-epochs'"):
        BankLimits.from_node_config({"max-local-epochs": bad})


def test_through_the_apps_a_bank_over_its_limit_is_left_out_with_the_reason_and_the_run_goes_on(tmp_path: Path):
    """The real ServerApp and ClientApp handlers: one bank of three allows fewer local epochs than the run asks."""
    config = {
        "partitioning": "iid",
        "num-server-rounds": 1,
        "local-epochs": 2,
        "hidden-units": "8",
        "histogram-bins": 200,
        "output-dir": str(tmp_path),
        "personalize.epochs": 0,
    }
    grid = InProcessGrid(config, 3)
    grid.contexts[11].node_config["max-local-epochs"] = 1
    with serverapp_identity():
        history = server.run(grid, config, "limits", APP_DIR)
    assert history.status == "completed"
    assert list(history.statistics_failed) == ["node-11"]
    assert (
        "local-epochs = 2, more than this bank allows (1; node config 'max-local-epochs')"
        in (history.statistics_failed["node-11"])
    )
    assert len(history.banks) == 2 and all(r.train is not None and len(r.train.ok) == 2 for r in history.trained_rounds)
