"""One hostile or broken bank among four: refused with its reason, and the run goes on with the others.

The real ServerApp (`fedcredit.federation.server.run`) drives the real ClientApp
handlers of `client_app.py` through an in-process Grid; one bank's replies
are tampered with on their way back, as a hostile bank would send them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, RecordDict

from fedcredit.core import metrics
from fedcredit.core.banks import load_bank, schema_of
from fedcredit.core.config import parse_run_config
from fedcredit.deploy.inprocess import (
    APP_DIR,
    InProcessGrid,
    Tamper,
    boosted_update,
    flipped_update,
    serverapp_identity,
)
from fedcredit.federation import protocol, server
from fedcredit.federation.outputs import load_checkpoint
from fedcredit.risk.stability import feature_stability

HOSTILE = 11  # the first of the four banks


def run_config(out: Path, **extra) -> dict:
    return {
        "partitioning": "iid",
        "num-server-rounds": 2,
        "local-epochs": 1,
        "hidden-units": "8",
        "learning-rate": 0.01,
        "histogram-bins": 200,
        "seed": 5,
        "output-dir": str(out),
        "personalize.epochs": 0,
        **extra,
    }


@pytest.fixture(autouse=True)
def task_identity():
    with serverapp_identity():
        yield


def run(tmp_path: Path, tamper: Tamper | None = None, **extra) -> tuple[dict, list[np.ndarray]]:
    config = run_config(tmp_path / "out", **extra)
    history = server.run(InProcessGrid(config, 4, tamper, HOSTILE), config, "t", APP_DIR).to_json()
    run_dir = Path(history["output-dir"])
    assert history["status"] == "completed"
    assert json.loads((run_dir / "history.json").read_text())["status"] == "completed"
    last = max(run_dir.glob("checkpoints/round-*.npz"))
    return history, load_checkpoint(last)


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    with serverapp_identity():
        return run(tmp_path_factory.mktemp("honest"))


@pytest.fixture(scope="module")
def absent_from_training(tmp_path_factory):
    """The reference for a refused train reply: the same run with that bank failing every train message."""
    with serverapp_identity():
        return run(tmp_path_factory.mktemp("absent"), lambda kind, c, m: None if kind == "train" else c)


def _name(history: dict) -> str:
    return next(name for name, b in history["banks"].items() if b["node-id"] == str(HOSTILE))


def _weights(edit: Callable[[list[np.ndarray]], list[np.ndarray]]) -> Tamper:
    def tamper(kind, content, msg):
        if kind == "train":
            content[protocol.ARRAYS] = ArrayRecord(edit(content[protocol.ARRAYS].to_numpy_ndarrays()))
        return content

    return tamper


def _metric(kind_wanted: str, key: str, value) -> Tamper:
    def tamper(kind, content, msg):
        if kind == kind_wanted:
            content[protocol.METRICS][key] = value
        return content

    return tamper


TRAIN_CASES = {
    "all weights 1e30 (finite but absurd)": (_weights(lambda ws: [np.full_like(w, 1e30) for w in ws]), None),
    "a NaN weight": (_weights(lambda ws: [w * np.nan for w in ws]), "NaN or infinite"),
    "a bias of shape (1,) instead of (8,)": (_weights(lambda ws: [ws[0], ws[1][:1], *ws[2:]]), "array 1 has shape"),
    "a transposed kernel": (_weights(lambda ws: [ws[0], ws[1], ws[2].T, *ws[3:]]), "array 2 has shape"),
    "a missing array": (_weights(lambda ws: ws[:-1]), "named differently"),
    "num-examples 10^12": (_metric("train", "num-examples", 10**12), "num-examples must be a whole number"),
    "num-examples -1000": (_metric("train", "num-examples", -1000), "num-examples must be a whole number"),
    "num-examples 0": (_metric("train", "num-examples", 0), "but the bank reported"),
    "an extra metric key": (_metric("train", "extra", 1.0), "unexpected keys \\['extra'\\]"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_a_train_reply_that_breaks_the_protocol_is_refused(tmp_path, case, absent_from_training):
    tamper, reason = TRAIN_CASES[case]
    history, final = run(tmp_path, tamper)
    name = _name(history)
    for entry in history["rounds"][1:]:
        if reason is None:  # absurd but well-formed: bounded, or left out if it also points away from the others'
            clipped = entry["train"]["clipped"].get(name)
            away = "points away from the other banks'" in entry["train"]["refused"].get(name, "")
            assert (clipped is not None and clipped < 1e-20) or away, entry["train"]
        else:
            assert re.search(reason, entry["train"]["refused"].get(name, "")), entry["train"]
            assert name not in entry["train"]["ok"] and len(entry["train"]["ok"]) == 3
    if reason is not None:  # the global model is exactly the honest banks' model
        assert all(np.array_equal(a, b) for a, b in zip(final, absent_from_training[1]))


@pytest.mark.parametrize("factor", [10.0, 1000.0])
def test_a_boosted_update_is_bounded_and_the_model_stays_close(tmp_path, honest, factor):
    history, _ = run(tmp_path, boosted_update(factor))
    name = _name(history)
    assert all(name in e["train"]["clipped"] for e in history["rounds"][1:])
    assert abs(history["rounds"][-1]["holdout"]["auc"] - honest[0]["rounds"][-1]["holdout"]["auc"]) < 0.02


def test_an_update_pointing_away_from_the_others_is_recorded_and_with_exclude_left_out(tmp_path, honest):
    recorded, _ = run(tmp_path / "record", flipped_update(10.0), **{"update-direction": "record"})
    name = _name(recorded)
    assert all(e["train"]["suspicious"][name] < 0 and name in e["train"]["ok"] for e in recorded["rounds"][1:])
    assert all(len(e["train"].get("suspicious", {})) == 1 for e in recorded["rounds"][1:])  # no honest bank
    excluded, _ = run(tmp_path / "exclude", flipped_update(10.0))  # the default
    for entry in excluded["rounds"][1:]:
        assert "points away from the other banks'" in entry["train"]["refused"][name]
        assert len(entry["train"]["ok"]) == 3
    assert abs(excluded["rounds"][-1]["holdout"]["auc"] - honest[0]["rounds"][-1]["holdout"]["auc"]) < 0.02
    assert not any(e["train"].get("suspicious") for e in honest[0]["rounds"][1:])


def _hist(key: str, edit: Callable[[list[int]], list[int]]) -> Tamper:
    def tamper(kind, content, msg):
        if kind == "evaluate":
            content[protocol.METRICS][key] = edit(list(content[protocol.METRICS][key]))
        return content

    return tamper


EVALUATE_CASES = {
    "negative histogram counts": (_hist("hist-good", lambda h: [v - 1 for v in h]), "must be a whole number"),
    "inflated histograms": (_hist("hist-bad", lambda h: [v * 1000 for v in h]), "must be a whole number from 0"),
    "a histogram of the wrong length": (_hist("hist-bad", lambda h: h[:-1]), "histogram-bins=200"),
    "NaN sums": (_metric("evaluate", "sum-brier", float("nan")), "sum-brier is not a finite number"),
    "AUC 1.0 from every default moved to the top bin": (
        _hist("hist-bad", lambda h: [0] * (len(h) - 1) + [sum(h)]),
        "does not match the",
    ),
    "an AUC of 1.0 stated over honest histograms": (_metric("evaluate", "auc", 1.0), "does not fit its own score"),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_an_evaluation_that_breaks_the_protocol_is_refused(tmp_path, case, honest):
    tamper, reason = EVALUATE_CASES[case]
    history, final = run(tmp_path, tamper)
    name = _name(history)
    for entry in history["rounds"][1:]:
        refused = entry["evaluate"]["refused"]
        assert re.search(reason, refused.get(name, "")), refused
        pooled = entry["evaluate"]["pooled"]
        honest_banks = [b for b in honest[0]["rounds"][entry["round"]]["evaluate"]["banks"] if b != name]
        assert pooled["num-examples"] == sum(
            honest[0]["rounds"][entry["round"]]["evaluate"]["banks"][b]["num-examples"] for b in honest_banks
        )
    # Evaluation never touches training: the model is the honest run's.
    assert all(np.array_equal(a, b) for a, b in zip(final, honest[1]))


def _fake_perfect_evaluation(rounds: set[int]) -> Tamper:
    """A lie that adds up: histograms, counts and sums of a model that ranks every default first (AUC 1.0)."""

    def tamper(kind, content, msg):
        if kind == "evaluate" and int(msg.content[protocol.CONFIG]["server-round"]) in rounds:
            honest = content[protocol.METRICS]
            n, bad, bins = int(honest["num-examples"]), int(honest["num-bad"]), len(honest["hist-bad"])
            labels = np.arange(n) < bad
            summary = metrics.summarise(labels.astype(float), labels, 0.1, bins)
            summary.update(loss=summary["sum-logloss"] / n, auc=1.0)
            content = protocol.evaluate_reply(summary)
        return content

    return tamper


def test_a_fake_but_consistent_evaluation_cannot_choose_the_best_model(tmp_path, honest):
    """One bank's lie may lift the pooled figure of a round, but never makes that round model-best.keras."""
    history, _ = run(tmp_path, _fake_perfect_evaluation({1}), **{"num-server-rounds": 3})
    name = _name(history)
    first = history["rounds"][1]["evaluate"]
    assert first["banks"][name]["auc"] == 1.0 and name in first["leave-one-out-auc"]  # what its histograms say
    by_pooled = max(history["rounds"][1:], key=lambda e: e["evaluate"]["pooled"]["auc"])["round"]
    assert by_pooled == 1 and history["best-round"] == 3  # the lie would pick round 1: the latest is kept
    honest_again, _ = run(tmp_path / "honest3", **{"num-server-rounds": 3})
    lifted = first["pooled"]["auc"] - honest_again["rounds"][1]["evaluate"]["pooled"]["auc"]
    assert lifted > 0.02  # the lie does lift the pooled figure: the selection, not the figure, is protected


