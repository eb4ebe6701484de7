"""Strategies from the run config.

`make_strategy` builds any strategy of `flwr.serverapp.strategy` (optionally
wrapped in a differential-privacy wrapper) from the run config, with pooled
metric aggregation. Which keys each strategy takes, and under which Flower
keyword, comes from the key table in `fedcredit.core.config`; this module only
knows which Flower class a name stands for.
"""

from __future__ import annotations

import math
from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp import strategy as fl

from fedcredit.core import metrics
from fedcredit.core.config import (
    KEYS,
    ConfigError,
    RunConfig,
    privacy_kwargs,
    strategy_kwargs,
)
from fedcredit.federation.protocol import UNIT_WEIGHT

STRATEGY_CLASSES: dict[str, type[fl.Strategy]] = {
    "fedavg": fl.FedAvg,
    "fedprox": fl.FedProx,
    "fedadam": fl.FedAdam,
    "fedyogi": fl.FedYogi,
    "fedadagrad": fl.FedAdagrad,
    "fedavgm": fl.FedAvgM,
    "fedmedian": fl.FedMedian,
    "fedtrimmedavg": fl.FedTrimmedAvg,
    "krum": fl.Krum,
    "multikrum": fl.MultiKrum,
    "bulyan": fl.Bulyan,
    "qfedavg": fl.QFedAvg,
}
PRIVACY_CLASSES: dict[str, type[fl.Strategy]] = {
    "server-fixed": fl.DifferentialPrivacyServerSideFixedClipping,
    "client-fixed": fl.DifferentialPrivacyClientSideFixedClipping,
    "server-adaptive": fl.DifferentialPrivacyServerSideAdaptiveClipping,
    "client-adaptive": fl.DifferentialPrivacyClientSideAdaptiveClipping,
}
# Not run-config keys: where the banks' train replies put what the strategy reads (see client.py).
_PROTOCOL_KWARGS: dict[str, dict[str, Any]] = {"qfedavg": {"train_loss_key": "train-loss"}}
_FIXED_CLIPPING = ("server-fixed", "client-fixed")
_ADAPTIVE_CLIPPING = ("server-adaptive", "client-adaptive")


# What Flower's own log shows of each round's evaluation (it prints the record on one line);
# every pooled figure is in history.json and the fedcredit round line.
LOGGED_METRICS = ("num-examples", "auc", "ks", "brier", "logloss")


def logged_record(values: dict[str, Any]) -> MetricRecord:
    """The main figures, rounded: Flower prints what strategies and evaluate_fn return on one log line."""
    return MetricRecord(
        {k: int(values[k]) if k == "num-examples" else round(float(values[k]), 6) for k in LOGGED_METRICS}
    )


