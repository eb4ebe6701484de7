"""Signed keys in secure mode (issue 25): a coordinator that substitutes, strips or replays a bank's keys gets no sum.

In process, through the real ClientApp handlers and the real coordinator
stages: the app directory ships a consortium roster that every bank pinned,
and a hostile coordinator is a Grid wrapper that rewrites what it relays.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.primitives.asymmetric import generate_key_pairs, public_key_to_bytes

from fedcredit.core.schema import LENDING_CLUB
from fedcredit.deploy import inprocess
from fedcredit.deploy.inprocess import InProcessGrid, serverapp_identity
from fedcredit.federation import protocol, secure_bank, secure_sum, signed_keys, signed_replies
from fedcredit.federation.protocol import SECAGG, SECAGG_QUERY, ProtocolError
from fedcredit.federation.secagg import BankSession, SecAggError
from fedcredit.federation.statistics import collect_secure_statistics
from fedcredit.identity.bank import BankIdentity
from fedcredit.identity.roster import ROSTER_FILE, file_sha256, parse_roster, public_bytes, roster_text

CONFIG = {"partitioning": "iid", "seed": 7, "privacy.secure-aggregation": True}
BANKS = 4  # nodes 11..14 are bank-0..bank-3; threshold 3
NAMES = [f"bank-{i}" for i in range(BANKS)]


@pytest.fixture(autouse=True)
def task_identity():
    with serverapp_identity():
        yield


@pytest.fixture
def consortium(tmp_path, monkeypatch):
    """An app directory with a roster of four banks, each bank's key file and pin in its node config."""
    keys = {name: Ed25519PrivateKey.generate() for name in NAMES}
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_bytes((inprocess.APP_DIR / "pyproject.toml").read_bytes())  # the run config
    (app / ROSTER_FILE).write_text(roster_text({n: public_bytes(k) for n, k in keys.items()}))
    pin = file_sha256(app / ROSTER_FILE)
    node_configs = {}
    for i, (name, key) in enumerate(keys.items()):
        path = tmp_path / f"{name}.sign.key"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        os.chmod(path, 0o600)
        node_configs[11 + i] = {
            "partition-id": i,
            "num-partitions": BANKS,
            "bank-name": name,
            "signing-key": str(path),
            "roster-sha256": pin,
            "egress-log": str(tmp_path / f"{name}.egress.jsonl"),
        }
    monkeypatch.setattr(inprocess.client_app(), "APP_DIR", app)  # where the secagg handler finds the roster
    return keys, node_configs


class Coordinator(InProcessGrid):
    """The real banks behind a coordinator that may rewrite the key stages it relays; it records every stage sent."""

    def __init__(self, node_configs=None, rewrite=None) -> None:
        super().__init__(CONFIG, BANKS)
        for node, config in (node_configs or {}).items():
            self.contexts[node].node_config = config
        self.rewrite = rewrite  # (stage, node, the secagg record of the request or the reply, "request"|"reply")
        self.sent: list[tuple[str, str]] = []  # (message type, secure stage)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        for m in messages:
            record = m.content.config_records.get(SECAGG)
            self.sent.append((m.metadata.message_type, str(record["stage"]) if record else ""))
            if record is not None and self.rewrite and m.metadata.message_type == SECAGG_QUERY:
                self.rewrite(str(record["stage"]), m.metadata.dst_node_id, record, "request")
        replies = super().send_and_receive(messages, timeout=timeout)
        for m, r in zip(messages, replies, strict=True):
            if self.rewrite and m.metadata.message_type == SECAGG_QUERY and not r.has_error():
                stage = str(m.content.config_records[SECAGG]["stage"])
                self.rewrite(stage, r.metadata.src_node_id, r.content.config_records[SECAGG], "reply")
        return replies


def _statistics(grid):
    """The coordinator's statistics exchange, every reply through its signature check (the app's roster, if any)."""
    grid = signed_replies.signed_grid(grid, inprocess.client_app().APP_DIR)
    return collect_secure_statistics(grid, grid.get_node_ids(), 10.0, LENDING_CLUB, 0.6)


