"""The coordinator's side of secure mode: one secure sum through the Grid.

`secure_sum` wraps one exchange of the run (statistics, a training round's
train messages, an evaluation) in SecAgg+'s stages: banks advertise keys,
exchange encrypted shares through the coordinator, answer the wrapped
messages with masked vectors, and reveal the shares that take the masks out
of the survivors' sum. Every reply is checked against the protocol; a bank
that fails or breaks it at any stage is recorded with the reason and treated
as dropped out, and the sum goes on without it while at least `threshold`
banks remain. With a consortium roster each bank signs the keys it advertises
for this sum; the coordinator relays names and signatures with the keys, and
every bank verifies them against the roster itself (`signed_keys`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any, Generic, TypeVar

import numpy as np
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.federation import protocol, secagg
from fedcredit.federation.exchange import exchange, no_reply
from fedcredit.federation.protocol import SECAGG

T = TypeVar("T")


def threshold_for(banks: int, fraction: float) -> int:
    """Shares needed to rebuild a secret: more than half of the banks, and at least 2."""
    return max(2, math.ceil(fraction * banks), banks // 2 + 1)


@dataclass
class SecureOutcome:
    """One secure sum: the decoded total, and what happened to each bank (node ids)."""

    total: np.ndarray | None = None
    contributors: list[int] = field(default_factory=list)  # banks whose vectors are in the total
    replies: dict[int, Message] = field(default_factory=dict)  # their replies to the wrapped messages
    info: dict[int, Any] = field(default_factory=dict)  # what `check` returned for each bank's reply
    failed: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    withheld: dict[int, str] = field(default_factory=dict)
    reason: str | None = None  # why there is no total

    def reasons(self) -> dict[int, str]:
        """Every bank whose vector is not in the sum, with why."""
        return {**self.failed, **self.refused, **{n: f"withheld: {r}" for n, r in self.withheld.items()}}


class _Stages:
    """Sends one stage to some banks through `exchange`; each bank's failure or refusal is kept, named by stage."""

    def __init__(self, grid: Grid, outcome: SecureOutcome, timeout: float | None) -> None:
        self.grid, self.outcome, self.timeout = grid, outcome, timeout

    def send(self, messages: Sequence[Message], read: Callable[[Message], Any], what: str) -> dict[int, Any]:
        result = exchange(self.grid, messages, read, self.timeout, f"secure {what}")
        self.outcome.failed.update({n: f"{what}: {r}" for n, r in result.failed.items()})
        self.outcome.failed.update({n: f"{what}: {no_reply(self.timeout)}" for n in result.missing})
        self.outcome.refused.update({n: f"{what}: {r}" for n, r in result.refused.items()})
        return result.ok

    def stage(self, nodes: Sequence[int], stage: str, session: str, values: dict[int, dict[str, Any]]) -> dict:
        messages = [
            Message(
                content=protocol.stage_request(stage, session, values.get(n, {})),
                message_type=protocol.SECAGG_QUERY,
                dst_node_id=n,
            )
            for n in nodes
        ]
        return self.send(messages, lambda r: protocol.read_stage_reply(stage, r.content), stage)


