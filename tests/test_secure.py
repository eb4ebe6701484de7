"""Secure mode end to end in one process: the real ServerApp logic against the real ClientApp, through its mods."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord

from fedcredit.core.config import ConfigError
from fedcredit.core.profile import add_profiles
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import protocol, secagg, secure_bank, server
from fedcredit.federation.outputs import load_checkpoint

CONFIG = {
    "partitioning": "iid",
    "num-server-rounds": 2,
    "local-epochs": 1,
    "hidden-units": "8",
    "histogram-bins": 100,
    "personalize.epochs": 1,
    "seed": 7,
}
SECURE = {**CONFIG, "privacy.secure-aggregation": True}
BANKS = 4  # reconstruction threshold 3: one bank may drop out


class SpyGrid:
    """What the ServerApp receives, reply by reply, before anything of fedcredit reads it."""

    def __init__(self, inner: InProcessGrid) -> None:
        self.inner = inner
        self.seen: list[tuple[str, int, dict]] = []  # (message type, node, {record name: record})

    def get_node_ids(self) -> list[int]:
        return self.inner.get_node_ids()

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        kinds = {m.metadata.dst_node_id: m.metadata.message_type for m in messages}
        replies = self.inner.send_and_receive(messages, timeout=timeout)
        for r in replies:
            if not r.has_error():
                self.seen.append((kinds[r.metadata.src_node_id], r.metadata.src_node_id, dict(r.content.items())))
        return replies


def _run(config: dict, out: Path, name: str, grid=None) -> dict:
    config = {**config, "output-dir": str(out)}
    with serverapp_identity():
        return server.run(grid or InProcessGrid(config, BANKS), config, name, APP_DIR).to_json()


def _final(history: dict) -> list[np.ndarray]:
    return load_checkpoint(max(Path(history["output-dir"]).glob("checkpoints/round-*.npz")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("secure")
    plain_spy = SpyGrid(InProcessGrid({**CONFIG, "output-dir": str(out)}, BANKS))
    plain = _run(CONFIG, out, "plain", plain_spy)
    secure_spy = SpyGrid(InProcessGrid({**SECURE, "output-dir": str(out)}, BANKS))
    secure = _run(SECURE, out, "secure", secure_spy)
    return plain, secure, plain_spy, secure_spy


def test_secure_mode_trains_the_same_model_as_plain_mode(runs):
    plain, secure, _, _ = runs
    assert secure["status"] == "completed"
    # Statistics summed securely give the same preprocessing (fixed point: 2^-32 per bank).
    prep = [json.loads((Path(h["output-dir"]) / "preprocessing.json").read_text()) for h in (plain, secure)]
    assert prep[0]["vocabulary"] == prep[1]["vocabulary"]
    for key in ("mean", "variance"):
        for col, value in prep[0][key].items():
            assert prep[1][key][col] == pytest.approx(value, rel=1e-9, abs=1e-9), (key, col)
    gap = max(float(np.abs(a - b).max()) for a, b in zip(_final(plain), _final(secure), strict=True))
    assert gap < 1e-5, gap
    for a, b in zip(plain["rounds"], secure["rounds"], strict=True):
        assert b["holdout"]["auc"] == pytest.approx(a["holdout"]["auc"], abs=1e-6)
        if a["round"]:  # pooled validation figures from summed histograms: the same counts
            assert b["evaluate"]["pooled"]["auc"] == pytest.approx(a["evaluate"]["pooled"]["auc"], abs=1e-9)
            assert b["train"]["pooled"]["num-examples"] == a["train"]["pooled"]["num-examples"]
    # Personalisation: only sums; the pooled global-model figures equal plain mode's.
    record = secure["personalisation"]
    assert record["banks"] == {} and sum(record["kept-counts"].values()) == BANKS
    assert record["pooled-validation"]["global"]["auc"] == pytest.approx(
        plain["personalisation"]["pooled-validation"]["global"]["auc"], abs=1e-9
    )


def test_the_coordinator_never_receives_one_banks_numbers(runs):
    _, _, plain_spy, secure_spy = runs
    revealing = {
        protocol.ARRAYS,
        protocol.METRICS,
        protocol.NUMERIC_STATS,
        protocol.CATEGORY_COUNTS,
        "global",
        protocol.REASON_COUNTS,
    }
    kinds = {kind for kind, _, _ in secure_spy.seen}
    assert {"query", "train", "evaluate", protocol.PERSONALISE, protocol.PROFILE, protocol.REASONS} <= kinds
    assert protocol.SECAGG_QUERY in kinds
    for kind, node, records in secure_spy.seen:
        assert set(records) <= {protocol.SECAGG, protocol.BANK_INFO}, (kind, node, set(records))
        assert not set(records) & revealing
    # A bank's masked round-1 update looks like noise next to what it would have sent in plain mode.
    plain_first = {node: r for kind, node, r in plain_spy.seen if kind == "train"}
    secure_first = {node: r for kind, node, r in secure_spy.seen if kind == "train"}
    for node, records in plain_first.items():
        weights = records[protocol.ARRAYS].to_numpy_ndarrays()
        rows = records[protocol.METRICS]["num-examples"]
        true = protocol.train_vector(weights, records[protocol.METRICS]["train-loss"], rows, rows)
        masked = secure_first[node][protocol.SECAGG]["masked"]
        seen = secagg.decode(secagg.from_bytes(masked, true.size))
        assert abs(np.corrcoef(seen, true)[0, 1]) < 0.2, node
        assert np.median(np.abs(seen)) > 1e20  # uniform over +-2^95: nothing of a weight's scale


def _lists(value):
    """Every list of numbers anywhere in a JSON value."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _lists(v)
    elif isinstance(value, list):
        if value and all(isinstance(v, int | float) for v in value):
            yield value
        for v in value:
            yield from _lists(v)