def _stats(edit: Callable[[RecordDict], None]) -> Tamper:
    def tamper(kind, content, msg):
        if kind == "query":
            edit(content)
        return content

    return tamper


def _numeric(triple):
    return _stats(lambda c: c.metric_records[protocol.NUMERIC_STATS].__setitem__("int_rate", triple))


def _categories(counts):
    return _stats(lambda c: c.config_records[protocol.CATEGORY_COUNTS].__setitem__("term", json.dumps(counts)))


STATISTICS_CASES = {
    "negative counts": (_numeric([-5.0, 1.0, 1.0]), "count of 'int_rate' must be a whole number"),
    "NaN sums": (_numeric([10.0, float("nan"), 1.0]), "sum of 'int_rate' is not a finite number"),
    "a NaN count": (_numeric([float("nan"), 1.0, 1.0]), "count of 'int_rate' must be a whole number"),
    "a count of 10^12": (_numeric([1e12, 1.0, 1.0]), "count of 'int_rate' must be a whole number"),
    "20,000 bogus categories": (_categories({f"c{i}": 1 for i in range(20_000)}), "characters of JSON, more than"),
    "201 categories": (_categories({f"c{i}": 1 for i in range(201)}), "201 distinct categories"),
    "counts nested 100,000 deep": (
        _stats(lambda c: c.config_records[protocol.CATEGORY_COUNTS].__setitem__("term", "[" * 100_000)),
        "characters of JSON, more than",
    ),
    "counts nested 1,000 deep": (
        _stats(lambda c: c.config_records[protocol.CATEGORY_COUNTS].__setitem__("term", "[" * 1000 + "]" * 1000)),
        "nests deeper than 1",
    ),
    "a 5,000-digit count": (
        _stats(lambda c: c.config_records[protocol.CATEGORY_COUNTS].__setitem__("term", '{"a": ' + "9" * 5000 + "}")),
        "more than 20 digits",
    ),
    "negative category counts": (_categories({"term_36": -3}), "a category count of 'term'"),
    "a value outside the schema's categories": (
        _categories({"term_36": 10, "36 months": 1}),
        "a category of 'term' is not one of the values the schema agrees on",
    ),
    "another schema": (
        _stats(lambda c: c.config_records[protocol.BANK_INFO].__setitem__(protocol.SCHEMA_SHA, "0" * 64)),
        "differs from the coordinator's",
    ),
}