def _substitute(victim: int):
    """The coordinator swaps its own keys in for the victim's in the directory it relays to the other banks."""
    _, fake1 = generate_key_pairs()
    _, fake2 = generate_key_pairs()

    def rewrite(stage, node, record, way):
        if stage == "share" and way == "request":
            at = list(record["key-owners"]).index(victim)
            pk1s, pk2s = list(record["pk1s"]), list(record["pk2s"])
            pk1s[at], pk2s[at] = public_key_to_bytes(fake1), public_key_to_bytes(fake2)
            record["pk1s"], record["pk2s"] = pk1s, pk2s

    return rewrite


def test_with_a_roster_the_banks_sum_their_statistics_as_without(consortium, monkeypatch):
    _, node_configs = consortium
    signed_grid = Coordinator(node_configs)
    banks, failed, signed = _statistics(signed_grid)
    assert failed == {} and signed is not None and sorted(banks) == [11, 12, 13, 14]
    monkeypatch.setattr(inprocess.client_app(), "APP_DIR", inprocess.APP_DIR)  # identity off: the app ships no roster
    _, failed, plain = _statistics(Coordinator())
    assert failed == {} and plain is not None
    assert (signed.rows, signed.numeric, signed.categorical) == (plain.rows, plain.numeric, plain.categorical)
    assert ("query", protocol.MASK) in signed_grid.sent and (SECAGG_QUERY, "reveal") in signed_grid.sent


def test_a_coordinator_substituting_one_banks_key_makes_the_others_abort_naming_it_and_nothing_is_unmasked(
    consortium,
):
    _, node_configs = consortium
    grid = Coordinator(node_configs, _substitute(13))  # node 13 is bank-2
    _, failed, stats = _statistics(grid)
    assert stats is None
    for node in (11, 12, 14):
        assert "bank 'bank-2''s key failed verification (node 13" in failed[node], failed[node]
        assert "aborting this sum" in failed[node]
    assert "relayed this bank's own public keys wrongly" in failed[13]
    # Every bank stopped before masking: no masked vector was asked for, no share was revealed.
    assert {stage for _, stage in grid.sent} == {"advertise", "share"}


def test_identity_off_a_substituted_key_goes_unnoticed_by_the_other_banks(tmp_path):
    """Why issue 25: without a roster (a simulation) only the victim itself sees the substitution."""
    grid = Coordinator(None, _substitute(13))
    _, failed, _ = _statistics(grid)
    assert "relayed this bank's own public keys wrongly" in failed[13]
    assert not any("verification" in failed.get(n, "") for n in (11, 12, 14))


@pytest.mark.parametrize(
    "attack,reason",
    [
        ("strip", "without their bank names and signatures"),
        ("rename", "bank 'bank-3''s key failed verification (node 12"),  # bank-1's keys relayed as bank-3's
        ("stranger", "'bank-9' is not on the consortium roster"),
        ("twice", "bank 'bank-0' advertised keys twice"),
        ("other-sum", "bank 'bank-1''s key failed verification"),  # signed for another sum than the one relayed
    ],
)
def test_keys_relayed_without_their_banks_signatures_make_the_banks_abort(consortium, attack, reason):
    _, node_configs = consortium

    def rewrite(stage, node, record, way):
        if stage == "advertise" and way == "request" and attack == "other-sum" and node == 12:
            record["round"] = 7  # bank-1 is told (and signs for) another round than the others
        if stage != "share" or way != "request":
            return
        if attack == "strip":
            record.pop("banks"), record.pop("signatures")
            return
        banks = list(record["banks"])
        if attack == "rename":
            banks[1], banks[3] = banks[3], banks[1]
        elif attack == "stranger":
            banks[2] = "bank-9"
        elif attack == "twice":
            banks[2] = "bank-0"
        record["banks"] = banks

    grid = Coordinator(node_configs, rewrite)
    _, failed, stats = _statistics(grid)
    assert stats is None
    assert any(reason in why for why in failed.values()), failed
    assert {stage for _, stage in grid.sent} == {"advertise", "share"}


