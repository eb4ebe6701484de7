"""Typed, checked view of `[tool.flwr.app.config]`.

The run config is the single place to tweak a run. It is parsed once, in the
ServerApp before round 1 and in each ClientApp, so a wrong value stops the
run with a message naming the key and the valid range instead of failing
somewhere in round 3.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from fedcredit.core.partition import SCHEMES


class ConfigError(ValueError):
    """A run-config value is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class RunConfig:
    num_server_rounds: int = 5
    seed: int = 42
    # data
    data_path: str = ""
    schema_path: str = ""
    partitioning: str = "region"
    dirichlet_alpha: float = 0.5
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    min_category_count: int = 10
    # model
    hidden_units: str = "64,32"
    dropout: float = 0.2
    l2: float = 1e-4
    learning_rate: float = 1e-3
    batch_size: int = 64
    local_epochs: int = 3
    positive_weight: float = 1.0
    # evaluation
    threshold: float = 0.1
    histogram_bins: int = 2000
    holdout_eval: bool = True
    # federation
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_banks: int = 2
    round_timeout: float = 600.0
    node_wait_timeout: float = 300.0
    output_dir: str = "outputs"
    # strategy (keys "strategy.*"); each parameter is used by the strategies in STRATEGY_PARAMS
    strategy_name: str = "fedavg"
    strategy_proximal_mu: float = 0.1
    strategy_eta: float = 0.01
    strategy_beta_1: float = 0.9
    strategy_beta_2: float = 0.99
    strategy_tau: float = 0.001
    strategy_server_learning_rate: float = 1.0
    strategy_server_momentum: float = 0.9
    strategy_trim_beta: float = 0.2
    strategy_num_malicious_nodes: int = 0
    strategy_num_nodes_to_select: int = 1
    strategy_q: float = 0.1
    strategy_client_learning_rate: float = 0.1
    # differential privacy (keys "privacy.*")
    privacy_mode: str = "none"
    privacy_noise_multiplier: float = 0.1
    privacy_clipping_norm: float = 1.0
    privacy_initial_clipping_norm: float = 0.1
    privacy_target_clipped_quantile: float = 0.5
    privacy_clip_norm_lr: float = 0.2
    privacy_delta: float = 1e-5

    @property
    def hidden_layers(self) -> tuple[int, ...]:
        return tuple(int(u) for u in self.hidden_units.replace(" ", "").split(",") if u)

    def to_flower(self) -> dict[str, Any]:
        """The config under its run-config key names (for history and outputs)."""
        return {key_of(f.name): v for f, v in zip(fields(self), asdict(self).values())}


# Which "strategy.*" parameters each strategy takes (field name without the prefix).
STRATEGY_PARAMS: dict[str, tuple[str, ...]] = {
    "fedavg": (),
    "fedprox": ("proximal_mu",),
    "fedadam": ("eta", "beta_1", "beta_2", "tau"),
    "fedyogi": ("eta", "beta_1", "beta_2", "tau"),
    "fedadagrad": ("eta", "tau"),
    "fedavgm": ("server_learning_rate", "server_momentum"),
    "fedmedian": (),
    "fedtrimmedavg": ("trim_beta",),
    "krum": ("num_malicious_nodes",),
    "multikrum": ("num_malicious_nodes", "num_nodes_to_select"),
    "bulyan": ("num_malicious_nodes",),
    "qfedavg": ("q", "client_learning_rate"),
}
PRIVACY_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "server-fixed": ("noise_multiplier", "clipping_norm", "delta"),
    "client-fixed": ("noise_multiplier", "clipping_norm", "delta"),
    "server-adaptive": ("noise_multiplier", "initial_clipping_norm", "target_clipped_quantile", "clip_norm_lr"),
    "client-adaptive": ("noise_multiplier", "initial_clipping_norm", "target_clipped_quantile", "clip_norm_lr"),
}


def key_of(field_name: str) -> str:
    """Run-config key of a RunConfig field: strategy_eta -> "strategy.eta", batch_size -> "batch-size"."""
    for group in ("strategy", "privacy"):
        if field_name.startswith(group + "_"):
            return f"{group}." + field_name[len(group) + 1:].replace("_", "-")
    return field_name.replace("_", "-")