def test_secure_mode_writes_only_the_pooled_profile_equal_to_plain_modes(runs):
    plain, secure, _, _ = runs
    profiles = [json.loads((Path(h["output-dir"]) / "profile.json").read_text()) for h in (plain, secure)]
    assert profiles[1]["mode"] == "secure" and profiles[1]["banks"] == {} and profiles[1]["refused"] == {}
    assert profiles[1]["pooled"] == profiles[0]["pooled"]  # whole counts: the secure sum is exact
    assert sorted(profiles[1]["pooled-over"]) == sorted(secure["banks"])
    # No bank's own counts anywhere in the secure run's directory (checked on counts that differ from the pooled).
    own = {
        json.dumps(c["counts"])
        for bank in profiles[0]["banks"].values()
        for split in bank.values()
        for kind in ("numeric", "categorical")
        for c in split[kind].values()
    }
    own -= {
        json.dumps(c["counts"])
        for split in profiles[0]["pooled"].values()
        for k in ("numeric", "categorical")
        for c in split[k].values()
    }
    assert len(own) > 100
    for path in Path(secure["output-dir"]).rglob("*.json"):
        found = {json.dumps(v) for v in _lists(json.loads(path.read_text()))} & own
        assert not found, (path.name, sorted(found)[:3])


class DroppingGrid(InProcessGrid):
    """Banks that go silent in one round's training after the key exchange (a crash mid-round)."""

    def __init__(self, config, banks, silent: set[int], at: int) -> None:
        super().__init__(config, banks)
        self.silent, self.at = silent, at

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train":
            if int(messages[0].content[protocol.CONFIG]["server-round"]) == self.at:
                messages = [m for m in messages if m.metadata.dst_node_id not in self.silent]
        return super().send_and_receive(messages, timeout=timeout)


def test_a_bank_dropping_out_after_the_key_exchange_leaves_the_survivors_sum(tmp_path):
    config = {**SECURE, "personalize.epochs": 0}
    plain_config = {**CONFIG, "personalize.epochs": 0, "update-clip": 0.0}
    one = _run(config, tmp_path, "one", DroppingGrid({**config, "output-dir": str(tmp_path)}, BANKS, {12}, at=2))
    plain = _run(
        plain_config, tmp_path, "plain", DroppingGrid({**plain_config, "output-dir": str(tmp_path)}, BANKS, {12}, 2)
    )
    second = one["rounds"][2]["train"]
    assert one["rounds"][2]["aggregated"] and sorted(second["ok"]) == ["bank-0", "bank-2", "bank-3"]
    assert "no reply within" in second["failed"]["bank-1"]
    gap = max(float(np.abs(a - b).max()) for a, b in zip(_final(plain), _final(one), strict=True))
    assert gap < 1e-5, gap  # exactly the three survivors' weighted mean
    two = _run(config, tmp_path, "two", DroppingGrid({**config, "output-dir": str(tmp_path)}, BANKS, {12, 13}, 2))
    assert one["status"] == two["status"] == "completed"
    assert not two["rounds"][2]["aggregated"]
    assert "fewer than the reconstruction threshold 3" in two["rounds"][2]["train"]["not-aggregated"]