@pytest.mark.parametrize("case", list(STATISTICS_CASES))
def test_statistics_that_break_the_protocol_leave_the_bank_out(tmp_path, case):
    tamper, reason = STATISTICS_CASES[case]
    history, _ = run(tmp_path, tamper)
    assert reason in history["statistics-failed"][f"node-{HOSTILE}"]
    assert len(history["banks"]) == 3 and all(b["node-id"] != str(HOSTILE) for b in history["banks"].values())
    prep = json.loads((Path(history["output-dir"]) / "preprocessing.json").read_text())
    assert len(prep["vocabulary"]["term"]) <= 2  # no bogus category reached the model
    assert all(len(e["train"]["ok"]) == 3 for e in history["rounds"][1:])


# --- feature profiles (profile.json): informational, so a refused one never touches the run ------------


def _direct_profile(frame, prep: dict, schema) -> dict:
    """One split's profile computed here, independently of fedcredit.core.profile: pandas' own binning."""
    edges = [-np.inf, *np.linspace(-3.0, 3.0, 25), np.inf]
    numeric = {}
    for col in schema.numeric:
        z = (frame[col] - prep["mean"][col]) / np.sqrt(prep["variance"][col])
        binned = pd.cut(z.dropna(), edges, right=False).value_counts(sort=False)
        numeric[col] = {"counts": [int(c) for c in binned], "missing": int(frame[col].isna().sum())}
    categorical = {}
    for col in schema.categorical:
        vocab, values = prep["vocabulary"][col], frame[col].dropna()
        counts = [int((values == v).sum()) for v in vocab] + [int((~values.isin(vocab)).sum())]
        categorical[col] = {"counts": counts, "missing": int(frame[col].isna().sum())}
    return {"rows": len(frame), "bads": int(frame[schema.target].sum()), "numeric": numeric, "categorical": categorical}