# (lower bound, upper bound, inclusive lower?[, inclusive upper? default True]); None means open.
_RANGES: dict[str, tuple] = {
    "num_server_rounds": (1, None, True),
    "dirichlet_alpha": (0, None, False),
    "test_fraction": (0, 1, False, False),
    "val_fraction": (0, 1, False, False),
    "min_category_count": (1, None, True),
    "dropout": (0, 1, True),
    "l2": (0, None, True),
    "learning_rate": (0, None, False),
    "batch_size": (1, None, True),
    "local_epochs": (1, None, True),
    "positive_weight": (0, None, False),
    "threshold": (0, 1, False),
    "histogram_bins": (10, None, True),
    "fraction_train": (0, 1, False),
    "fraction_evaluate": (0, 1, True),
    "min_banks": (1, None, True),
    "round_timeout": (0, None, False),
    "node_wait_timeout": (0, None, False),
    "strategy_proximal_mu": (0, None, True),
    "strategy_eta": (0, None, False),
    "strategy_beta_1": (0, 1, True, False),
    "strategy_beta_2": (0, 1, True, False),
    "strategy_tau": (0, None, False),
    "strategy_server_learning_rate": (0, None, False),
    "strategy_server_momentum": (0, 1, True),
    "strategy_trim_beta": (0, 0.5, True, False),
    "strategy_num_malicious_nodes": (0, None, True),
    "strategy_num_nodes_to_select": (1, None, True),
    "strategy_q": (0, None, True),
    "strategy_client_learning_rate": (0, None, False),
    "privacy_noise_multiplier": (0, None, True),
    "privacy_clipping_norm": (0, None, False),
    "privacy_initial_clipping_norm": (0, None, False),
    "privacy_target_clipped_quantile": (0, 1, True),
    "privacy_clip_norm_lr": (0, None, False),
    "privacy_delta": (0, 1, False),
}


def _coerce(name: str, value: Any, kind: type) -> Any:
    key = key_of(name)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return value.lower() == "true"
        raise ConfigError(f"run config '{key}' must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"run config '{key}' must be a whole number, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"run config '{key}' must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"run config '{key}' must be a string, got {value!r}")
    return value


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Check every key; unknown keys are rejected so typos do not go unnoticed."""
    known = {key_of(f.name): f for f in fields(RunConfig)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown run-config keys {unknown}; valid keys: {sorted(known)}")
    kinds = {"int": int, "float": float, "bool": bool, "str": str}
    values: dict[str, Any] = {}
    for key, f in known.items():
        if key in raw:
            values[f.name] = _coerce(f.name, raw[key], kinds[f.type] if isinstance(f.type, str) else f.type)
    cfg = RunConfig(**values)
    for name, (low, high, low_inclusive, *rest) in _RANGES.items():
        high_inclusive = rest[0] if rest else True
        value = getattr(cfg, name)
        key = key_of(name)
        if low is not None and (value < low or (value == low and not low_inclusive)):
            raise ConfigError(f"run config '{key}' = {value} is out of range: it must be {'>=' if low_inclusive else '>'} {low}")
        if high is not None and (value > high or (value == high and not high_inclusive)):
            raise ConfigError(f"run config '{key}' = {value} is out of range: it must be {'<=' if high_inclusive else '<'} {high}")
    _check_choices(cfg)
    if cfg.partitioning not in SCHEMES:
        raise ConfigError(f"run config 'partitioning' = {cfg.partitioning!r}: choose one of {list(SCHEMES)}")
    try:
        layers = cfg.hidden_layers
    except ValueError as err:
        raise ConfigError(f"run config 'hidden-units' = {cfg.hidden_units!r}: give layer sizes separated by commas, e.g. \"64,32\"") from err
    if not layers or min(layers) < 1:
        raise ConfigError(f"run config 'hidden-units' = {cfg.hidden_units!r}: give at least one positive layer size, e.g. \"32\"")
    return cfg


def _check_choices(cfg: RunConfig) -> None:
    """Unknown strategy or privacy mode, or a parameter the chosen one does not use: no silent fallback."""
    if cfg.strategy_name not in STRATEGY_PARAMS:
        raise ConfigError(f"run config 'strategy.name' = {cfg.strategy_name!r} is not a strategy: "
                          f"choose one of {list(STRATEGY_PARAMS)}")
    if cfg.privacy_mode not in PRIVACY_PARAMS:
        raise ConfigError(f"run config 'privacy.mode' = {cfg.privacy_mode!r}: choose one of {list(PRIVACY_PARAMS)}")
    default = RunConfig()
    for group, chosen, table in (("strategy", cfg.strategy_name, STRATEGY_PARAMS),
                                 ("privacy", cfg.privacy_mode, PRIVACY_PARAMS)):
        for f in fields(RunConfig):
            if not f.name.startswith(group + "_") or f.name in (f"{group}_name", f"{group}_mode"):
                continue
            param = f.name[len(group) + 1:]
            if getattr(cfg, f.name) != getattr(default, f.name) and param not in table[chosen]:
                users = [name for name, params in table.items() if param in params]
                selector = "strategy.name" if group == "strategy" else "privacy.mode"
                raise ConfigError(
                    f"run config '{key_of(f.name)}' is a parameter of {users}, but {selector} = {chosen!r}: "
                    f"{chosen!r} takes {[key_of(group + '_' + p) for p in table[chosen]] or 'no parameters'}. "
                    f"Remove it or choose one of {users}"
                )
