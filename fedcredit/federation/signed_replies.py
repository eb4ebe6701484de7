"""Bank identity beyond secure mode: every reply is signed at the bank, logged there, and verified by the coordinator.

With a consortium roster (`fedcredit.identity`), `identity_mod` (outermost on
the ClientApp, so it sees the final reply, after secure mode's masking) signs
each reply over its run, request, kind, round group, bank, roster and content
digest, and appends a line to the bank's egress log. `SignedGrid` wraps the
coordinator's Grid: before any check reads a reply, its signature is verified
against the roster and the identity record taken off, so it is never read as
data; a reply that fails (unsigned, another bank's key, a node that changes
its name) becomes an error reply with the reason, and the run goes on with
the other banks. Without a roster (simulations) both do nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.federation import protocol
from fedcredit.federation.secure_bank import identity_of
from fedcredit.identity import egress
from fedcredit.identity.roster import ROSTER_FILE, Roster, RosterError, load_roster
from fedcredit.identity.signing import IDENTITY, SignatureError, sign_reply, verify_reply

REFUSED = "identity"  # the error-reply prefix of a reply whose signature was refused


def egress_path(node_config: dict[str, Any] | Any) -> Path:
    """`egress-log` from the node config, else the bank's model dir, else next to its CSV, else here."""
    if egress.EGRESS_LOG in node_config:
        return Path(str(node_config[egress.EGRESS_LOG]))
    for key in ("model-dir", "work-dir"):
        if key in node_config:
            return Path(str(node_config[key])) / egress.EGRESS_FILE
    if "data-path" in node_config and Path(str(node_config["data-path"])).suffix:
        return Path(str(node_config["data-path"])).resolve().parent / egress.EGRESS_FILE
    return Path(egress.EGRESS_FILE).resolve()


def _entry(request: Message, records: dict[str, int], **outcome: str) -> dict[str, Any]:
    """One log line's fields for the reply to `request`: what was asked, and what left (records, digest or error)."""
    meta = request.metadata
    return {
        "run": int(meta.run_id),
        "kind": str(meta.message_type),
        "round": str(meta.group_id),
        "reply-to": str(meta.message_id),
        "records": records,
        **outcome,
    }


def _records(reply: Message) -> dict[str, int]:
    return {name: _size(record) for name, record in reply.content.items() if name != IDENTITY}


def _size(record: Any) -> int:
    """Bytes of a record as Flower serialises it (its deflated form is what is hashed)."""
    return len(record.deflate())


def make_identity_mod(app_dir: Callable[[], str | Path]) -> Callable[[Message, Context, Callable], Message]:
    """The ClientApp mod for the app whose directory (where a consortium roster ships) `app_dir()` gives."""

    def identity_mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        try:
            identity = identity_of(context, app_dir())
        except RosterError as err:
            log(WARNING, "fedcredit bank: run refused: %s", err)
            return Message(Error(code=protocol.ERROR_CODE, reason=f"{REFUSED}: {err}"), reply_to=msg)
        log_path = egress_path(context.node_config)
        try:
            reply = call_next(msg, context)
        except Exception as err:  # Flower turns it into an error reply carrying its text: that leaves the bank too
            if identity is not None:
                egress.append(log_path, identity.key, identity.name, _entry(msg, {}, error=type(err).__name__))
            raise
        if identity is None:
            return reply
        if reply.has_error():
            egress.append(
                log_path, identity.key, identity.name, _entry(msg, {}, error=f"error code {reply.error.code}")
            )
            return reply
        digest = sign_reply(identity.key, identity.name, identity.roster, reply)
        egress.append(log_path, identity.key, identity.name, _entry(msg, _records(reply), content=digest))
        return reply

    return identity_mod


def coordinator_roster(app_dir: str | Path | None) -> Roster | None:
    """The roster the app ships (None: identity off); a roster that does not load stops the run before it starts."""
    if app_dir is None or not (Path(app_dir) / ROSTER_FILE).is_file():
        return None
    roster = load_roster(Path(app_dir) / ROSTER_FILE)
    log(
        INFO, "fedcredit: consortium roster %s (%d banks): every reply must be signed", roster.sha256, len(roster.banks)
    )
    return roster


class SignedGrid:
    """The coordinator's Grid with every reply's signature checked against the roster before anything reads it."""

    def __init__(self, grid: Grid, roster: Roster | None) -> None:
        self._grid, self.roster = grid, roster
        self.banks: dict[int, str] = {}  # node -> the roster bank it proved to be
        self.refused: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return [self._verified(r) for r in self._grid.send_and_receive(messages, timeout=timeout)]

    def _verified(self, reply: Message) -> Message:
        if reply.has_error():
            return reply
        if self.roster is None:  # no roster here: a signature cannot be checked, and is never read as data
            reply.content.config_records.pop(IDENTITY, None)
            return reply
        node = reply.metadata.src_node_id
        try:
            bank = verify_reply(self.roster, reply, self.banks.get(node))
            claimed = [n for n, b in self.banks.items() if b == bank and n != node]
            if claimed:
                raise SignatureError(f"bank {bank!r} already answers from node {claimed[0]}")
        except Exception as err:  # noqa: BLE001 - whatever a hostile reply makes the check meet refuses that bank only
            reason = f"{REFUSED}: reply refused: {err}"
            self.refused.append(f"node {node}: {err}")
            log(WARNING, "fedcredit: reply of node %s refused: %s", node, err)
            return Message(metadata=reply.metadata, error=Error(code=protocol.ERROR_CODE, reason=reason))
        self.banks[node] = bank
        info = reply.content.config_records.get(protocol.BANK_INFO)
        if info is not None:
            info["name"] = bank  # the name the roster gives, whatever the bank wrote
        return reply


def signed_grid(grid: Grid, app_dir: str | Path | None) -> SignedGrid:
    """`grid` with every reply's identity checked (with a roster) or its identity record dropped (without)."""
    return SignedGrid(grid, coordinator_roster(app_dir))


def allowed_records() -> set[str]:
    """Every record name the protocol lets leave a bank (`LEAVES_A_BANK`, and secure mode's `secagg` record)."""
    return {name for records in protocol.LEAVES_A_BANK.values() for name in records} | {protocol.SECAGG}
