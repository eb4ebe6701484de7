"""The one exchange every coordinator conversation goes through: how replies are sorted per bank."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Error, Message, RecordDict

from fedcredit.deploy.inprocess import serverapp_identity
from fedcredit.federation.exchange import exchange, no_reply, short_reason
from fedcredit.federation.protocol import ProtocolError


@pytest.fixture(autouse=True)
def task_identity():
    with serverapp_identity():
        yield


class ScriptedGrid:
    """Answers each message as `script[node]` says: a value for the reply, "error", "silent"; extra replies too."""

    def __init__(self, script: dict[int, object], extra: list[tuple[int, object]] = ()) -> None:
        self.script, self.extra = script, list(extra)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            what = self.script[msg.metadata.dst_node_id]
            if what == "silent":
                continue
            replies.append(self._reply(msg, what))
        for node, what in self.extra:  # replies the coordinator did not ask for, or a second answer
            msg = next((m for m in messages if m.metadata.dst_node_id == node), messages[0])
            reply = self._reply(msg, what)
            reply.metadata.__dict__["_src_node_id"] = node
            replies.append(reply)
        return replies

    @staticmethod
    def _reply(msg: Message, what: object) -> Message:
        if what == "error":
            return Message(Error(code=1, reason="bank down"), reply_to=msg)
        return Message(RecordDict({"config": ConfigRecord({"v": str(what)})}), reply_to=msg)


def _messages(nodes):
    return [Message(RecordDict({"config": ConfigRecord({"q": 1})}), message_type="query", dst_node_id=n) for n in nodes]


def _read(reply: Message) -> str:
    value = str(reply.content.config_records["config"]["v"])
    if value == "protocol":
        raise ProtocolError("breaks the protocol")
    if value == "deep":
        raise RecursionError("maximum recursion depth exceeded")
    if value == "digits":
        raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")
    if value == "huge":
        raise MemoryError()
    return value


def test_every_bank_is_sorted_once_whatever_its_reply_makes_the_check_raise():
    script = {1: "ok", 2: "error", 3: "silent", 4: "protocol", 5: "deep", 6: "digits", 7: "huge"}
    outcome = exchange(ScriptedGrid(script), _messages(list(script)), _read, 30.0, "test")
    assert outcome.ok == {1: "ok"} and set(outcome.replies) == {1}
    assert outcome.failed == {2: "bank down"}
    assert outcome.missing == [3]
    assert outcome.refused[4] == "reply refused: breaks the protocol"
    assert outcome.refused[5].startswith("reply refused: RecursionError while reading it")
    assert outcome.refused[6].startswith("reply refused: ValueError while reading it: Exceeds the limit")
    assert outcome.refused[7].startswith("reply refused: MemoryError")
    assert outcome.reasons()[3] == no_reply(30.0) == "no reply within 30 s"
    assert set(outcome.reasons()) == {2, 3, 4, 5, 6, 7}


def test_replies_from_nodes_not_asked_or_answering_twice_are_ignored():
    grid = ScriptedGrid({1: "first", 2: "ok"}, extra=[(1, "second"), (99, "stranger")])
    outcome = exchange(grid, _messages([1, 2]), _read, None, "test")
    assert outcome.ok == {1: "first", 2: "ok"} and not outcome.failed and not outcome.refused


def test_a_refusal_reason_is_one_bounded_line():
    def read(reply):
        raise ProtocolError("x\n" * 10_000)

    outcome = exchange(ScriptedGrid({1: "ok"}), _messages([1]), read, 1.0, "test")
    assert "\n" not in outcome.refused[1] and len(outcome.refused[1]) <= len("reply refused: ") + 500


def test_short_reason_unwraps_flower_error_text():
    reason = (
        "<class 'fedcredit.core.loading.DataValidationError'>:<'/x/bank.csv: cannot be used:\n  - missing columns'>"
    )
    assert short_reason(reason) == "/x/bank.csv: cannot be used: - missing columns"
