"""Per-bank records of every round, kept at the Grid.

`TrackingGrid` wraps the Grid a strategy talks through: it records which
banks were asked, which replied and which failed (and why), keeps each
bank's figures, and drops replies that break the protocol before any
strategy can aggregate them. Tracking at the Grid, not in a strategy
subclass, leaves every Flower strategy and DP wrapper as shipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Message
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.core import metrics
from fedcredit.federation.protocol import UNIT_WEIGHT


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
