"""The run config: one key table; pyproject defaults parse; wrong values stop the run with a clear message."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict

from fedcredit.core.config import (
    KEYS,
    ConfigError,
    RunConfig,
    app_defaults,
    check_overrides,
    config_table,
    ignored_keys,
    parse_run_config,
)

REPO = Path(__file__).resolve().parents[1]


def _edited_app(tmp_path: Path, edits: dict[str, str]) -> Path:
    """A copy of the app's pyproject.toml with some `key = value` lines of the config table changed."""
    text = (REPO / "pyproject.toml").read_text()
    for key, value in edits.items():
        text, n = re.subn(rf"^{re.escape(key)} = [^#\n]*", f"{key} = {value} ", text, flags=re.M)
        assert n == 1, f"{key} is not one line of pyproject.toml"
    (tmp_path / "pyproject.toml").write_text(text)
    return tmp_path


def test_pyproject_defaults_are_the_runconfig_defaults():
    raw = app_defaults(REPO)
    assert parse_run_config(raw) == RunConfig()  # the two tables cannot drift
    assert set(raw) == set(RunConfig().to_flower())  # every key is overridable (Flower rejects unknown overrides)


def test_app_defaults_flattens_as_flower_does():
    table = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert app_defaults(REPO) == flatten_dict(table)
    assert app_defaults(REPO)["strategy.name"] == "fedavg"


