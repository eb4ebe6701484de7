"""One exchange with the banks: send, wait, read every reply through its check, sort the outcome per bank.

Every conversation of the coordinator (statistics, training and evaluation
rounds, personalisation, each stage of a secure sum) is one call of
`exchange`, so each reply meets the same rules: a reply from a node that
was not asked, or that already answered, is ignored; an error reply is the
bank's failure; a reply its `read` function cannot take (a `ProtocolError`,
or any other exception while reading it: a hostile bank must not be able to
stop the run by making a check raise) refuses that bank with the reason,
and the exchange goes on with the others. Outcomes are keyed by node id;
bank names are resolved once, by the caller that records them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import WARNING
from typing import Any, Generic, TypeVar

from flwr.app import Message
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.federation.protocol import ProtocolError
from fedcredit.federation.secagg import SecAggError

T = TypeVar("T")

# A refusal's reason is one line of the history: a reply crafted to produce a huge error text is cut here.
MAX_REASON = 500
MAX_FAILURE = 2000  # a bank's own error may list several problems of its file


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def no_reply(timeout: float | None) -> str:
    """The reason recorded for a bank that was asked and never answered."""
    return "no reply" if timeout is None else f"no reply within {timeout:.0f} s"


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def failure(reason: str) -> str:
    """A bank's error reply as the history keeps it: no terminal colour codes, a traceback cut to its last
    lines (the exception), at most MAX_FAILURE characters: Ray's wrapped tracebacks run to kilobytes."""
    text = _ANSI.sub("", str(reason)).replace("\r", "")
    if "Traceback (most recent call last)" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = " | ".join(lines[-2:])
    return _cut(text.strip(), MAX_FAILURE)


def refusal(err: BaseException) -> str:
    """The reason recorded for a reply that its check did not accept."""
    text = (
        str(err) if isinstance(err, (ProtocolError, SecAggError)) else f"{type(err).__name__} while reading it: {err}"
    )
    return "reply refused: " + _cut(" ".join(text.split()), MAX_REASON)


@dataclass
class Outcome(Generic[T]):
    """One exchange, bank by bank (node ids): what each reply gave, or why it gave nothing."""

    asked: list[int] = field(default_factory=list)
    ok: dict[int, T] = field(default_factory=dict)  # what `read` returned for each accepted reply
    replies: dict[int, Message] = field(default_factory=dict)  # the accepted replies themselves
    failed: dict[int, str] = field(default_factory=dict)  # the bank's error reply
    refused: dict[int, str] = field(default_factory=dict)  # its reply broke the protocol
    timeout: float | None = None

    @property
    def missing(self) -> list[int]:
        """Banks asked that never answered, in the order they were asked."""
        return [n for n in self.asked if n not in self.ok and n not in self.failed and n not in self.refused]

    def answered(self, node: int) -> bool:
        return node in self.ok or node in self.failed or node in self.refused

    def reasons(self, prefix: str = "") -> dict[int, str]:
        """Every bank that contributed nothing, with why (failed, refused, or no reply), each prefixed."""
        out = {**self.failed, **self.refused, **{n: no_reply(self.timeout) for n in self.missing}}
        return {n: prefix + why for n, why in out.items()}


def record_by_bank(
    record: dict[str, Any], outcome: Outcome[T], names: Mapping[int, str], pooled: Callable[[list[T]], Any]
) -> None:
    """A per-bank file's share of an exchange (profile.json, reasons.json): each bank's part by name, and the sum.

    Accepted banks in node order, so the pooled sum does not depend on who
    answered first; refused banks with the check that failed; failed or
    silent banks added to `record["failed"]` with why.
    """
    accepted = sorted(outcome.ok)
    record["banks"] = {names[n]: outcome.ok[n] for n in accepted}
    record["pooled"] = pooled([outcome.ok[n] for n in accepted])
    record["pooled-over"] = [names[n] for n in accepted]
    record["refused"] = {names[n]: why for n, why in outcome.refused.items()}
    failed = {**outcome.failed, **{n: no_reply(outcome.timeout) for n in outcome.missing}}
    record["failed"].update({names[n]: why for n, why in failed.items()})


def exchange(
    grid: Grid,
    messages: Iterable[Message],
    read: Callable[[Message], T],
    timeout: float | None,
    what: str,
) -> Outcome[T]:
    """Send `messages` (one per bank) and read each reply with `read`; `what` names the exchange in the log."""
    messages = list(messages)
    outcome: Outcome[T] = Outcome(asked=[m.metadata.dst_node_id for m in messages], timeout=timeout)
    asked = set(outcome.asked)
    replies = grid.send_and_receive(messages, timeout=timeout) if messages else []
    for reply in replies:
        node = reply.metadata.src_node_id
        if node not in asked or outcome.answered(node):
            log(WARNING, "%s: ignored a reply from node %s, which was not asked or already answered", what, node)
            continue
        if reply.has_error():
            outcome.failed[node] = failure(reply.error.reason)
            log(WARNING, "%s: bank node %s failed: %s", what, node, short_reason(reply.error.reason))
            continue
        try:
            value = read(reply)
        except Exception as err:  # noqa: BLE001 - whatever a reply makes a check raise refuses that bank only
            outcome.refused[node] = refusal(err)
            log(WARNING, "%s: reply of bank node %s refused: %s", what, node, outcome.refused[node])
            continue
        outcome.ok[node] = value
        outcome.replies[node] = reply
    return outcome


def short_reason(reason: str, limit: int = 200) -> str:
    """One line of a ClientApp error for the log (history.json keeps it whole)."""
    text = re.sub(r"^<class '[\w.]+'>:<'(.*)'>$", r"\1", reason.strip(), flags=re.DOTALL)
    return _cut(" ".join(text.split()), limit)
