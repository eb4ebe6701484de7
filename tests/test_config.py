"""The run config: defaults from pyproject.toml parse; wrong values stop the run with a clear message."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict

from fedcredit.core.config import ConfigError, RunConfig, parse_run_config

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_config_covers_every_key_and_parses():
    raw = flatten_dict(tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"])  # as Flower does
    cfg = parse_run_config(raw)
    assert set(raw) == set(RunConfig().to_flower())
    assert cfg.hidden_layers == (64, 32) and cfg.partitioning == "region"


def test_ints_given_for_floats_are_accepted():
    assert parse_run_config({"learning-rate": 1, "dropout": 0}).learning_rate == 1.0


@pytest.mark.parametrize("raw,match", [
    ({"num-server-round": 3}, "unknown run-config keys \\['num-server-round'\\]"),
    ({"num-server-rounds": 0}, "'num-server-rounds' = 0 is out of range: it must be >= 1"),
    ({"num-server-rounds": 2.5}, "must be a whole number"),
    ({"fraction-train": 1.5}, "'fraction-train' = 1.5 is out of range: it must be <= 1"),
    ({"dropout": "high"}, "'dropout' must be a number"),
    ({"partitioning": "states"}, "choose one of \\['region', 'iid', 'dirichlet'\\]"),
    ({"hidden-units": "64,x"}, "layer sizes separated by commas"),
    ({"hidden-units": ""}, "at least one positive layer size"),
    ({"holdout-eval": "yes"}, "must be true or false"),
    ({"threshold": 0}, "'threshold' = 0.0 is out of range: it must be > 0"),
])
def test_invalid_values_name_the_key_and_range(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_run_config(raw)