def _corrupting(what: str, monkeypatch) -> None:
    """Bank node 11 corrupts its part of every secure sum of `what`: a boosted update past its own check
    ("update"), or flipped bytes in its masked vector ("bytes", for statistics, train or evaluate)."""
    honest = secure_bank._masked

    def hostile(msg, reply, record, context):
        kind = msg.metadata.message_type
        if msg.metadata.dst_node_id == 11 and what == "update" and kind == "train":
            glob = msg.content[protocol.ARRAYS].to_numpy_ndarrays()
            mine = reply.content[protocol.ARRAYS].to_numpy_ndarrays()
            reply.content[protocol.ARRAYS] = ArrayRecord([g + 1000 * (w - g) for w, g in zip(mine, glob, strict=True)])
            record = ConfigRecord({**dict(record.items()), protocol.MAX_UPDATE_NORM: 1e12})
        content = honest(msg, reply, record, context)
        corruptible = ("query", "train", "evaluate", protocol.PROFILE, protocol.REASONS)
        if msg.metadata.dst_node_id == 11 and what in corruptible and kind == what:
            masked = bytearray(content[protocol.SECAGG]["masked"])
            masked[5] ^= 0xFF
            masked[40] ^= 0x5A
            content[protocol.SECAGG]["masked"] = bytes(masked)
        return content

    monkeypatch.setattr(secure_bank, "_masked", hostile)


@pytest.fixture(scope="module")
def honest_secure(tmp_path_factory) -> dict:
    return _run({**SECURE, "personalize.epochs": 0}, tmp_path_factory.mktemp("honest-secure"), "honest")


@pytest.mark.parametrize("what", ["update", "query", "train", "evaluate"])
def test_a_bank_that_corrupts_its_part_of_a_secure_sum_is_left_out_with_its_group_and_the_run_goes_on(
    tmp_path, monkeypatch, what, honest_secure
):
    """Neither the run nor the model is the corrupting bank's to decide: its group's sum is left out, the rest used."""
    _corrupting(what, monkeypatch)
    config = {**SECURE, "personalize.epochs": 0}
    history = _run(config, tmp_path, f"corrupt-{what}")
    assert history["status"] == "completed"
    (run_dir,) = tmp_path.iterdir()
    if what == "query":  # the preprocessing comes from the other group's statistics; that bank trains no round
        assert "left out: the secure sum of its group" in history["statistics-failed"]["node-11"]
        assert len(history["banks"]) == 2
    for entry in history["rounds"][1:]:
        assert entry["aggregated"]
        phase = entry["evaluate" if what == "evaluate" else "train"]
        if what != "query":
            assert "left out: the secure sum of its group of 2 banks" in phase["refused"]["bank-0"]
            assert len(phase["refused"]) == 2 and len(phase["ok"]) == 2  # its group-mate goes with it
        assert entry["evaluate"]["pooled"] is not None
    assert list(run_dir.glob("model-final.keras"))
    honest_auc = honest_secure["rounds"][-1]["holdout"]["auc"]
    # Statistics: the bank and its group-mate take no part in the run at all, so the model is two banks' of four
    # (measured 0.022 below the honest run in this tiny config); otherwise within 0.02.
    assert abs(history["rounds"][-1]["holdout"]["auc"] - honest_auc) < (0.04 if what == "query" else 0.02)
    if what == "evaluate":  # evaluation never touches training: the honest run's model
        assert history["rounds"][-1]["holdout"]["auc"] == honest_auc


