"""Bank identity beyond secure mode: signed replies checked by the coordinator, and each bank's egress log."""

from __future__ import annotations

import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedcredit.core.schema import LENDING_CLUB
from fedcredit.deploy import inprocess
from fedcredit.deploy.inprocess import InProcessGrid, serverapp_identity
from fedcredit.federation import signed_replies
from fedcredit.federation.statistics import gather
from fedcredit.identity import egress, signing
from fedcredit.identity.roster import ROSTER_FILE, file_sha256, load_roster, public_bytes, roster_text

BANKS = 3
NAMES = [f"bank-{i}" for i in range(BANKS)]
CONFIG = {"partitioning": "iid", "seed": 7}


@pytest.fixture(autouse=True)
def task_identity():
    with serverapp_identity():
        yield


@pytest.fixture
def consortium(tmp_path, monkeypatch):
    """An app with a roster of three banks; each bank's key, pin and egress log in its node config."""
    keys = {name: Ed25519PrivateKey.generate() for name in NAMES}
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_bytes((inprocess.APP_DIR / "pyproject.toml").read_bytes())
    (app / ROSTER_FILE).write_text(roster_text({n: public_bytes(k) for n, k in keys.items()}))
    pin = file_sha256(app / ROSTER_FILE)
    grid = InProcessGrid(CONFIG, BANKS)
    for i, (name, key) in enumerate(keys.items()):
        path = tmp_path / f"{name}.sign.key"
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.write_bytes(pem)
        os.chmod(path, 0o600)
        grid.contexts[11 + i].node_config = {
            "partition-id": i,
            "num-partitions": BANKS,
            "bank-name": name,
            "signing-key": str(path),
            "roster-sha256": pin,
            "egress-log": str(tmp_path / f"{name}.egress.jsonl"),
        }
    monkeypatch.setattr(inprocess.client_app(), "APP_DIR", app)
    return keys, grid, app, tmp_path


def _gather(grid, app):
    from fedcredit.core.config import RunConfig

    signed = signed_replies.signed_grid(grid, app)
    return signed, gather(signed, RunConfig(), LENDING_CLUB, grid.get_node_ids(), None)


def test_a_reply_signed_with_another_banks_key_is_refused_and_the_others_go_on(consortium):
    keys, grid, app, _ = consortium
    roster = load_roster(app / ROSTER_FILE)

    def forge(kind, content, msg):  # node 11 claims bank-1's name, but only has its own key
        content.config_records.pop(signing.IDENTITY)
        return content

    real_send = grid.send_and_receive

    def send(messages, *, timeout=None):
        replies = real_send(messages, timeout=timeout)
        for reply in replies:
            if reply.metadata.src_node_id == 11 and not reply.has_error():
                forge(None, reply.content, None)
                signing.sign_reply(keys["bank-0"], "bank-1", roster, reply)
        return replies

    grid.send_and_receive = send
    signed, federation = _gather(grid, app)
    assert sorted(b.name for b in federation.banks.values()) == ["bank-1", "bank-2"]
    assert "does not verify" in federation.failed[11] and "identity" in federation.failed[11]
    assert signed.banks == {12: "bank-1", 13: "bank-2"}


def test_an_unsigned_reply_is_refused_when_the_app_ships_a_roster(consortium):
    _, grid, app, _ = consortium
    real_send = grid.send_and_receive

    def send(messages, *, timeout=None):
        replies = real_send(messages, timeout=timeout)
        replies[0].content.config_records.pop(signing.IDENTITY)
        return replies

    grid.send_and_receive = send
    _, federation = _gather(grid, app)
    assert "not signed" in federation.failed[11] and len(federation.banks) == 2


def test_bank_names_come_from_the_roster(consortium):
    _, grid, app, _ = consortium
    _, federation = _gather(grid, app)
    assert sorted(b.name for b in federation.banks.values()) == NAMES


def _log(tmp_path, name):
    return tmp_path / f"{name}.egress.jsonl"


def test_the_egress_log_has_one_verified_line_per_reply_and_tampering_is_detected(consortium):
    _, grid, app, tmp_path = consortium
    _gather(grid, app)
    _gather(grid, app)  # two exchanges: two replies per bank
    roster = load_roster(app / ROSTER_FILE)
    path = _log(tmp_path, "bank-0")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    result = egress.audit(lines, roster)
    assert not result.problems and result.kinds == {"query": 2} and result.banks == {"bank-0"}
    first = json.loads(lines[0])
    assert set(first["records"]) == {"bank-info", "numeric-stats", "category-counts", "bank"}
    edited = json.dumps({**first, "records": {**first["records"], "bank": 1}}, sort_keys=True, separators=(",", ":"))
    assert egress.audit([edited, lines[1]], roster).problems  # edited
    assert egress.audit([lines[1]], roster).problems  # the first removed
    assert egress.audit([lines[1], lines[0]], roster).problems  # reordered
    assert egress.audit(lines + _log(tmp_path, "bank-1").read_text().splitlines()[:1], roster).problems  # spliced


def test_without_a_roster_nothing_is_signed_or_logged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = InProcessGrid(CONFIG, BANKS)
    _, federation = _gather(grid, inprocess.APP_DIR)
    assert len(federation.banks) == BANKS and not list(tmp_path.iterdir())


def test_fedcredit_audit_verifies_a_log_and_fails_an_edited_one(consortium, capsys):
    from fedcredit.cli import main

    _, grid, app, tmp_path = consortium
    _gather(grid, app)
    path = _log(tmp_path, "bank-0")
    assert main(["audit", str(path), "--roster", str(app / ROSTER_FILE)]) == 0
    out = capsys.readouterr().out
    assert "query: 1 message(s)" in out and "verified" in out and "NOT" not in out
    path.write_text(path.read_text().replace('"bank-info":', '"raw-rows":'))
    assert main(["audit", str(path), "--roster", str(app / ROSTER_FILE)]) == 1
    assert "FAILED line 1" in capsys.readouterr().out


def test_an_error_reply_is_logged_without_records_and_still_verifies(consortium):
    """What a failing bank sends (an error and its text) left the bank too: one line, no records, the error's kind."""
    _, grid, app, tmp_path = consortium
    config = grid.contexts[11].node_config
    del config["partition-id"], config["num-partitions"]
    config["data-path"] = str(tmp_path / "no-such-loans.csv")
    _, federation = _gather(grid, app)
    assert 11 in federation.failed and len(federation.banks) == 2
    lines = _log(tmp_path, "bank-0").read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["records"] == {} and entry["error"] and "no-such-loans" not in lines[0]
    result = egress.audit(lines, load_roster(app / ROSTER_FILE))
    assert not result.problems and result.errors == {"query": 1} and result.bytes == 0
