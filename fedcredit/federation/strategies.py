"""Strategies from the run config, and per-bank records of every round.

`make_strategy` builds any strategy of `flwr.serverapp.strategy` (optionally
wrapped in a differential-privacy wrapper) from the run config, with pooled
metric aggregation. `TrackingGrid` wraps the Grid the strategy talks through:
it records which banks were asked, which replied and which failed (and why),
keeps each bank's figures, and drops replies whose weights are not finite
before any strategy can aggregate them. Tracking at the Grid, not in a
strategy subclass, leaves every Flower strategy and DP wrapper as shipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp import strategy as fl
from flwr.supercore import log

from fedcredit.core import metrics
from fedcredit.core.config import ConfigError, RunConfig

# Every bank reply carries this key = 1: the weight of equal-weight averaging,
# which Flower's privacy accounting requires (banks of different sizes would
# otherwise weigh differently and the sensitivity bound would not hold).
UNIT_WEIGHT = "unit-weight"


def pooled_metric_record(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """`evaluate_metrics_aggr_fn`: pooled metrics from the banks' summed summaries."""
    del weighted_by_key  # pooled from counts, not weighted averages
    summaries = [next(iter(r.metric_records.values())) for r in records]
    return MetricRecord(metrics.pooled(summaries))


@dataclass
class Phase:
    """One phase (train or evaluate) of one round, bank by bank (keys are node ids)."""

    sampled: list[int] = field(default_factory=list)
    replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None  # why no reply of this phase reached the strategy

    @property
    def missing(self) -> list[int]:
        return [n for n in self.sampled if n not in self.replies and n not in self.failed]

    def pooled(self) -> dict[str, Any] | None:
        """Pooled evaluation metrics of the banks that replied (None: nobody did)."""
        return metrics.pooled(self.summaries) if self.summaries else None

    def mean_train_loss(self) -> dict[str, Any] | None:
        if not self.replies:
            return None
        n = sum(r["num-examples"] for r in self.replies.values())
        return {"train-loss": sum(r["train-loss"] * r["num-examples"] for r in self.replies.values()) / n,
                "num-examples": n}


@dataclass
class Tracker:
    train: dict[int, Phase] = field(default_factory=dict)
    evaluate: dict[int, Phase] = field(default_factory=dict)
    aggregated: set[int] = field(default_factory=set)  # rounds whose global weights changed

    def phase(self, kind: str, server_round: int) -> Phase:
        return getattr(self, kind).setdefault(server_round, Phase())

    def rounds_trained(self) -> int:
        """Rounds in which the strategy really aggregated new weights (not merely got replies)."""
        return len(self.aggregated)


def _finite(msg: Message) -> bool:
    return all(np.isfinite(a).all() for rec in msg.content.array_records.values() for a in rec.to_numpy_ndarrays())


def _round_of(messages: list[Message]) -> int:
    for msg in messages:
        for rec in msg.content.config_records.values():
            if "server-round" in rec:
                return int(rec["server-round"])
    return 0


class TrackingGrid:
    """A Grid that records every train/evaluate exchange per bank; all else is the wrapped Grid's.

    It also keeps the strategy to the federation agreed before round 1: only
    `banks` (the nodes whose statistics built the model) are offered for
    sampling; a training round with fewer than `min_banks` usable replies is
    not aggregated (one bank's model must not become the global one); with
    differential privacy, a round with any failed reply is not aggregated
    (the noise is calibrated to all sampled banks); and if fewer than
    `min_banks` of them stay connected for `wait_timeout` seconds the run
    stops with the reason instead of waiting forever.
    """

    def __init__(self, grid: Grid, tracker: Tracker, banks: Iterable[int] | None = None, min_banks: int = 1,
                 all_or_nothing: bool = False, wait_timeout: float = float("inf")) -> None:
        self._grid = grid
        self.tracker = tracker
        self.banks = set(banks) if banks is not None else None
        self.min_banks = min_banks
        self.all_or_nothing = all_or_nothing
        self.wait_timeout = wait_timeout
        self._short_since: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def get_node_ids(self) -> list[int]:
        nodes = [n for n in self._grid.get_node_ids() if self.banks is None or n in self.banks]
        if len(nodes) >= self.min_banks:
            self._short_since = None
        else:
            now = time.monotonic()
            self._short_since = self._short_since or now
            if now - self._short_since > self.wait_timeout:
                raise FederationStopped(
                    f"only {len(nodes)} of the federation's banks connected for {self.wait_timeout:.0f} s, "
                    f"min-banks={self.min_banks}: restart the missing SuperNodes or lower min-banks")
        return nodes

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        kind = messages[0].metadata.message_type if messages else ""
        if kind not in ("train", "evaluate"):
            return self._grid.send_and_receive(messages, timeout=timeout)
        phase = self.tracker.phase(kind, _round_of(messages))
        phase.sampled = [m.metadata.dst_node_id for m in messages]
        kept = []
        for msg in self._grid.send_and_receive(messages, timeout=timeout):
            node = msg.metadata.src_node_id
            if msg.has_error():
                phase.failed[node] = msg.error.reason
                log(WARNING, "%s: bank node %s failed: %s", kind, node, msg.error.reason)
                continue
            if kind == "train" and not _finite(msg):
                phase.failed[node] = "returned non-finite weights (NaN or inf); reply discarded"
                log(WARNING, "train: bank node %s returned non-finite weights; discarded", node)
                continue
            record = dict(next(iter(msg.content.metric_records.values())))
            if kind == "evaluate":
                phase.summaries.append(record)
                own = metrics.pooled([record])
                own["auc"] = record["auc"]  # the bank's exact AUC, computed on its side
                record = own
            phase.replies[node] = {k: v for k, v in record.items() if not isinstance(v, list) and k != UNIT_WEIGHT}
            kept.append(msg)
        if kind == "train" and kept and len(kept) < self.min_banks:
            phase.skipped = f"only {len(kept)} usable repl{'y' if len(kept) == 1 else 'ies'}, min-banks={self.min_banks}"
        elif kind == "train" and kept and self.all_or_nothing and phase.failed:
            phase.skipped = "differential privacy: a sampled bank failed, so the calibrated noise would not hold"
        if phase.skipped:
            log(WARNING, "train round %s not aggregated: %s", _round_of(messages), phase.skipped)
            return []
        return kept


class FederationStopped(RuntimeError):
    """The federation can no longer run rounds; the message says why."""


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
        from flwr.supercore.privacy_accounting import (NeighboringRelation, PrivacyConfig, SamplingMethod)
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