def test_profile_json_holds_each_banks_counts_over_global_bins_and_their_sum(honest):
    history = honest[0]
    run_dir = Path(history["output-dir"])
    profile = json.loads((run_dir / "profile.json").read_text())
    prep = json.loads((run_dir / "preprocessing.json").read_text())
    cfg = parse_run_config(json.loads((run_dir / "config.json").read_text()))
    schema = schema_of(cfg)
    assert profile["mode"] == "plain" and profile["refused"] == {} and profile["failed"] == {}
    assert profile["grid"]["z-edges"] == list(np.linspace(-3.0, 3.0, 25))
    assert profile["features"]["categorical"]["term"] == [*prep["vocabulary"]["term"], "(unknown)"]
    assert sorted(profile["banks"]) == sorted(history["banks"]) == sorted(profile["pooled-over"])
    for name, record in history["banks"].items():
        bank = load_bank(cfg, {"partition-id": int(record["node-id"]) - 11, "num-partitions": 4})
        assert bank.name == name
        assert profile["banks"][name]["train"] == _direct_profile(bank.train, prep, schema)
        assert profile["banks"][name]["validation"] == _direct_profile(bank.val, prep, schema)
        assert profile["banks"][name]["train"]["rows"] == record["training-rows"]
    # Banks cut at random from one data set: every feature is stable across them.
    csi = feature_stability(profile)
    assert len(csi) == 4 * len(schema.features) and (csi["csi"] < 0.1).all(), csi.sort_values("csi").tail()
    for split in ("train", "validation"):
        parts, pooled = [b[split] for b in profile["banks"].values()], profile["pooled"][split]
        assert pooled["rows"] == sum(p["rows"] for p in parts) and pooled["bads"] == sum(p["bads"] for p in parts)
        for kind in ("numeric", "categorical"):
            for col, counts in pooled[kind].items():
                assert counts["counts"] == list(np.sum([p[kind][col]["counts"] for p in parts], axis=0))
                assert counts["missing"] == sum(p[kind][col]["missing"] for p in parts)


