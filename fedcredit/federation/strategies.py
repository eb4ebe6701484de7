"""Strategies from the run config.

`make_strategy` builds any strategy of `flwr.serverapp.strategy` (optionally
wrapped in a differential-privacy wrapper) from the run config, with pooled
metric aggregation.
"""

from __future__ import annotations

import math
from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp import strategy as fl

from fedcredit.core import metrics
from fedcredit.core.config import ConfigError, RunConfig
from fedcredit.federation.protocol import UNIT_WEIGHT


def pooled_metric_record(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """`evaluate_metrics_aggr_fn`: pooled metrics from the banks' summed summaries."""
    del weighted_by_key  # pooled from counts, not weighted averages
    summaries = [next(iter(r.metric_records.values())) for r in records]
    return MetricRecord(metrics.pooled(summaries))


def check_against_banks(cfg: RunConfig, num_banks: int) -> None:
    """Choices that depend on how many banks there are, checked before round 1."""
    f, name = cfg.strategy_num_malicious_nodes, cfg.strategy_name
    need = {"krum": 2 * f + 3, "multikrum": 2 * f + 3, "bulyan": 4 * f + 3}.get(name)
    if need is not None and num_banks < need:
        raise ConfigError(f"{name} with strategy.num-malicious-nodes={f} needs at least {need} banks, this "
                          f"federation has {num_banks}: lower strategy.num-malicious-nodes or add banks")
    if name == "multikrum" and cfg.strategy_num_nodes_to_select > num_banks - f:
        raise ConfigError(f"multikrum: strategy.num-nodes-to-select={cfg.strategy_num_nodes_to_select} exceeds "
                          f"banks minus malicious ({num_banks} - {f})")
    if cfg.min_banks > num_banks:
        raise ConfigError(f"min-banks={cfg.min_banks} but only {num_banks} bank(s) answered: lower min-banks")


def make_strategy(cfg: RunConfig, num_banks: int) -> tuple[Any, Any]:
    """(strategy, privacy accountant or None) for the run config and federation size."""
    check_against_banks(cfg, num_banks)
    accounted = cfg.privacy_mode in ("server-fixed", "client-fixed") and cfg.strategy_name in ("fedavg", "fedprox")
    common: dict[str, Any] = dict(
        fraction_train=cfg.fraction_train, fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_banks, min_evaluate_nodes=cfg.min_banks, min_available_nodes=cfg.min_banks,
        evaluate_metrics_aggr_fn=pooled_metric_record,
        weighted_by_key=UNIT_WEIGHT if accounted else "num-examples",
    )
    n = cfg.strategy_name
    if n == "fedavg":
        strategy = fl.FedAvg(**common)
    elif n == "fedprox":
        strategy = fl.FedProx(**common, proximal_mu=cfg.strategy_proximal_mu)
    elif n in ("fedadam", "fedyogi"):
        cls = fl.FedAdam if n == "fedadam" else fl.FedYogi
        strategy = cls(**common, eta=cfg.strategy_eta, beta_1=cfg.strategy_beta_1, beta_2=cfg.strategy_beta_2,
                       tau=cfg.strategy_tau)
    elif n == "fedadagrad":
        strategy = fl.FedAdagrad(**common, eta=cfg.strategy_eta, tau=cfg.strategy_tau)
    elif n == "fedavgm":
        strategy = fl.FedAvgM(**common, server_learning_rate=cfg.strategy_server_learning_rate,
                              server_momentum=cfg.strategy_server_momentum)
    elif n == "fedmedian":
        strategy = fl.FedMedian(**common)
    elif n == "fedtrimmedavg":
        strategy = fl.FedTrimmedAvg(**common, beta=cfg.strategy_trim_beta)
    elif n == "krum":
        strategy = fl.Krum(**common, num_malicious_nodes=cfg.strategy_num_malicious_nodes)
    elif n == "multikrum":
        strategy = fl.MultiKrum(**common, num_malicious_nodes=cfg.strategy_num_malicious_nodes,
                                num_nodes_to_select=cfg.strategy_num_nodes_to_select)
    elif n == "bulyan":
        strategy = fl.Bulyan(**common, num_malicious_nodes=cfg.strategy_num_malicious_nodes)
    elif n == "qfedavg":
        strategy = fl.QFedAvg(**common, q=cfg.strategy_q, client_learning_rate=cfg.strategy_client_learning_rate,
                              train_loss_key="train-loss")
    else:  # parse_run_config already refused it; keep the factory honest anyway
        raise ConfigError(f"unknown strategy {n!r}")
    return wrap_privacy(cfg, strategy, num_banks, accounted)


def wrap_privacy(cfg: RunConfig, strategy: Any, num_banks: int, accounted: bool) -> tuple[Any, Any]:
    if cfg.privacy_mode == "none":
        return strategy, None
    sampled = max(int(num_banks * cfg.fraction_train), cfg.min_banks)
    if cfg.privacy_mode in ("server-adaptive", "client-adaptive"):
        cls = (fl.DifferentialPrivacyServerSideAdaptiveClipping if cfg.privacy_mode == "server-adaptive"
               else fl.DifferentialPrivacyClientSideAdaptiveClipping)
        return cls(strategy, noise_multiplier=cfg.privacy_noise_multiplier, num_sampled_clients=sampled,
                   initial_clipping_norm=cfg.privacy_initial_clipping_norm,
                   target_clipped_quantile=cfg.privacy_target_clipped_quantile,
                   clip_norm_lr=cfg.privacy_clip_norm_lr), None
    accountant = None
    if accounted and cfg.privacy_noise_multiplier > 0:
        from flwr.supercore.privacy_accounting import NeighboringRelation, PrivacyConfig, SamplingMethod
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

        accountant = RdpAccountant(PrivacyConfig(
            target_delta=cfg.privacy_delta, population_size=num_banks,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION))
    cls = (fl.DifferentialPrivacyServerSideFixedClipping if cfg.privacy_mode == "server-fixed"
           else fl.DifferentialPrivacyClientSideFixedClipping)
    return cls(strategy, noise_multiplier=cfg.privacy_noise_multiplier, clipping_norm=cfg.privacy_clipping_norm,
               num_sampled_clients=sampled, accountant=accountant), accountant


def privacy_summary(cfg: RunConfig, accountant: Any) -> dict[str, Any] | None:
    """What the outputs say about privacy: mechanism, parameters and the epsilon spent."""
    if cfg.privacy_mode == "none":
        return None
    out: dict[str, Any] = {"mode": cfg.privacy_mode, "noise-multiplier": cfg.privacy_noise_multiplier}
    if accountant is not None:
        spent = accountant.get_privacy_spent()
        out.update(epsilon=float(spent.epsilon), delta=float(spent.delta), releases=int(spent.num_releases),
                   accounting=str(spent.accounting_method))
    else:
        out["epsilon"] = None
        out["accounting"] = ("not accounted: Flower's accountant covers fixed clipping with FedAvg/FedProx "
                             "aggregation and a positive noise multiplier only")
    return out


def finite_metrics(values: dict[str, Any] | None) -> bool:
    return values is not None and all(math.isfinite(float(v)) for v in values.values() if not isinstance(v, list))