def _replaying(node: int):
    """The coordinator keeps the first keys and signature it relays for `node`, and relays those ever after."""
    recorded: list = []

    def rewrite(stage, dst, record, way):
        if stage == "share" and way == "request":
            at = list(record["key-owners"]).index(node)
            lists = {k: list(record[k]) for k in ("pk1s", "pk2s", "signatures")}
            if not recorded:
                recorded.extend(lists[k][at] for k in lists)
            for k, old in zip(lists, recorded, strict=True):
                lists[k][at] = old
                record[k] = lists[k]

    return rewrite


def test_a_replayed_signature_from_another_session_or_run_or_a_reused_session_is_refused(consortium, monkeypatch):
    _, node_configs = consortium
    grid = Coordinator(node_configs, _replaying(12))  # bank-1's signed keys of the first sum, replayed later
    assert _statistics(grid)[2] is not None
    _, failed, stats = _statistics(grid)
    assert stats is None
    assert all("bank 'bank-1''s key failed verification (node 12" in failed[n] for n in (11, 13, 14)), failed
    assert "relayed this bank's own public keys wrongly" in failed[12]
    # Another run with the very same session string: the signature is bound to its run too.
    monkeypatch.setattr(secure_sum.secrets, "token_hex", lambda _: "0123456789abcdef")
    rewrite = _replaying(12)
    assert _statistics(Coordinator(node_configs, rewrite))[2] is not None  # run 1
    later = Coordinator(node_configs, rewrite)
    for ctx in later.contexts.values():
        ctx.run_id = 2
    _, failed, stats = _statistics(later)
    assert stats is None
    assert all("bank 'bank-1''s key failed verification (node 12" in failed[n] for n in (11, 13, 14)), failed
    # Reusing a session within a run (where old signatures would verify again) is refused before any key is sent.
    later.rewrite = None
    _, failed, stats = _statistics(later)
    assert stats is None and all("was used before in this run" in failed[n] for n in (11, 12, 13, 14)), failed


def test_keys_advertised_for_one_sum_mask_no_other(consortium):
    """The coordinator announces an evaluation of round 5 and then sends the statistics query: the banks refuse."""
    _, node_configs = consortium

    def rewrite(stage, node, record, way):
        if stage == "advertise" and way == "request":
            record["sum"], record["round"] = "evaluate", 5

    grid = Coordinator(node_configs, rewrite)
    _, failed, stats = _statistics(grid)
    assert stats is None
    assert all("advertised for the evaluate sum of round 5, not for this query message" in failed[n] for n in failed)
    assert len(failed) == BANKS and (SECAGG_QUERY, "reveal") not in grid.sent


def _identity(name, keys):
    roster = parse_roster(roster_text({n: public_bytes(k) for n, k in keys.items()}).encode())
    return BankIdentity(name, keys[name], roster)


def test_a_signature_from_another_run_round_or_threshold_does_not_verify():
    keys = {n: Ed25519PrivateKey.generate() for n in ("bank-a", "bank-b", "bank-c")}
    identities = {n: _identity(n, keys) for n in keys}
    sessions = {node: BankSession.start("s", node, 2) for node in (1, 2, 3)}
    names = dict(zip((1, 2, 3), keys, strict=True))
    this_sum = signed_keys.SumId(run=5, session="s", kind="train", round=3, threshold=2)
    public = {node: (b.pk1, b.pk2) for node, b in sessions.items()}
    sign = {node: signed_keys.sign_keys(identities[names[node]], this_sum, node, *public[node]) for node in public}
    banks = [names[n] for n in public]
    assert signed_keys.verify_directory(identities["bank-a"], this_sum, 1, public, banks, list(sign.values())) == names
    for other in (
        signed_keys.SumId(6, "s", "train", 3, 2),  # another run
        signed_keys.SumId(5, "t", "train", 3, 2),  # another session
        signed_keys.SumId(5, "s", "evaluate", 3, 2),  # another sum
        signed_keys.SumId(5, "s", "train", 4, 2),  # another round
        signed_keys.SumId(5, "s", "train", 3, 3),  # another threshold
    ):
        with pytest.raises(SecAggError, match="bank 'bank-b''s key failed verification"):
            signed_keys.verify_directory(identities["bank-a"], other, 1, public, banks, list(sign.values()))
    with pytest.raises(SecAggError, match="under the name 'bank-b'"):  # this bank's own entry under another name
        signed_keys.verify_directory(identities["bank-a"], this_sum, 2, public, banks, list(sign.values()))