def secure_sum(
    grid: Grid,
    messages: Sequence[Message],
    length: int,
    fraction: float,
    timeout: float | None,
    collect: dict[str, Any] | None = None,
    check: Callable[[RecordDict], Any] | None = None,
    complete: bool = False,
) -> SecureOutcome:
    """Send `messages` (one per bank) as a secure sum of `length`-entry vectors.

    `collect`: what each bank needs to build its vector (layout, weight key,
    update bound); `check`: reads and checks what a reply carries besides the
    masked vector (statistics: the bank's name and schema); a bank it refuses
    counts as dropped out, so its vector never enters the sum. `complete`:
    unmask only a sum of every bank asked, for numbers the banks already sent
    summed once (the feature profile repeats the statistics' row and category
    counts): a sum over fewer banks would reveal the others' by difference.
    """
    outcome = SecureOutcome()
    nodes = sorted(m.metadata.dst_node_id for m in messages)
    threshold = threshold_for(len(nodes), fraction)
    session = secrets.token_hex(8)
    stages = _Stages(grid, outcome, timeout)

    def short(stage: str, have: int) -> SecureOutcome:
        outcome.reason = (
            f"secure aggregation: {have} of {len(nodes)} banks got through {stage}, fewer than the "
            f"reconstruction threshold {threshold} (privacy.secure-threshold)"
        )
        return outcome

    if len(nodes) < threshold:
        return short("sampling", len(nodes))
    # What is summed and in which round: each bank signs its keys for this sum only (with a consortium roster).
    purpose = {
        m.metadata.dst_node_id: {"sum": m.metadata.message_type, "round": protocol.sum_round(m.content)}
        for m in messages
    }
    keys = stages.stage(nodes, "advertise", session, {n: {"threshold": threshold, **purpose[n]} for n in nodes})
    if len(keys) < threshold:
        return short("key advertisement", len(keys))
    owners = sorted(keys)
    directory = {
        "key-owners": owners,
        "pk1s": [keys[n]["pk1"] for n in owners],
        "pk2s": [keys[n]["pk2"] for n in owners],
    }
    if any("signature" in keys[n] for n in owners):  # relayed as signed; every bank verifies them itself
        directory["banks"] = [keys[n].get("bank", "") for n in owners]
        directory["signatures"] = [keys[n].get("signature", b"") for n in owners]
    shared = stages.stage(owners, "share", session, {n: directory for n in owners})
    inbox = _inboxes(shared, owners, outcome)
    if len(inbox) < threshold:
        return short("the share exchange", len(inbox))
    wrapped = _wrap(messages, inbox, session, collect or {})

    def read_masked(reply: Message) -> tuple[bytes | str, Message]:
        vector = protocol.read_masked_reply(reply.content, length, check is not None)
        if check is not None:
            outcome.info[reply.metadata.src_node_id] = check(reply.content)
        return vector, reply

    answered = stages.send(wrapped, read_masked, "masked vector")
    masked = {n: secagg.from_bytes(v, length) for n, (v, _) in answered.items() if isinstance(v, bytes)}
    for n, (v, _) in answered.items():
        if isinstance(v, str):
            outcome.withheld[n] = v
            log(WARNING, "secure sum: bank node %s withheld its vector: %s", n, v)
    outcome.replies = {n: r for n, (_, r) in answered.items()}
    if len(masked) < threshold:
        return short("masking", len(masked))
    if complete and len(masked) < len(nodes):
        outcome.reason = (
            f"secure aggregation: {len(masked)} of {len(nodes)} banks got through masking, and this sum is "
            "unmasked only over all of them"
        )
        return outcome
    dropped = sorted(set(inbox) - set(masked))
    revealers = sorted(answered)
    values = {n: {"active": sorted(masked), "dropped": dropped} for n in revealers}
    revealed = stages.stage(revealers, "reveal", session, values)
    shares = {n: dict(zip(r["owners"], r["shares"], strict=True)) for n, r in revealed.items()}
    try:
        total = secagg.unmask(masked, shares, {n: (keys[n]["pk1"], keys[n]["pk2"]) for n in owners}, dropped, threshold)
    except secagg.SecAggError as err:
        outcome.reason = f"secure aggregation: the sum could not be unmasked: {err}"
        return outcome
    outcome.total = secagg.decode(total)
    outcome.contributors = sorted(masked)
    return outcome


def _inboxes(shared: dict[int, Any], owners: list[int], outcome: SecureOutcome) -> dict[int, dict[int, bytes]]:
    """Each sharing bank's inbox {source bank: its encrypted share}; a bank whose shares skip a peer is refused."""
    sharers = sorted(n for n, r in shared.items() if set(r["destinations"]) == set(owners) - {n})
    for n in set(shared) - set(sharers):
        outcome.refused[n] = "share: its encrypted shares are not addressed to exactly the other banks"
    inbox: dict[int, dict[int, bytes]] = {n: {} for n in sharers}
    for src in sharers:
        for dst, token in zip(shared[src]["destinations"], shared[src]["ciphertexts"], strict=True):
            if dst in inbox:
                inbox[dst][src] = token
    return inbox


def _wrap(
    messages: Sequence[Message], inbox: dict[int, dict[int, bytes]], session: str, collect: dict[str, Any]
) -> list[Message]:
    """The messages of the banks still in the sum, each with its mask record (shares and what to put in it)."""
    wrapped = []
    for msg in messages:
        node = msg.metadata.dst_node_id
        if node in inbox:
            record = protocol.mask_record(session, inbox[node], collect)
            # Strategies may give every message the same RecordDict: each bank's record goes into its own copy.
            msg.content = RecordDict({**dict(msg.content.items()), SECAGG: record})
            wrapped.append(msg)
    return wrapped


# A group whose secure sum fails is split in two only while both halves keep at least this many banks:
# every sum the coordinator ever unmasks covers two banks or more, so no bank's numbers are revealed alone.
MIN_GROUP = 2


@dataclass
class CheckedSum(Generic[T]):
    """A secure sum whose total passed its checks: what `read` made of it, over `outcome.contributors`."""

    value: T | None
    outcome: SecureOutcome
    left_out: dict[int, str] = field(default_factory=dict)  # banks of a group whose sum kept failing its checks


