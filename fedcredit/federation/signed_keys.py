"""Signed key-agreement keys in secure mode: banks authenticate each other's keys against the roster.

Without signatures the coordinator relays the banks' public keys and could
substitute its own for a bank's, agree masks and share keys with the others
in its place and unmask that bank. With the consortium roster
(`fedcredit.identity`), every bank signs what it advertises — its two fresh
public keys, together with the run, the sum's session, what is summed and in
which round, the threshold, its node id, its bank name and the roster it
pinned — and every bank verifies every peer's signature against the roster
before it derives any pair secret or encrypts a single share. A peer whose
keys do not verify makes the bank abort the sum, naming that bank.

The signed fields tie a signature to one sum: another run, session, sum,
round, threshold, node, bank or roster gives another statement, and a bank
advertises at most once per session of a run (`secure_bank`), so an honest
bank's signature cannot be replayed into another sum. Identity off (no
roster shipped: a simulation) leaves the sum as it was, unauthenticated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedcredit.federation.secagg import SecAggError
from fedcredit.identity.bank import BankIdentity
from fedcredit.identity.roster import RosterError
from fedcredit.identity.signing import SignatureError, sign, verify

KEYS = "fedcredit-secagg-keys/1"  # the purpose tag of a key advertisement's signature


@dataclass(frozen=True)
class SumId:
    """Which sum a key advertisement belongs to: every field is in the signature."""

    run: int
    session: str
    kind: str  # the message type of the wrapped messages (query, train, evaluate, ...)
    round: int  # their server round, 0 when they have none
    threshold: int


def key_fields(sum_id: SumId, node: int, bank: str, roster_sha256: str, pk1: bytes, pk2: bytes) -> dict[str, Any]:
    """What a key advertisement's signature covers (bytes as hex: the statement is JSON)."""
    return {
        "run": int(sum_id.run),
        "session": str(sum_id.session),
        "sum": str(sum_id.kind),
        "round": int(sum_id.round),
        "threshold": int(sum_id.threshold),
        "node": int(node),
        "bank": bank,
        "roster": roster_sha256,
        "pk1": pk1.hex(),
        "pk2": pk2.hex(),
    }


def sign_keys(identity: BankIdentity, sum_id: SumId, node: int, pk1: bytes, pk2: bytes) -> bytes:
    return sign(identity.key, KEYS, key_fields(sum_id, node, identity.name, identity.roster.sha256, pk1, pk2))


def verify_directory(
    identity: BankIdentity,
    sum_id: SumId,
    own_node: int,
    public_keys: Mapping[int, tuple[bytes, bytes]],
    banks: Sequence[Any],
    signatures: Sequence[Any],
) -> dict[int, str]:
    """Every advertised key pair checked against the roster: {node: bank name}; SecAggError names a bank that fails.

    `public_keys`, `banks`, `signatures`: what the coordinator relayed, in the
    order of `public_keys`. Each bank must be on the roster and appear once;
    this bank's own entry must carry its own name (its keys are compared by
    the caller); every other entry's signature must verify for this sum.
    """
    nodes = list(public_keys)
    if len(banks) != len(nodes) or len(signatures) != len(nodes):
        raise SecAggError(
            "the coordinator relayed the banks' keys without their bank names and signatures: this run has a "
            "consortium roster, so no key is used unless its bank signed it"
        )
    names: dict[int, str] = {}
    seen: dict[str, int] = {}
    for node, bank in zip(nodes, banks, strict=True):
        if not isinstance(bank, str) or not bank:
            raise SecAggError(f"the keys of node {node} name no bank: refusing them (aborting this sum)")
        if bank in seen:
            raise SecAggError(f"bank {bank!r} advertised keys twice (nodes {seen[bank]} and {node}): aborting this sum")
        if bank not in identity.roster.banks:
            raise SecAggError(
                f"bank {bank!r}'s key failed: {bank!r} is not on the consortium roster (aborting this sum)"
            )
        seen[bank], names[node] = node, bank
    if names.get(own_node) != identity.name:
        raise SecAggError(f"the coordinator relayed this bank's keys under the name {names.get(own_node)!r}")
    for node, signature in zip(nodes, signatures, strict=True):
        if node == own_node:
            continue
        bank = names[node]
        pk1, pk2 = public_keys[node]
        fields = key_fields(sum_id, node, bank, identity.roster.sha256, pk1, pk2)
        try:
            verify(identity.roster.public_key(bank), signature, KEYS, fields, "its advertisement")
        except (SignatureError, RosterError) as err:
            raise SecAggError(
                f"bank {bank!r}'s key failed verification (node {node}; {err}): these keys were not signed by "
                f"{bank!r} for this sum (run {sum_id.run}, session {sum_id.session}), aborting this sum"
            ) from None
    return names