def test_a_bank_that_corrupts_its_masked_profile_leaves_it_to_the_other_group_and_the_run_goes_on(
    tmp_path, monkeypatch, runs
):
    _corrupting(protocol.PROFILE, monkeypatch)
    history = _run({**SECURE, "personalize.epochs": 0}, tmp_path, "corrupt-profile")
    assert history["status"] == "completed" and all(e["aggregated"] for e in history["rounds"][1:])
    profile = json.loads((Path(history["output-dir"]) / "profile.json").read_text())
    # Halves [11, 13] and [12, 14]: the first keeps failing its checks and is left out, the second's sum is used.
    assert sorted(profile["refused"]) == ["bank-0", "bank-2"] and profile["pooled-over"] == ["bank-1", "bank-3"]
    assert "left out: the secure sum of its group of 2 banks" in profile["refused"]["bank-0"]
    plain = json.loads((Path(runs[0]["output-dir"]) / "profile.json").read_text())
    for split in ("train", "validation"):  # exactly the two banks' profiles of the plain run, summed
        assert profile["pooled"][split] == add_profiles(plain["banks"][b][split] for b in ("bank-1", "bank-3"))


def test_a_bank_that_corrupts_its_masked_reason_counts_leaves_them_to_the_other_group(tmp_path, monkeypatch):
    from fedcredit.core import model as mdl
    from fedcredit.core.banks import load_bank, schema_of
    from fedcredit.core.config import parse_run_config
    from fedcredit.risk.explain import references
    from fedcredit.risk.reason_counts import count_reasons

    _corrupting(protocol.REASONS, monkeypatch)
    history = _run({**SECURE, "personalize.epochs": 0}, tmp_path, "corrupt-reasons")
    assert history["status"] == "completed"
    run_dir = Path(history["output-dir"])
    reasons = json.loads((run_dir / "reasons.json").read_text())
    # Halves [11, 13] and [12, 14]: the first keeps failing its checks and is left out, the second's sum is used.
    assert sorted(reasons["refused"]) == ["bank-0", "bank-2"] and reasons["pooled-over"] == ["bank-1", "bank-3"]
    assert "left out: the secure sum of its group of 2 banks" in reasons["refused"]["bank-0"]
    assert reasons["banks"] == {}
    cfg = parse_run_config(json.loads((run_dir / "config.json").read_text()))
    model, schema = mdl.load(run_dir / "model-final.keras"), schema_of(cfg)
    refs = references(model, schema)  # the bounds of the schema, as each bank has them
    banks = [load_bank(cfg, {"partition-id": i, "num-partitions": BANKS}) for i in (1, 3)]
    direct = [count_reasons(model, bank.val, cfg.threshold, schema.features, refs) for bank in banks]
    pooled = reasons["pooled"]
    assert pooled["declined"] == sum(d["declined"] for d in direct) and pooled["monotone-rows"] == 200
    for key in ("first", "any"):  # exactly the two banks' own counts, summed
        assert list(pooled[key].values()) == list(np.sum([d[key] for d in direct], axis=0)), key


class SilentProfileGrid(InProcessGrid):
    """Bank node 12 never answers its masked profile (it answers everything else)."""

    def send_and_receive(self, messages, *, timeout=None):
        messages = [
            m for m in messages if not (m.metadata.message_type == protocol.PROFILE and m.metadata.dst_node_id == 12)
        ]
        return super().send_and_receive(messages, timeout=timeout)


def test_a_profile_sum_a_bank_is_missing_from_is_never_unmasked(tmp_path):
    """The profile repeats the statistics' row and category counts: a sum over 3 of 4 would give the 4th away."""
    config = {**SECURE, "personalize.epochs": 0, "num-server-rounds": 1, "output-dir": str(tmp_path)}
    history = _run(config, tmp_path, "silent", SilentProfileGrid(config, BANKS))
    assert history["status"] == "completed"
    profile = json.loads((Path(history["output-dir"]) / "profile.json").read_text())
    assert profile["pooled"] is None and profile["pooled-over"] == []
    assert "this sum is unmasked only over all of them" in profile["not-pooled"]
    assert "no reply" in profile["failed"]["bank-1"]


