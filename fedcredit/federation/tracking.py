"""Per-bank records of every round, and the protocol kept at the Grid.

`TrackingGrid` wraps the Grid a strategy talks through: it records which
banks were asked, which replied, which failed and which were refused (and
why), keeps each bank's figures, checks every reply against the protocol
(`fedcredit.federation.protocol`) and bounds oversized updates before any
strategy can aggregate them. Doing this at the Grid, not in a strategy
subclass, leaves every Flower strategy and DP wrapper as shipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.core import metrics
from fedcredit.federation import protocol
from fedcredit.federation.errors import FederationStopped
from fedcredit.federation.exchange import exchange
from fedcredit.federation.protocol import UNIT_WEIGHT, ProtocolError
from fedcredit.federation.secure_sum import checked_secure_sum
from fedcredit.federation.updates import bound_updates, update_directions


@dataclass(frozen=True)
class SecureSettings:
    """Secure mode: train and evaluate exchanges become secure sums (`fedcredit.federation.secure_sum`)."""

    fraction: float  # privacy.secure-threshold
    max_update_norm: float  # privacy.max-update-norm
    weight_key: str  # the reply metric the strategy weighs updates by


@dataclass(frozen=True)
class ReplyRules:
    """What the coordinator knows before round 1 to check replies against.

    `rows`: the training rows each bank (node id) reported with its
    statistics: its train replies must claim exactly that many, its
    evaluation the matching validation share (`folded`: also the summary in
    a train reply, which belongs to the previous round's model). `update_clip`: an update
    farther from the global model than this multiple of the median distance
    of the other banks' updates is scaled down to it (0: off).
    """

    rows: Mapping[int, int] = field(default_factory=dict)
    bins: int | None = None
    val_fraction: float | None = None
    threshold: float | None = None
    update_clip: float = 0.0
    extra_train_keys: Sequence[str] = ()
    update_direction: str = "exclude"  # exclude | record | off: updates pointing away from the others'
    exclude_away: bool = False  # exclude applies (FedAvg family: the robust strategies resist on their own)
    folded: bool = False  # train replies carry the summary of the incoming model (the previous round's)
    groups: Mapping[str, int] = field(default_factory=dict)  # protected attribute -> groups: per-group histograms


@dataclass
class Phase:
    """One phase (train or evaluate) of one round, bank by bank (keys are node ids)."""

    sampled: list[int] = field(default_factory=list)
    replies: dict[int, dict[str, Any]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)  # replies that broke the protocol
    clipped: dict[int, float] = field(default_factory=dict)  # update scale factors applied
    suspicious: dict[int, float] = field(default_factory=dict)  # updates pointing away from the others': cosine
    withheld: dict[int, str] = field(default_factory=dict)  # secure mode: the bank's own check kept its vector
    secure_train: dict[str, float] | None = None  # secure mode: the mean train loss and rows from the sum
    summaries: list[dict[str, Any]] = field(default_factory=list)
    bank_summaries: dict[int, dict[str, Any]] = field(default_factory=dict)  # plain mode: each bank's own
    skipped: str | None = None  # why no reply of this phase reached the strategy

    @property
    def missing(self) -> list[int]:
        answered = {**self.replies, **self.failed, **self.refused, **self.withheld}
        return [n for n in self.sampled if n not in answered]

    def pooled(self) -> dict[str, Any] | None:
        """Pooled evaluation metrics of the banks that replied (None: nobody did).

        Summed in node order (plain mode), whatever order the replies came
        in: float sums then do not depend on it, so the same replies always
        give the same figures, bit for bit.
        """
        if self.bank_summaries:
            return metrics.pooled([self.bank_summaries[n] for n in sorted(self.bank_summaries)])
        return metrics.pooled(self.summaries) if self.summaries else None

    def mean_train_loss(self) -> dict[str, Any] | None:
        if self.secure_train is not None:
            return dict(self.secure_train)
        if not self.replies or not all(self.replies.values()):
            return None
        n = sum(r["num-examples"] for r in self.replies.values())
        return {
            "train-loss": sum(r["train-loss"] * r["num-examples"] for r in self.replies.values()) / n,
            "num-examples": n,
        }


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


def _figures(record: dict[str, Any]) -> dict[str, Any]:
    """A bank's figures as the round record keeps them: numbers only, no histograms, no unit weight."""
    return {k: v for k, v in record.items() if not isinstance(v, list) and k != UNIT_WEIGHT}


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

    def __init__(
        self,
        grid: Grid,
        tracker: Tracker,
        banks: Iterable[int] | None = None,
        min_banks: int = 1,
        all_or_nothing: bool = False,
        wait_timeout: float = float("inf"),
        rules: ReplyRules | None = None,
        preprocessing: str | None = None,
        secure: SecureSettings | None = None,
    ) -> None:
        self._grid = grid
        self.tracker = tracker
        self.banks = set(banks) if banks is not None else None
        self.min_banks = min_banks
        self.all_or_nothing = all_or_nothing
        self.wait_timeout = wait_timeout
        self.rules = rules or ReplyRules()
        self.preprocessing = preprocessing
        self.secure = secure
        self._bins = self.rules.bins
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
                    f"min-banks={self.min_banks}: restart the missing SuperNodes or lower min-banks"
                )
        return nodes

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        kind = messages[0].metadata.message_type if messages else ""
        if kind not in ("train", "evaluate"):
            return self._grid.send_and_receive(messages, timeout=timeout)
        server_round = _round_of(messages)
        phase = self.tracker.phase(kind, server_round)
        phase.sampled = [m.metadata.dst_node_id for m in messages]
        if self.preprocessing is not None:
            for msg in messages:  # its own record: the strategy's config (and Flower's log) carry only the digest
                msg.content[protocol.PREPROCESSING] = protocol.preprocessing_record(self.preprocessing)
        if self.secure is not None:
            return self._secure_phase(kind, messages, phase, server_round, timeout)
        reference = messages[0].content[protocol.ARRAYS]
        updates: dict[int, list[np.ndarray]] = {}
        # Folded evaluation: the summaries in train replies score the model the round started from.
        scored = self.tracker.phase("evaluate", server_round - 1) if self._folded(kind) else None

        def read(reply: Message) -> tuple[dict[str, Any] | None, dict[str, Any]]:
            node = reply.metadata.src_node_id
            summary = self._folded_summary(node, reply) if scored is not None else None
            return summary, self._check(kind, node, reply, reference, updates)

        outcome = exchange(self._grid, messages, read, timeout, kind)
        phase.failed.update(outcome.failed)
        phase.refused.update(outcome.refused)
        if scored is not None:
            scored.sampled = list(phase.sampled)
            scored.failed.update(outcome.failed)
            scored.refused.update(outcome.refused)
        for node, (summary, record) in outcome.ok.items():
            if scored is not None and summary is not None:
                scored.summaries.append(summary)
                scored.bank_summaries[node] = summary
                scored.replies[node] = _figures(metrics.bank_figures(summary))
            if kind == "evaluate":
                phase.summaries.append(record)
                phase.bank_summaries[node] = record
                record = metrics.bank_figures(record)
            phase.replies[node] = _figures(record)
        kept = outcome.replies
        if kind == "train" and self.rules.update_direction != "off" and len(updates) > 1:
            self._directions(phase, updates, reference, kept)
        if kind == "train" and self.rules.update_clip > 0 and len(updates) > 1 and phase.skipped is None:
            phase.clipped = bound_updates(updates, reference.to_numpy_ndarrays(), self.rules.update_clip)
            for node, factor in phase.clipped.items():
                kept[node].content[protocol.ARRAYS] = ArrayRecord(updates[node])
                log(
                    WARNING,
                    "train: update of bank node %s scaled by %.3g (update-clip=%g x the others' median)",
                    node,
                    factor,
                    self.rules.update_clip,
                )
        if self._not_aggregated(kind, phase, len(kept), server_round):
            return []
        # In node order, whatever order Flower sampled them in: the weighted sum of float32 updates then
        # does not depend on sampling, and a resumed run aggregates exactly as an uninterrupted one.
        return [kept[node] for node in sorted(kept)]

    def _directions(
        self, phase: Phase, updates: dict[int, list[np.ndarray]], reference: ArrayRecord, kept: dict[int, Message]
    ) -> None:
        """Record (and with `exclude`, leave out) the updates that point away from the other banks'."""
        cosines = update_directions(updates, reference.to_numpy_ndarrays())
        phase.suspicious = {n: round(c, 4) for n, c in cosines.items() if c < 0}
        for node, cosine in phase.suspicious.items():
            log(WARNING, "train: update of bank node %s points away from the others' (cosine %.2f)", node, cosine)
        if self.rules.update_direction != "exclude" or not self.rules.exclude_away or not phase.suspicious:
            return
        if len(updates) < 3:  # two banks: each is judged by the other only, and nothing says which is right
            return
        if 2 * len(phase.suspicious) >= len(updates):  # no majority direction: leaving some out would pick a side
            phase.skipped = (
                f"{len(phase.suspicious)} of {len(updates)} updates point away from the others': the banks agree on "
                "no direction (update-direction = exclude)"
            )
            kept.clear()
            return
        for node, cosine in phase.suspicious.items():
            phase.refused[node] = (
                f"update points away from the other banks' (cosine {cosine:.2f} with the median of their "
                "updates; update-direction = exclude)"
            )
            del kept[node], updates[node]
            phase.replies.pop(node, None)

    def _not_aggregated(self, kind: str, phase: Phase, usable: int, server_round: int) -> bool:
        """Whether a training round must not be aggregated (`phase.skipped` says why)."""
        if kind == "train" and usable and usable < self.min_banks:
            phase.skipped = f"only {usable} usable repl{'y' if usable == 1 else 'ies'}, min-banks={self.min_banks}"
        elif kind == "train" and usable and self.all_or_nothing and (phase.failed or phase.refused or phase.withheld):
            phase.skipped = "differential privacy: a sampled bank failed, so the calibrated noise would not hold"
        if phase.skipped and kind == "train":
            log(WARNING, "train round %s not aggregated: %s", server_round, phase.skipped)
        return phase.skipped is not None

    def _secure_phase(
        self, kind: str, messages: list[Message], phase: Phase, server_round: int, timeout: float | None
    ) -> list[Message]:
        """One train or evaluate exchange as a secure sum; the strategy gets replies that carry only the sum.

        Train: every contributing bank's reply carries the same securely
        computed weighted mean with equal weights, so any FedAvg-family
        strategy (and the client-side DP wrapper, which counts replies)
        aggregates exactly that mean. Evaluate: one reply with the summed summary.
        """
        assert self.secure is not None
        for msg in messages:
            msg.content[protocol.PREPROCESSING] = protocol.preprocessing_record(self.preprocessing or "")
        reference = messages[0].content[protocol.ARRAYS]
        bins, groups = self.rules.bins or 0, self.rules.groups
        scored = self.tracker.phase("evaluate", server_round - 1) if self._folded(kind) else None
        if kind == "train":
            length = sum(int(np.prod(a.shape)) for a in reference.values()) + 3
            collect = {
                protocol.WEIGHT_KEY: self.secure.weight_key,
                protocol.MAX_UPDATE_NORM: self.secure.max_update_norm,
            }
        else:
            length, collect = protocol.summary_length(bins, groups), {}
        extra = protocol.summary_length(bins, groups) if scored is not None else 0  # folded: the summary rides along

        def read(total: np.ndarray, banks: int) -> tuple[Any, Any, Any]:
            """(folded summary, train weights or the evaluation summary, train figures), checked."""
            threshold = self.rules.threshold
            folded = protocol.read_summary_sum(total[length:], bins, threshold, banks, groups) if extra else None
            if kind == "train":
                weights, figures = protocol.read_train_sum(
                    total[:length], reference, self.secure.max_update_norm, banks
                )
                return folded, weights, figures
            return folded, protocol.read_summary_sum(total, bins, threshold, banks, groups), None

        checked = checked_secure_sum(self._grid, messages, length + extra, self.secure.fraction, timeout, read, collect)
        outcome = checked.outcome
        for record in (phase, scored) if scored is not None else (phase,):
            record.sampled = list(phase.sampled)
            record.failed.update(outcome.failed)
            record.refused.update({**outcome.refused, **checked.left_out})
            record.withheld.update(outcome.withheld)
            record.replies.update({n: {} for n in outcome.contributors})  # their figures stay at the bank
        banks = len(outcome.contributors)
        if checked.value is None:
            phase.skipped = outcome.reason or "no sum"
            log(WARNING, "%s round %s: no secure sum: %s", kind, server_round, phase.skipped)
            return []
        folded, result, figures = checked.value  # result: the mean weights (train) or the pooled summary (evaluate)
        if scored is not None:
            scored.summaries = [folded]
        if kind == "evaluate":
            phase.summaries = [result]
            reply = outcome.replies[outcome.contributors[0]]
            reply.content = RecordDict({protocol.METRICS: MetricRecord(result)})
            return [reply]
        phase.secure_train = figures
        if self._not_aggregated(kind, phase, banks, server_round):
            return []
        share = max(1, figures["num-examples"] // banks)
        replies = []
        for node in outcome.contributors:
            reply = outcome.replies[node]
            reply.content = RecordDict(
                {
                    protocol.ARRAYS: ArrayRecord(result),
                    protocol.METRICS: MetricRecord(
                        {"train-loss": figures["train-loss"], "num-examples": share, UNIT_WEIGHT: 1}
                    ),
                }
            )
            replies.append(reply)
        return replies

    def _folded(self, kind: str) -> bool:
        return kind == "train" and self.rules.folded

    def _folded_summary(self, node: int, msg: Message) -> dict[str, Any]:
        """The evaluation summary a folded train reply carries, checked, and taken off the reply."""
        record = msg.content.metric_records.pop(protocol.EVALUATION, None)
        if record is None:
            raise ProtocolError("folded evaluation: the train reply has no evaluation record")
        rows = self.rules.rows.get(node)
        bounds = (
            protocol.expected_validation_rows(rows, self.rules.val_fraction)
            if rows is not None and self.rules.val_fraction is not None
            else None
        )
        return protocol.read_summary(
            record, self.rules.bins or 0, bounds, self.rules.threshold, what="evaluation", groups=self.rules.groups
        )

    def _check(
        self, kind: str, node: int, msg: Message, reference: ArrayRecord, updates: dict[int, list[np.ndarray]]
    ) -> dict[str, Any]:
        """The reply's metrics, checked against the protocol (train: its weights go to `updates`)."""
        rows = self.rules.rows.get(node)
        if kind == "train":
            weights, record = protocol.read_train_reply(msg.content, reference, rows, self.rules.extra_train_keys)
            updates[node] = weights
            return record
        if self._bins is None:  # no agreed size: the first reply's, and every other reply must match it
            hist = msg.content.metric_records.get(protocol.METRICS, {}).get("hist-bad")
            self._bins = len(hist) if isinstance(hist, list) else 0
        bounds = (
            protocol.expected_validation_rows(rows, self.rules.val_fraction)
            if rows is not None and self.rules.val_fraction is not None
            else None
        )
        return protocol.read_evaluate_reply(msg.content, self._bins, bounds, self.rules.threshold, self.rules.groups)
