"""The consortium roster and reply signatures: who signed what, for which run and message."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedcredit.deploy.inprocess import serverapp_identity
from fedcredit.identity import signing
from fedcredit.identity.bank import bank_identity
from fedcredit.identity.roster import ROSTER_FILE, RosterError, file_sha256, parse_roster, public_bytes, roster_text


@pytest.fixture(autouse=True)
def task_identity():
    with serverapp_identity():
        yield


def _keys(*names: str) -> dict[str, Ed25519PrivateKey]:
    return {n: Ed25519PrivateKey.generate() for n in names}


def _roster(keys):
    return parse_roster(roster_text({n: public_bytes(k) for n, k in keys.items()}).encode())


def _reply(content: RecordDict) -> Message:
    request = Message(content=RecordDict({"c": ConfigRecord({"x": 1})}), dst_node_id=7, message_type="train")
    return Message(content=content, reply_to=request)


def test_roster_round_trip_is_sorted_and_refuses_a_shared_key():
    keys = _keys("bank-b", "bank-a")
    text = roster_text({n: public_bytes(k) for n, k in keys.items()})
    assert text.index('"bank-a"') < text.index('"bank-b"')
    roster = parse_roster(text.encode())
    assert roster.banks["bank-a"] == public_bytes(keys["bank-a"])
    same = public_bytes(keys["bank-a"])
    with pytest.raises(RosterError, match="same key"):
        parse_roster(roster_text({"x": same, "y": same}).encode())
    with pytest.raises(RosterError, match="not on the consortium roster"):
        roster.public_key("bank-c")


def test_a_signed_reply_verifies_and_an_edited_or_impersonated_one_does_not():
    keys = _keys("bank-a", "bank-b")
    roster = _roster(keys)
    reply = _reply(RecordDict({"metrics": MetricRecord({"auc": 0.7})}))
    signing.sign_reply(keys["bank-a"], "bank-a", roster, reply)
    assert signing.verify_reply(roster, reply, None) == "bank-a"
    assert signing.IDENTITY not in reply.content.config_records  # taken off once checked

    edited = _reply(RecordDict({"metrics": MetricRecord({"auc": 0.7})}))
    signing.sign_reply(keys["bank-a"], "bank-a", roster, edited)
    edited.content.metric_records["metrics"]["auc"] = 0.9
    with pytest.raises(signing.SignatureError, match="does not verify"):
        signing.verify_reply(roster, edited, None)

    forged = _reply(RecordDict({"metrics": MetricRecord({"auc": 0.7})}))
    signing.sign_reply(keys["bank-b"], "bank-a", roster, forged)  # bank-b's key, bank-a's name
    with pytest.raises(signing.SignatureError, match="does not verify"):
        signing.verify_reply(roster, forged, None)

    other = _reply(RecordDict({"metrics": MetricRecord({"auc": 0.7})}))
    signing.sign_reply(keys["bank-b"], "bank-b", roster, other)
    with pytest.raises(signing.SignatureError, match="this node is 'bank-a'"):
        signing.verify_reply(roster, other, "bank-a")


def test_a_bank_refuses_a_roster_it_did_not_pin(tmp_path):
    keys = _keys("bank-a", "bank-b")
    (tmp_path / ROSTER_FILE).write_text(roster_text({n: public_bytes(k) for n, k in keys.items()}))
    key_path = tmp_path / "bank-a.sign.key"
    key_path.write_bytes(
        keys["bank-a"].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_path, 0o600)
    roster_sha = file_sha256(tmp_path / ROSTER_FILE)
    with pytest.raises(RosterError, match="pinned none"):
        bank_identity({"signing-key": str(key_path)}, tmp_path, "bank-a")
    with pytest.raises(RosterError, match="not the 00"):
        bank_identity({"signing-key": str(key_path), "roster-sha256": "00" * 32}, tmp_path, "bank-a")
    ident = bank_identity({"signing-key": str(key_path), "roster-sha256": roster_sha}, tmp_path, "bank-a")
    assert ident is not None and ident.name == "bank-a"
    with pytest.raises(RosterError, match="another key"):
        bank_identity({"signing-key": str(key_path), "roster-sha256": roster_sha}, tmp_path, "bank-b")
    os.chmod(key_path, 0o644)
    with pytest.raises(RosterError, match="chmod 600"):
        bank_identity({"signing-key": str(key_path), "roster-sha256": roster_sha}, tmp_path, "bank-a")
    assert bank_identity({}, tmp_path / "nowhere", "bank-a") is None  # simulation: no roster, no pin
    with pytest.raises(RosterError, match="ships none"):
        bank_identity({"roster-sha256": roster_sha}, tmp_path / "nowhere", "bank-a")