def test_an_update_beyond_the_bound_is_withheld_by_the_bank_with_its_reason(tmp_path):
    config = {**SECURE, "personalize.epochs": 0, "privacy.max-update-norm": 0.01, "num-server-rounds": 1}
    with pytest.raises(server.FederationError, match="no round trained"):
        _run(config, tmp_path, "tight")
    (run_dir,) = tmp_path.iterdir()
    train = json.loads((run_dir / "history.json").read_text())["rounds"][1]["train"]
    assert sorted(train["withheld"]) == ["bank-0", "bank-1", "bank-2", "bank-3"]
    assert all("exceeds privacy.max-update-norm=0.01" in why for why in train["withheld"].values())


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"strategy.name": "fedmedian"}, "needs each bank's own update"),
        ({"strategy.name": "krum"}, "needs each bank's own update"),
        ({"privacy.mode": "server-fixed"}, "needs each bank's own update"),
    ],
)
def test_what_needs_one_banks_update_is_refused_before_round_1(tmp_path, change, reason):
    with pytest.raises(ConfigError, match=reason):
        _run({**SECURE, **change}, tmp_path, "refused")


def test_secure_mode_with_client_side_dp_accounts_epsilon_as_plain_mode(tmp_path):
    dp = {"privacy.mode": "client-fixed", "privacy.noise-multiplier": 0.5, "personalize.epochs": 0}
    plain = _run({**CONFIG, **dp}, tmp_path, "dp")
    secure = _run({**SECURE, **dp}, tmp_path, "securedp")
    assert secure["status"] == "completed" and all(r["aggregated"] for r in secure["rounds"][1:])
    assert secure["privacy"]["epsilon"] == pytest.approx(plain["privacy"]["epsilon"])


def test_the_model_free_handlers_do_not_import_tensorflow():
    """Statistics, profile and the key stages: in a deployment each message is a fresh process; TensorFlow costs
    seconds."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from flwr.app import Context, Message, RecordDict\n"
        "from fedcredit.deploy.inprocess import serverapp_identity\n"
        "from fedcredit.federation import protocol\n"
        "from fedcredit.core.loading import load_csv\n"
        "from fedcredit.core.schema import LENDING_CLUB\n"
        "from fedcredit.core.stats import compute_stats, preprocessing_from_stats\n"
        "import client_app\n"
        "with serverapp_identity():\n"
        "    key = Message(protocol.stage_request('advertise', 's', {'threshold': 2, 'sum': 'query', 'round': 0}),\n"
        "                  dst_node_id=5, message_type=protocol.SECAGG_QUERY)\n"
        "    stats = Message(protocol.statistics_request(), dst_node_id=5, message_type='query')\n"
        "    rows = load_csv('', LENDING_CLUB).head(300)\n"
        "    prep = preprocessing_from_stats(compute_stats(rows, LENDING_CLUB), 10)\n"
        "    profile = Message(protocol.profile_request(prep.to_json()), dst_node_id=5, message_type=protocol.PROFILE)\n"
        "node = {'partition-id': 0, 'num-partitions': 2}\n"
        "ctx = Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config={})\n"
        "replies = [client_app.app(m, ctx) for m in (key, stats, profile)]\n"
        "assert not any(r.has_error() for r in replies), [r.error for r in replies if r.has_error()]\n"
        "print(sorted(replies[0].content['secagg']), sorted(replies[1].content), sorted(replies[2].content),\n"
        "      'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(APP_DIR)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "False", result.stdout
    assert protocol.NUMERIC_STATS in result.stdout and "'pk1'" in result.stdout and "'profile-train'" in result.stdout


def test_a_total_whose_check_raises_anything_is_summed_again_not_fatal(tmp_path, monkeypatch):
    """Not only ProtocolError: whatever a corrupted total makes its check raise, the run goes on in groups."""
    real, calls = protocol.read_summary_sum, {"n": 0}

    def flaky(vector, bins, threshold, banks, groups=None):
        calls["n"] += 1
        if calls["n"] == 1:  # the first evaluation total: as if a corruption had made numpy overflow
            raise OverflowError("int too large to convert to float")
        return real(vector, bins, threshold, banks, groups)

    monkeypatch.setattr(protocol, "read_summary_sum", flaky)
    history = _run({**SECURE, "personalize.epochs": 0}, tmp_path, "overflow")
    assert history["status"] == "completed" and calls["n"] > 1
    first = history["rounds"][1]["evaluate"]
    assert first["pooled"] is not None and not first["refused"]  # both halves passed: every bank is in the total