def checked_secure_sum(
    grid: Grid,
    messages: Sequence[Message],
    length: int,
    fraction: float,
    timeout: float | None,
    read: Callable[[np.ndarray, int], T],
    collect: dict[str, Any] | None = None,
    check: Callable[[RecordDict], Any] | None = None,
    complete: bool = False,
) -> CheckedSum[T]:
    """`secure_sum`, and a total that `read(total, banks)` refuses (whatever it raises) is neither used nor fatal.

    A bank that corrupts its masked vector corrupts the whole sum, and the
    coordinator cannot see whose vector it was. So the sum is taken again over
    the two halves of its banks, each a fresh secure sum, and a half whose
    total fails again is split again, down to groups of two or three banks:
    the totals that pass are added and used, the banks of a group that still
    fails are left out with the reason. Only sums over at least `MIN_GROUP`
    banks are ever unmasked, and only of disjoint groups, so no bank's numbers
    are revealed; the price is that the coordinator learns the sums of those
    groups, and that a corrupting bank's group-mates are left out with it.
    `complete` (see `secure_sum`) holds for every sum it takes, the groups' too.
    """
    requests = {m.metadata.dst_node_id: (m.content, m.metadata.message_type) for m in messages}

    def resum(nodes: list[int]) -> SecureOutcome:
        """A fresh secure sum of the same messages over `nodes` only."""
        fresh = [
            Message(content=RecordDict(dict(requests[n][0].items())), message_type=requests[n][1], dst_node_id=n)
            for n in nodes
        ]
        return secure_sum(grid, fresh, length, fraction, timeout, collect, check, complete)

    outcome = secure_sum(grid, messages, length, fraction, timeout, collect, check, complete)
    if outcome.total is None:
        return CheckedSum(None, outcome)
    try:
        return CheckedSum(read(outcome.total, len(outcome.contributors)), outcome)
    except Exception as err:  # noqa: BLE001 - whatever a corrupted total makes a check raise, it is not used
        log(WARNING, "secure sum: the total fails its checks (%s): summing again over halves of the banks", err)
        parts, left_out = _split(sorted(outcome.contributors), str(err), resum, read)
    merged = SecureOutcome(failed=dict(outcome.failed), refused=dict(outcome.refused), withheld=dict(outcome.withheld))
    for part in parts:
        merged.contributors.extend(part.contributors)
        merged.replies.update(part.replies)
        merged.info.update(part.info)
        for mine, theirs in (
            (merged.failed, part.failed),
            (merged.refused, part.refused),
            (merged.withheld, part.withheld),
        ):
            mine.update({n: r for n, r in theirs.items() if n not in left_out})
    merged.contributors.sort()
    if not parts:
        merged.reason = "secure aggregation: every group's sum failed its checks: " + next(iter(left_out.values()), "")
        return CheckedSum(None, merged, left_out)
    merged.total = np.sum([p.total for p in parts], axis=0)
    try:
        return CheckedSum(read(merged.total, len(merged.contributors)), merged, left_out)
    except Exception as err:  # noqa: BLE001 - each part passed: their sum can only fail a bound of its own
        merged.reason, merged.total = f"secure aggregation: the groups' summed total fails its checks: {err}", None
        return CheckedSum(None, merged, left_out)


def _split(
    nodes: list[int],
    reason: str,
    resum: Callable[[list[int]], SecureOutcome],
    read: Callable[[np.ndarray, int], Any],
) -> tuple[list[SecureOutcome], dict[int, str]]:
    """The passing sums of the groups under `nodes`, and the banks of the groups whose sums keep failing."""
    if len(nodes) < 2 * MIN_GROUP:
        why = (
            f"left out: the secure sum of its group of {len(nodes)} banks {sorted(nodes)} failed its checks "
            f"({reason}): one of them corrupts its masked vector"
        )
        log(WARNING, "secure sum: %s", why)
        return [], {n: why for n in nodes}
    parts: list[SecureOutcome] = []
    left_out: dict[int, str] = {}
    for half in (nodes[0::2], nodes[1::2]):
        outcome = resum(half)
        if outcome.total is None:  # too few got through: like any failed sum, nothing from this half
            reasons = outcome.reasons()
            left_out.update({n: reasons.get(n, f"left out: {outcome.reason}") for n in half})
            continue
        try:
            read(outcome.total, len(outcome.contributors))
        except Exception as err:  # noqa: BLE001 - as above: a total its check cannot take is not used
            more, out = _split(sorted(outcome.contributors), str(err), resum, read)
            parts.extend(more)
            left_out.update(out)
            continue
        parts.append(outcome)
    return parts, left_out