def pooled_metric_record(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """`evaluate_metrics_aggr_fn`: the main pooled metrics from the banks' summed summaries."""
    del weighted_by_key  # pooled from counts, not weighted averages
    return logged_record(metrics.pooled([next(iter(r.metric_records.values())) for r in records]))


def check_against_banks(cfg: RunConfig, num_banks: int) -> None:
    """Choices that depend on how many banks there are, checked before round 1."""
    f, name = cfg.strategy_num_malicious_nodes, cfg.strategy_name
    need = {"krum": 2 * f + 3, "multikrum": 2 * f + 3, "bulyan": 4 * f + 3}.get(name)
    if need is not None and num_banks < need:
        raise ConfigError(
            f"{name} with strategy.num-malicious-nodes={f} needs at least {need} banks, this "
            f"federation has {num_banks}: lower strategy.num-malicious-nodes or add banks"
        )
    if name == "multikrum" and cfg.strategy_num_nodes_to_select > num_banks - f:
        raise ConfigError(
            f"multikrum: strategy.num-nodes-to-select={cfg.strategy_num_nodes_to_select} exceeds "
            f"banks minus malicious ({num_banks} - {f})"
        )
    if cfg.min_banks > num_banks:
        raise ConfigError(f"min-banks={cfg.min_banks} but only {num_banks} bank(s) answered: lower min-banks")
    sampled, noise = _sampled(cfg, num_banks), cfg.privacy_noise_multiplier
    if cfg.privacy_mode in _ADAPTIVE_CLIPPING and noise > 0 and noise >= sampled / 10:
        # Flower noises the clipped-bank count with stddev sampled/20 and needs the multiplier below twice that.
        raise ConfigError(
            f"privacy.mode = {cfg.privacy_mode!r} with privacy.noise-multiplier={noise} needs more "
            f"than {math.floor(10 * noise)} banks per round, this run samples {sampled}: lower "
            f"privacy.noise-multiplier below {sampled / 10:g}, add banks or use a fixed clipping mode"
        )


def _sampled(cfg: RunConfig, num_banks: int) -> int:
    """Banks asked to train each round, as the DP wrappers must be told."""
    return max(int(num_banks * cfg.fraction_train), cfg.min_banks)


def _accounted(cfg: RunConfig) -> bool:
    """Whether Flower's accountant states epsilon: fixed clipping with plain FedAvg/FedProx averaging."""
    return cfg.privacy_mode in _FIXED_CLIPPING and cfg.strategy_name in ("fedavg", "fedprox")


def weight_key(cfg: RunConfig) -> str:
    """The reply metric updates are weighted by: equal weights where privacy is accounted, else rows."""
    return UNIT_WEIGHT if _accounted(cfg) else "num-examples"


def make_strategy(cfg: RunConfig, num_banks: int) -> tuple[Any, Any]:
    """(strategy, privacy accountant or None) for the run config and federation size."""
    check_against_banks(cfg, num_banks)
    accounted = _accounted(cfg)
    common: dict[str, Any] = dict(
        fraction_train=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_banks,
        min_evaluate_nodes=cfg.min_banks,
        min_available_nodes=cfg.min_banks,
        evaluate_metrics_aggr_fn=pooled_metric_record,
        weighted_by_key=weight_key(cfg),
    )
    try:
        cls = STRATEGY_CLASSES[cfg.strategy_name]
    except KeyError:  # parse_run_config already refused it; keep the factory honest anyway
        raise ConfigError(f"unknown strategy {cfg.strategy_name!r}: choose one of {list(STRATEGY_CLASSES)}") from None
    strategy = cls(**common, **strategy_kwargs(cfg), **_PROTOCOL_KWARGS.get(cfg.strategy_name, {}))
    return wrap_privacy(cfg, strategy, num_banks, accounted)


def wrap_privacy(cfg: RunConfig, strategy: Any, num_banks: int, accounted: bool) -> tuple[Any, Any]:
    """(strategy in the chosen DP wrapper, RDP accountant when Flower can account for it, else None)."""
    if cfg.privacy_mode == "none":  # privacy.dp-sgd is at each bank: no wrapper (fedcredit.core.dpsgd)
        return strategy, None
    kwargs: dict[str, Any] = dict(num_sampled_clients=_sampled(cfg, num_banks), **privacy_kwargs(cfg))
    accountant = None
    if cfg.privacy_mode in _FIXED_CLIPPING:
        if accounted and cfg.privacy_noise_multiplier > 0:
            from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
            from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

            accountant = RdpAccountant(
                PrivacyConfig(
                    target_delta=cfg.privacy_delta,
                    population_size=num_banks,
                    neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                    sampling_method=SamplingMethod.NO_AMPLIFICATION,
                )
            )
        kwargs["accountant"] = accountant
    return PRIVACY_CLASSES[cfg.privacy_mode](strategy, **kwargs), accountant


def strategy_table() -> str:
    """The Markdown table of docs/configuration.md: each strategy name, its Flower class and its keys (defaults)."""
    default = RunConfig()
    rows = ["| `strategy.name` | Flower class | its keys (default) |", "| --- | --- | --- |"]
    for name, cls in STRATEGY_CLASSES.items():
        keys = [
            f"`{spec.name}` ({getattr(default, field)})"
            for field, spec in KEYS.items()
            if spec.strategies is not None and name in spec.strategies
        ]
        label = f"`{name}`" + (" (default)" if name == default.strategy_name else "")
        rows.append(f"| {label} | `{cls.__name__}` | {', '.join(keys) or 'none'} |")
    return "\n".join(rows) + "\n"


def privacy_summary(cfg: RunConfig, accountant: Any) -> dict[str, Any] | None:
    """What the outputs say about privacy: mechanism, parameters and the epsilon spent (client-level modes).

    `privacy.dp-sgd` is accounted per bank at its rows: `fedcredit.federation.accounting.summary`.
    """
    if cfg.privacy_mode == "none":
        return None
    out: dict[str, Any] = {
        "mode": cfg.privacy_mode,
        "unit": "one bank (all its rows)",
        "noise-multiplier": cfg.privacy_noise_multiplier,
    }
    if accountant is not None:
        spent = accountant.get_privacy_spent()
        out.update(
            epsilon=float(spent.epsilon),
            delta=float(spent.delta),
            releases=int(spent.num_releases),
            accounting=str(spent.accounting_method),
        )
    else:
        out["epsilon"] = None
        out["accounting"] = (
            "not accounted: Flower's accountant covers fixed clipping with FedAvg/FedProx "
            "aggregation and a positive noise multiplier only"
        )
    return out


def finite_metrics(values: dict[str, Any] | None) -> bool:
    return values is not None and all(math.isfinite(float(v)) for v in values.values() if not isinstance(v, list))
