"""A federation in one process: the real ServerApp logic against the real ClientApp handlers.

`InProcessGrid` is a Flower Grid whose simulated banks answer every message
with the handlers of `client_app.py`, in this process and in order; a
`Tamper` function may rewrite one bank's replies on their way back, as a
hostile bank would send them. Tests and benchmarks use it to drive
`fedcredit.federation.server.run` in seconds without a SuperLink.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from flwr.app import ArrayRecord, Context, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcredit.deploy.localrun import APP_DIR
from fedcredit.federation import protocol

# (message type, the bank's reply content, the request) -> the content to send instead (None: an error reply)
Tamper = Callable[[str, RecordDict, Message], RecordDict | None]


def boosted_update(factor: float) -> Tamper:
    """A hostile bank's trick: its update (its weights minus the global ones) multiplied by `factor`."""

    def tamper(kind: str, content: RecordDict, msg: Message) -> RecordDict:
        if kind == "train":
            glob = msg.content[protocol.ARRAYS].to_numpy_ndarrays()
            mine = content[protocol.ARRAYS].to_numpy_ndarrays()
            content[protocol.ARRAYS] = ArrayRecord([(g + factor * (w - g)).astype(w.dtype) for w, g in zip(mine, glob)])
        return content

    return tamper


def flipped_update(factor: float) -> Tamper:
    """Colluding banks' trick: the update pointing the other way, `factor` times as long."""
    return boosted_update(-factor)


def client_app() -> Any:
    """The app's `client_app` module (its directory first on the path, as Flower loads it)."""
    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))
    return importlib.import_module("client_app")


@contextlib.contextmanager
def serverapp_identity(run_id: int = 1) -> Iterator[None]:
    """Messages can only be built inside a run: act as the ServerApp of `run_id` meanwhile."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 1, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class InProcessGrid:
    """Simulated banks with node ids 11, 12, ...; `hostile` (a node id, or several colluding) is tampered with."""

    def __init__(
        self,
        run_config: Mapping[str, Any],
        num_banks: int,
        tamper: Tamper | None = None,
        hostile: int | Iterable[int] | None = None,
    ) -> None:
        self.app = client_app().app  # the ClientApp itself: it dispatches by message type, through its mods
        self.nodes = [11 + i for i in range(num_banks)]
        chosen = [self.nodes[0]] if hostile is None else [hostile] if isinstance(hostile, int) else list(hostile)
        self.hostile_nodes = set(chosen)
        self.hostile = chosen[0] if chosen else None
        self.tamper = tamper
        self.contexts = {
            n: Context(
                run_id=1,
                node_id=n,
                node_config={"partition-id": i, "num-partitions": num_banks},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i, n in enumerate(self.nodes)
        }

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            node, kind = msg.metadata.dst_node_id, msg.metadata.message_type
            reply = self.app(msg, self.contexts[node])
            if node in self.hostile_nodes and self.tamper is not None and not reply.has_error():
                content = self.tamper(kind, reply.content, msg)
                reply = (
                    Message(Error(code=1, reason="bank down"), reply_to=msg)
                    if content is None
                    else Message(content=content, reply_to=msg)
                )
            replies.append(reply)
        return replies