def test_the_coordinator_refuses_malformed_signed_advertisements():
    good = {"pk1": b"k" * 91, "pk2": b"l" * 91}
    assert protocol.read_stage_reply("advertise", RecordDict({SECAGG: ConfigRecord(good)})) == good
    signed = {**good, "bank": "bank-a", "signature": b"s" * 64}
    assert protocol.read_stage_reply("advertise", RecordDict({SECAGG: ConfigRecord(signed)})) == signed
    for bad, match in (
        ({**good, "signature": b"s" * 64}, "bank must be"),
        ({**good, "bank": "bank-a"}, "signature must be"),
        ({**signed, "signature": b"s" * 65}, "signature must be"),
        ({**signed, "bank": "x" * 201}, "bank must be"),
    ):
        with pytest.raises(ProtocolError, match=match):
            protocol.read_stage_reply("advertise", RecordDict({SECAGG: ConfigRecord(bad)}))


def test_an_advertisement_carries_the_banks_name_and_signature_only_with_a_roster(consortium, tmp_path):
    keys, node_configs = consortium
    app = inprocess.client_app().app
    request = protocol.stage_request("advertise", "s1", {"threshold": 2, "sum": "query", "round": 0})
    grid = Coordinator(node_configs)
    reply = app(Message(request, dst_node_id=11, message_type=SECAGG_QUERY), grid.contexts[11])
    record = reply.content.config_records[SECAGG]
    assert record["bank"] == "bank-0" and len(record["signature"]) == 64
    plain = Coordinator()
    reply = secure_bank.answer_stage(
        Message(request, dst_node_id=11, message_type=SECAGG_QUERY), plain.contexts[11], tmp_path / "no-roster"
    )
    assert set(reply.content.config_records[SECAGG]) == {"pk1", "pk2"}
    # A bank that pinned a roster refuses an app that ships none, before it advertises anything.
    pinned = Coordinator({11: node_configs[11]})
    reply = secure_bank.answer_stage(
        Message(request, dst_node_id=11, message_type=SECAGG_QUERY), pinned.contexts[11], tmp_path / "no-roster"
    )
    assert reply.has_error() and "ships none" in reply.error.reason


def test_a_whole_secure_run_with_a_roster_completes_every_sum_signed(consortium, tmp_path):
    """Statistics, profile, train, evaluate, personalise and reasons: every sum's keys signed and verified."""
    from fedcredit.federation import server

    _, node_configs = consortium
    config = {
        **CONFIG,
        "num-server-rounds": 1,
        "local-epochs": 1,
        "hidden-units": "8",
        "histogram-bins": 100,
        "personalize.epochs": 1,
        "output-dir": str(tmp_path / "out"),
    }
    grid = Coordinator(node_configs)
    for ctx in grid.contexts.values():
        ctx.run_config = dict(config)
    signatures = []

    def spy(stage, node, record, way):
        if stage == "share" and way == "request":
            signatures.append(len(record["signatures"]))

    grid.rewrite = spy
    history = server.run(grid, config, "signed", inprocess.client_app().APP_DIR).to_json()  # the roster's app
    assert history["status"] == "completed" and history["rounds"][1]["aggregated"]
    kinds = {kind for kind, stage in grid.sent if stage == protocol.MASK}
    assert {"query", "train", "evaluate", protocol.PROFILE, protocol.PERSONALISE, protocol.REASONS} <= kinds, kinds
    assert signatures and set(signatures) == {BANKS}  # every share stage relayed four signed advertisements
    pins = {ctx.node_config["roster-sha256"] for ctx in grid.contexts.values()}
    assert [history["roster-sha256"]] == list(pins)  # the roster every reply was verified against, on record
