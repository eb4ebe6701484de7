"""Signatures on what a bank sends: a statement of who, for which run and message, and a digest of the content.

A statement is canonical JSON (sorted keys, a version tag naming its purpose)
signed with the bank's Ed25519 key, so a signature made for one purpose,
run or message can never be replayed as another. A reply's content digest is
Flower's own object id of the reply's RecordDict without the identity record:
the SHA-256 of the content-addressed serialisation Flower sends and checks,
which therefore comes out the same at the bank and at the coordinator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flwr.app import ConfigRecord, Message, RecordDict

from fedcredit.identity.roster import Roster, RosterError

IDENTITY = "fedcredit.identity"  # the ConfigRecord a signed reply carries: bank name and signature
REPLY = "fedcredit-reply/1"
SIGNATURE_BYTES = 64


class SignatureError(ValueError):
    """A signature that is missing, malformed or does not verify against the roster; says whose and why."""


def statement(purpose: str, fields: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the purpose tag and the fields, canonical JSON."""
    return json.dumps({"purpose": purpose, **fields}, sort_keys=True, separators=(",", ":")).encode()


def sign(key: Ed25519PrivateKey, purpose: str, fields: Mapping[str, Any]) -> bytes:
    return key.sign(statement(purpose, fields))


def verify(public: Ed25519PublicKey, signature: Any, purpose: str, fields: Mapping[str, Any], who: str) -> None:
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"{who}: no Ed25519 signature ({SIGNATURE_BYTES} bytes)")
    try:
        public.verify(signature, statement(purpose, fields))
    except InvalidSignature:
        raise SignatureError(f"{who}: the signature does not verify against the roster's key") from None


def content_digest(content: RecordDict) -> str:
    """SHA-256 (Flower's object id) of a reply's content without its identity record."""
    return RecordDict({name: record for name, record in content.items() if name != IDENTITY}).object_id


def reply_fields(reply: Message, bank: str, roster: Roster, digest: str) -> dict[str, Any]:
    """What a reply's signature binds: run, the request it answers, its kind and round, the bank, roster, content."""
    meta = reply.metadata
    return {
        "run": int(meta.run_id),
        "reply-to": str(meta.reply_to_message_id),
        "type": str(meta.message_type),
        "group": str(meta.group_id),
        "bank": bank,
        "roster": roster.sha256,
        "content": digest,
    }


def sign_reply(key: Ed25519PrivateKey, bank: str, roster: Roster, reply: Message) -> str:
    """Add the identity record to `reply` (last, after the content it covers); returns the content digest."""
    digest = content_digest(reply.content)
    signature = sign(key, REPLY, reply_fields(reply, bank, roster, digest))
    reply.content.config_records[IDENTITY] = ConfigRecord({"bank": bank, "signature": signature})
    return digest


def verify_reply(roster: Roster, reply: Message, expected_bank: str | None) -> str:
    """The roster bank that signed `reply` (its identity record is taken off); raises SignatureError otherwise.

    `expected_bank`: the name this node already proved (None on its first
    signed reply, whose claimed name is then checked against the roster).
    """
    record = reply.content.config_records.get(IDENTITY)
    if record is None:
        raise SignatureError("the reply is not signed (this run has a consortium roster: every reply must be)")
    bank, signature = record.get("bank"), record.get("signature")
    if not isinstance(bank, str):
        raise SignatureError("the reply's identity record names no bank")
    if expected_bank is not None and bank != expected_bank:
        raise SignatureError(f"the reply claims to be from {bank!r}, but this node is {expected_bank!r}")
    try:
        public = roster.public_key(bank)
    except RosterError as err:
        raise SignatureError(str(err)) from None
    digest = content_digest(reply.content)
    verify(public, signature, REPLY, reply_fields(reply, bank, roster, digest), f"reply from {bank!r}")
    reply.content.config_records.pop(IDENTITY)
    return bank
