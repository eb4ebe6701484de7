"""FedAvg that keeps per-bank records and pools metrics instead of averaging them.

`BankTracking` is a mixin for any strategy of `flwr.serverapp.strategy`: it
records which banks were asked, which replied and which failed (and why),
drops replies whose weights are not finite before they can corrupt the global
model, and keeps each bank's evaluation summary beside the pooled metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from fedcredit import metrics


def pooled_metric_record(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """`evaluate_metrics_aggr_fn`: pooled metrics from the banks' summed summaries."""
    del weighted_by_key  # pooled from counts, not weighted averages
    summaries = [next(iter(r.metric_records.values())) for r in records]
    return MetricRecord({k: float(v) if isinstance(v, float) else v for k, v in metrics.pooled(summaries).items()})


@dataclass
class Phase:
    """One phase (train or evaluate) of one round, bank by bank (keys are node ids)."""

    sampled: list[int] = field(default_factory=list)
    replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    aggregated: dict[str, Any] | None = None

    @property
    def missing(self) -> list[int]:
        return [n for n in self.sampled if n not in self.replies and n not in self.failed]


@dataclass
class Tracker:
    """What happened in each round, for the round log and history.json."""

    train: dict[int, Phase] = field(default_factory=dict)
    evaluate: dict[int, Phase] = field(default_factory=dict)

    def phase(self, kind: str, server_round: int) -> Phase:
        return getattr(self, kind).setdefault(server_round, Phase())

    def rounds_trained(self) -> int:
        return sum(1 for p in self.train.values() if p.replies)


def _finite(msg: Message) -> bool:
    return all(np.isfinite(a).all() for rec in msg.content.array_records.values() for a in rec.to_numpy_ndarrays())


def _metrics_of(kind: str, msg: Message) -> dict[str, Any]:
    """A bank's own figures: its train metrics, or its metrics from its own summary."""
    rec = dict(next(iter(msg.content.metric_records.values())))
    if kind == "train":
        return rec
    own = metrics.pooled([rec])
    own["auc"] = rec["auc"]  # the bank's exact AUC, computed on its side
    return own


class BankTracking:
    """Mixin recording per-bank outcomes; put it before the Flower strategy class."""

    tracker: Tracker

    def _sampled(self, kind: str, server_round: int, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        self.tracker.phase(kind, server_round).sampled = [m.metadata.dst_node_id for m in messages]
        return messages

    def _sort(self, kind: str, server_round: int, replies: Iterable[Message]) -> list[Message]:
        phase = self.tracker.phase(kind, server_round)
        kept = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                phase.failed[node] = msg.error.reason
                log(WARNING, "Round %s %s: bank node %s failed: %s", server_round, kind, node, msg.error.reason)
            elif kind == "train" and not _finite(msg):
                phase.failed[node] = "returned non-finite weights (NaN or inf); reply discarded"
                log(WARNING, "Round %s train: bank node %s returned non-finite weights; discarded", server_round, node)
            else:
                phase.replies[node] = _metrics_of(kind, msg)
                kept.append(msg)
        return kept

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self._sampled("train", server_round, super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self._sampled("evaluate", server_round, super().configure_evaluate(server_round, arrays, config, grid))  # type: ignore[misc]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = self._sort("train", server_round, replies)
        arrays, agg = super().aggregate_train(server_round, kept)  # type: ignore[misc]
        self.tracker.phase("train", server_round).aggregated = dict(agg) if agg is not None else None
        return arrays, agg

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        kept = self._sort("evaluate", server_round, replies)
        agg = super().aggregate_evaluate(server_round, kept)  # type: ignore[misc]
        phase = self.tracker.phase("evaluate", server_round)
        phase.aggregated = dict(agg) if agg is not None else None
        return agg


class TrackedFedAvg(BankTracking, FedAvg):
    """FedAvg with per-bank tracking and pooled evaluation metrics."""

    def __init__(self, tracker: Tracker, **kwargs: Any) -> None:
        kwargs.setdefault("evaluate_metrics_aggr_fn", pooled_metric_record)
        super().__init__(**kwargs)
        self.tracker = tracker


def finite_metrics(values: dict[str, Any] | None) -> bool:
    return values is not None and all(math.isfinite(float(v)) for v in values.values() if not isinstance(v, list))