def _profile_tamper(kind, content, msg):
    """Banks 11 and 12 send broken profiles, bank 13 fails its profile query; nothing else is touched."""
    if kind != protocol.PROFILE:
        return content
    node, record = msg.metadata.dst_node_id, content.metric_records.get("profile-train")
    if node == 13:
        return None
    values = [float(v) for v in record["numeric/int_rate"]]
    values[12] = -5.0 if node == 11 else values[12] + 1  # a negative count; counts that no longer add up
    record["numeric/int_rate"] = values
    return content


def test_a_broken_or_failed_profile_is_recorded_and_the_run_goes_on_unchanged(tmp_path, honest):
    config = run_config(tmp_path / "out")
    grid = InProcessGrid(config, 4, _profile_tamper, hostile=[11, 12, 13])
    history = server.run(grid, config, "t", APP_DIR).to_json()
    assert history["status"] == "completed"
    names = {int(b["node-id"]): name for name, b in history["banks"].items()}
    profile = json.loads((Path(history["output-dir"]) / "profile.json").read_text())
    assert "a count of numeric/int_rate must be a whole number" in profile["refused"][names[11]]
    assert "the counts of numeric/int_rate add up to" in profile["refused"][names[12]]
    assert profile["failed"] == {names[13]: "bank down"}
    assert list(profile["banks"]) == profile["pooled-over"] == [names[14]]
    assert profile["pooled"] == profile["banks"][names[14]]
    honest_profile = json.loads((Path(honest[0]["output-dir"]) / "profile.json").read_text())
    assert profile["banks"][names[14]] == honest_profile["banks"][names[14]]
    # The profile is informational: training, evaluation and the model are the honest run's.
    assert all(len(e["train"]["ok"]) == 4 for e in history["rounds"][1:])
    last = max(Path(history["output-dir"]).glob("checkpoints/round-*.npz"))
    assert all(np.array_equal(a, b) for a, b in zip(load_checkpoint(last), honest[1], strict=True))


# --- reason counts (reasons.json): informational too -------------------------------------------------


def _reasons_tamper(kind, content, msg):
    """Bank 11 sends a negative count, bank 12 declines every loan, bank 13 fails its reasons query."""
    if kind != protocol.REASONS:
        return content
    node, record = msg.metadata.dst_node_id, content.metric_records[protocol.REASON_COUNTS]
    if node == 13:
        return None
    if node == 11:
        record["first"] = [-1, *list(record["first"])[1:]]
    else:  # every validation loan declined: more than its own final-round histograms put above the threshold
        record["declined"] = record["rows"]
    return content


def test_broken_or_failed_reason_counts_are_recorded_and_the_run_goes_on_unchanged(tmp_path, honest):
    config = run_config(tmp_path / "out")
    grid = InProcessGrid(config, 4, _reasons_tamper, hostile=[11, 12, 13])
    history = server.run(grid, config, "t", APP_DIR).to_json()
    assert history["status"] == "completed"
    names = {int(b["node-id"]): name for name, b in history["banks"].items()}
    reasons = json.loads((Path(history["output-dir"]) / "reasons.json").read_text())
    assert "a count of reason-counts: first must be a whole number" in reasons["refused"][names[11]]
    assert "but the final evaluation's histograms put" in reasons["refused"][names[12]]
    assert reasons["failed"] == {names[13]: "bank down"}
    assert list(reasons["banks"]) == reasons["pooled-over"] == [names[14]]
    assert reasons["pooled"] == reasons["banks"][names[14]]
    honest_reasons = json.loads((Path(honest[0]["output-dir"]) / "reasons.json").read_text())
    assert reasons["banks"][names[14]] == honest_reasons["banks"][names[14]]
    assert honest_reasons["refused"] == {} and len(honest_reasons["banks"]) == 4
    last = max(Path(history["output-dir"]).glob("checkpoints/round-*.npz"))
    assert all(np.array_equal(a, b) for a, b in zip(load_checkpoint(last), honest[1], strict=True))