def test_app_defaults_says_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="pyproject.toml does not exist"):
        app_defaults(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(ConfigError, match=r"no \[tool.flwr.app.config\] table"):
        app_defaults(tmp_path)


def test_ints_given_for_floats_are_accepted():
    assert parse_run_config({"learning-rate": 1, "dropout": 0}).learning_rate == 1.0


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"num-server-round": 3}, "unknown run-config keys \\['num-server-round'\\]"),
        ({"num-server-rounds": 0}, "'num-server-rounds' = 0 is out of range: it must be >= 1"),
        ({"num-server-rounds": 2.5}, "must be a whole number"),
        ({"fraction-train": 1.5}, "'fraction-train' = 1.5 is out of range: it must be > 0 and <= 1"),
        ({"dropout": "high"}, "'dropout' must be a number"),
        ({"partitioning": "states"}, "choose one of \\['region', 'iid', 'dirichlet'\\]"),
        ({"hidden-units": "64,x"}, "layer sizes separated by commas"),
        ({"hidden-units": ""}, "at least one positive layer size"),
        ({"holdout-eval": "yes"}, "must be true or false"),
        ({"threshold": 0}, "'threshold' = 0.0 is out of range: it must be > 0 and <= 1"),
        ({"max-categories": 0}, "'max-categories' = 0 is out of range: it must be >= 1"),
        ({"max-category-length": 0}, "'max-category-length' = 0 is out of range: it must be >= 1"),
        ({"max-off-schema-share": 1.5}, "'max-off-schema-share' = 1.5 is out of range: it must be >= 0 and <= 1"),
        ({"max-off-schema-share": -0.01}, "'max-off-schema-share' = -0.01 is out of range: it must be >= 0 and <= 1"),
        ({"update-clip": -1.0}, "'update-clip' = -1.0 is out of range: it must be >= 0"),
    ],
)
def test_invalid_values_name_the_key_and_range(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_run_config(raw)


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"learning-rate": float("nan")}, r"'learning-rate' must be a finite number \(> 0\), got nan"),
        ({"l2": float("inf")}, r"'l2' must be a finite number \(>= 0\), got inf"),
        ({"round-timeout": float("inf")}, "'round-timeout' must be a finite number"),
        ({"strategy.eta": float("-inf")}, "'strategy.eta' must be a finite number"),
        ({"num-server-rounds": float("inf")}, "'num-server-rounds' must be a finite number"),
        ({"seed": -1}, "'seed' = -1 is out of range: it must be >= 0 and <= 4294967295"),
        ({"seed": 2**32}, "'seed' = 4294967296 is out of range: it must be >= 0 and <= 4294967295"),
        ({"dropout": 1.0}, "'dropout' = 1.0 is out of range: it must be >= 0 and < 1"),
    ],
)
def test_values_that_would_trap_training_are_refused(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_run_config(raw)


def test_edge_values_inside_the_range_pass():
    cfg = parse_run_config({"seed": 2**32 - 1, "dropout": 0.0, "update-clip": 0.0, "fraction-evaluate": 0.0})
    assert (cfg.seed, cfg.dropout, cfg.update_clip) == (2**32 - 1, 0.0, 0.0)


def test_every_field_has_its_key_and_bounds_are_consistent():
    default = RunConfig()
    assert len({spec.name for spec in KEYS.values()}) == len(KEYS)
    for name, spec in KEYS.items():
        spec.check(getattr(default, name))  # every default is inside its own range
        if spec.low is not None and spec.high is not None:
            assert spec.low < spec.high, spec.name
        if name.startswith("strategy_") and name != "strategy_name":
            assert spec.strategies and spec.flower, f"{spec.name}: which strategies use it, under which keyword?"
        if name.startswith("privacy_") and name != "privacy_mode":
            assert spec.modes, f"{spec.name}: which privacy modes use it?"


def test_edited_defaults_never_fail_a_run_and_are_reported_as_ignored(tmp_path):
    app = _edited_app(tmp_path, {"strategy.eta": "0.02", "strategy.proximal-mu": "0.5", "privacy.clipping-norm": "2.0"})
    raw = app_defaults(app)
    cfg = parse_run_config(raw)  # strategy.name = "fedavg", privacy.mode = "none": none of the three is used
    assert cfg.strategy_name == "fedavg" and cfg.strategy_eta == 0.02
    assert ignored_keys(cfg) == ["strategy.proximal-mu", "strategy.eta", "privacy.clipping-norm"]
    check_overrides(raw, app_defaults(app), cfg)  # the app's own defaults: nothing was set for this run
    with pytest.raises(ConfigError) as err:  # the same values set on the command line against the repo's app
        check_overrides(raw, app_defaults(REPO), cfg)
    message = str(err.value)
    assert (
        "'strategy.eta' = 0.02 is a parameter of ['fedadam', 'fedyogi', 'fedadagrad'], but strategy.name = "
        "'fedavg'" in message
    )
    assert "'strategy.proximal-mu' = 0.5 is a parameter of ['fedprox']" in message
    assert (
        "'privacy.clipping-norm' = 2.0 is a parameter of ['server-fixed', 'client-fixed'], but privacy.mode = "
        "'none'" in message
    )


def test_a_command_line_override_the_strategy_uses_passes():
    defaults = app_defaults(REPO)
    raw = {**defaults, "strategy.name": "fedadam", "strategy.eta": 0.05, "update-clip": 2.0}
    cfg = parse_run_config(raw)
    check_overrides(raw, defaults, cfg)
    assert ignored_keys(cfg) == []
    # Setting a key back to the app's default on the command line is no override.
    same = {**defaults, "strategy.proximal-mu": defaults["strategy.proximal-mu"]}
    check_overrides(same, defaults, parse_run_config(same))


def test_update_clip_is_ignored_by_the_robust_strategies():
    cfg = parse_run_config({"strategy.name": "krum", "update-clip": 0.0})
    assert ignored_keys(cfg) == ["update-clip"]
    with pytest.raises(ConfigError, match="'update-clip' = 0.0 is a parameter of \\['fedavg',.*'krum'"):
        check_overrides({"strategy.name": "krum", "update-clip": 0.0}, app_defaults(REPO), cfg)


def test_the_configuration_guide_key_table_is_the_rendered_table():
    guide = (REPO / "docs" / "configuration.md").read_text()
    block = re.search(r"<!-- config-keys:start -->\n(.*?)<!-- config-keys:end -->", guide, re.S)
    assert block, "docs/configuration.md lacks the <!-- config-keys:start --> ... <!-- config-keys:end --> block"
    assert block.group(1) == config_table(), "docs/configuration.md key table is stale: paste config_table() there"
    for spec in KEYS.values():
        assert f"| `{spec.name}` |" in block.group(1)
