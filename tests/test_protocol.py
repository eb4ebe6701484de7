"""The wire format: what each side encodes, and every check a reply must pass before it is used."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedcredit.core import metrics
from fedcredit.core.loading import load_csv
from fedcredit.core.schema import LENDING_CLUB
from fedcredit.core.stats import compute_stats
from fedcredit.federation import protocol
from fedcredit.federation.protocol import ProtocolError
from fedcredit.federation.updates import bound_updates

LIMITS = protocol.Limits(max_categories=200, max_category_length=64)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"


@pytest.fixture(scope="module")
def stats():
    return compute_stats(load_csv("", LENDING_CLUB).head(500), LENDING_CLUB)


def _reply(stats, name="acme"):
    return protocol.statistics_reply(name, "file", LENDING_CLUB.sha256, stats)


def test_statistics_round_trip_carries_only_aggregates(stats):
    content = _reply(stats)
    back = protocol.read_statistics(content, LENDING_CLUB, LIMITS)
    assert back.stats == stats and back.name == "acme" and back.schema_sha256 == LENDING_CLUB.sha256
    # One triple per numeric column, one count per category: no row travels.
    assert all(len(v) == 3 for v in content.metric_records[protocol.NUMERIC_STATS].values())
    assert set(content) == set(protocol.LEAVES_A_BANK["statistics"])


def _tamper_numeric(col, triple):
    def edit(content):
        content.metric_records[protocol.NUMERIC_STATS][col] = triple

    return edit


def _tamper_categories(col, counts):
    def edit(content):
        content.config_records[protocol.CATEGORY_COUNTS][col] = json.dumps(counts)

    return edit


@pytest.mark.parametrize(
    "edit,reason",
    [
        (_tamper_numeric("int_rate", [-5.0, 1.0, 1.0]), "count of 'int_rate' must be a whole number"),
        (_tamper_numeric("int_rate", [10.0, float("nan"), 1.0]), "sum of 'int_rate' is not a finite number"),
        (_tamper_numeric("int_rate", [10.0, 1.0, float("inf")]), "sum of squares of 'int_rate' is not a finite"),
        (_tamper_numeric("int_rate", [1e12, 1.0, 1.0]), "count of 'int_rate' must be a whole number from 0 to 400"),
        (_tamper_numeric("int_rate", [10.0, 100.0, 1.0]), "below sum\\^2/count"),
        (_tamper_numeric("int_rate", [10.0, 1.0]), "must be \\[count, sum, sum of squares\\]"),
        (_tamper_categories("term", {f"bogus-{i}": 1 for i in range(20_000)}), "characters of JSON, more than the"),
        (_tamper_categories("term", {f"b{i}": 1 for i in range(201)}), "201 distinct categories"),
        (lambda c: c.config_records[protocol.CATEGORY_COUNTS].__setitem__("term", "[" * 40_000), "nests deeper"),
        (
            lambda c: c.config_records[protocol.CATEGORY_COUNTS].__setitem__("term", '{"a": ' + "9" * 5000 + "}"),
            "more than 20 digits",
        ),
        (lambda c: c.config_records[protocol.CATEGORY_COUNTS].__setitem__("term", '{"term_36": NaN}'), "NaN is not"),
        (_tamper_categories("term", {"term_36": -3}), "a category count of 'term' must be a whole number"),
        (_tamper_categories("term", {"x" * 65: 1}), "longer than max-category-length=64"),
        (_tamper_categories("term", {"a\x00b": 1}), "control characters"),
        (_tamper_categories("term", {"term_36": 399, "term_60": 399}), "add up to more than the bank's 400 rows"),
        (_tamper_categories("term", {"term_36": 300, "36 months": 1}), "'term' is not one of the values the schema"),
        (lambda c: c.metric_records[protocol.BANK_ROWS].__setitem__("rows", 10**12), "rows must be a whole number"),
        (
            lambda c: c.metric_records[protocol.NUMERIC_STATS].__setitem__("customer_id", [1.0, 1.0, 1.0]),
            "unexpected keys \\['customer_id'\\]",
        ),
        (lambda c: c.pop(protocol.CATEGORY_COUNTS), "config records \\['bank-info'\\], expected"),
        (lambda c: c.config_records[protocol.BANK_INFO].__setitem__("name", ""), "bank name must be printable"),
    ],
)
def test_statistics_that_break_the_protocol_are_refused(stats, edit, reason):
    content = _reply(compute_stats(load_csv("", LENDING_CLUB).head(400), LENDING_CLUB))
    edit(content)
    with pytest.raises(ProtocolError, match=reason):
        protocol.read_statistics(content, LENDING_CLUB, LIMITS)


def test_category_limits_are_configurable(stats):
    with pytest.raises(ProtocolError, match="more than max-categories=10"):
        protocol.read_statistics(_reply(stats), LENDING_CLUB, protocol.Limits(max_categories=10))


GLOBAL = ArrayRecord([np.zeros((5, 4), np.float32), np.zeros(4, np.float32), np.zeros((4, 1), np.float32)])


def _train(weights=None, **metric_changes):
    weights = weights if weights is not None else [a + 0.1 for a in GLOBAL.to_numpy_ndarrays()]
    content = protocol.train_reply(weights, 0.25, 120)
    for k, v in metric_changes.items():
        content.metric_records[protocol.METRICS][k] = v
    return content


def test_a_well_formed_train_reply_is_read_back():
    weights, record = protocol.read_train_reply(_train(), GLOBAL, 120)
    assert [w.shape for w in weights] == [(5, 4), (4,), (4, 1)] and record["num-examples"] == 120


@pytest.mark.parametrize(
    "content,reason",
    [
        (
            _train([np.zeros((5, 4), np.float32), np.zeros(1, np.float32), np.zeros((4, 1), np.float32)]),
            "array 1 has shape \\(1,\\)",
        ),
        (
            _train([np.zeros((4, 5), np.float32), np.zeros(4, np.float32), np.zeros((4, 1), np.float32)]),
            "array 0 has shape \\(4, 5\\)",
        ),
        (_train([np.zeros((5, 4), np.float32), np.zeros(4, np.float32)]), "2 arrays named differently"),
        (_train([np.zeros((5, 4), np.float64), np.zeros(4, np.float32), np.zeros((4, 1), np.float32)]), "float64"),
        (
            _train([np.full((5, 4), np.nan, np.float32), np.zeros(4, np.float32), np.zeros((4, 1), np.float32)]),
            "NaN or infinite",
        ),
        (_train(**{"num-examples": 10**12}), "num-examples must be a whole number"),
        (_train(**{"num-examples": 121}), "num-examples=121, but the bank reported 120"),
        (_train(**{"num-examples": -1000}), "num-examples must be a whole number from 0"),
        (_train(**{"extra-key": 1.0}), "unexpected keys \\['extra-key'\\]"),
        (_train(**{"train-loss": float("nan")}), "train-loss is not a finite number"),
    ],
)
def test_train_replies_that_break_the_protocol_are_refused(content, reason):
    with pytest.raises(ProtocolError, match=reason):
        protocol.read_train_reply(content, GLOBAL, 120)


def _evaluate(n=300, bins=100, seed=0, **changes):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.1
    s = np.clip(rng.normal(0.1 + 0.1 * y, 0.05), 0, 1)
    summary = metrics.summarise(s, y, 0.1, bins)
    summary.update(loss=summary["sum-logloss"] / n, auc=metrics.exact_auc(s, y))
    summary.update(changes)
    return protocol.evaluate_reply(summary)


def test_a_well_formed_evaluation_is_read_back():
    record = protocol.read_evaluate_reply(_evaluate(), 100, (250, 350))
    assert record["num-examples"] == 300 and len(record["hist-bad"]) == 100


def _hist(scale=1, shift=0):
    base = protocol.read_evaluate_reply(_evaluate(), 100)
    return [v * scale + shift for v in base["hist-good"]]


@pytest.mark.parametrize(
    "content,reason",
    [
        (_evaluate(**{"hist-good": _hist(shift=-1)}), "hist-good must be a whole number"),
        (_evaluate(**{"hist-good": _hist(scale=1000)}), "hist-good must be a whole number from 0 to 300"),
        (_evaluate(**{"hist-bad": [0] * 99}), "hist-bad must be a list of histogram-bins=100"),
        (_evaluate(**{"num-examples": 5000}), "does not fit the training rows"),
        (_evaluate(**{"tp": 0, "fn": 0}), "confusion counts do not add up"),
        (_evaluate(**{"sum-brier": float("nan")}), "sum-brier is not a finite number"),
        (_evaluate(**{"sum-score": 1e9}), "sum-brier and sum-score must lie between"),
        (_evaluate(auc=1.5), "auc must lie between 0 and 1"),
        (_evaluate(auc=float("nan")), "NaN only when the validation rows have one class"),
    ],
)
def test_evaluations_that_break_the_protocol_are_refused(content, reason):
    with pytest.raises(ProtocolError, match=reason):
        protocol.read_evaluate_reply(content, 100, (250, 350))


def test_counts_must_agree_with_the_histograms():
    record = protocol.read_evaluate_reply(_evaluate(), 100, threshold=0.1)
    fake = list(record["hist-bad"])
    fake = [0] * 99 + [sum(fake)]  # every default scored 1.0: AUC 1.0, num-bad unchanged
    with pytest.raises(ProtocolError, match="does not match the (histogram above the threshold|score histograms)"):
        protocol.read_evaluate_reply(_evaluate(**{"hist-bad": fake}), 100, threshold=0.1)
    with pytest.raises(ProtocolError, match="sum-score does not match"):
        protocol.read_evaluate_reply(_evaluate(**{"sum-score": record["sum-score"] + 30}), 100, threshold=0.1)


def test_a_missing_key_is_refused():
    content = _evaluate()
    del content.metric_records[protocol.METRICS]["tp"]
    with pytest.raises(ProtocolError, match="missing keys \\['tp'\\]"):
        protocol.read_evaluate_reply(content, 100)


def test_validation_rows_follow_from_training_rows():
    # The stratified split: 1000 rows, 20 % validation -> 800 training and 200 validation rows.
    low, high = protocol.expected_validation_rows(800, 0.2)
    assert low <= 200 <= high and high - low < 10


def test_preprocessing_travels_in_its_own_record_with_its_digest():
    prep = json.dumps({"mean": {"a": 1.0}})
    content = RecordDict(
        {
            protocol.CONFIG: ConfigRecord({protocol.PREPROCESSING_SHA: protocol.digest(prep)}),
            protocol.PREPROCESSING: protocol.preprocessing_record(prep),
        }
    )
    assert protocol.read_preprocessing(content) == prep
    content[protocol.CONFIG] = ConfigRecord({protocol.PREPROCESSING_SHA: protocol.digest(prep + " ")})
    with pytest.raises(ProtocolError, match="does not match the digest"):
        protocol.read_preprocessing(content)


def test_a_boosted_update_is_scaled_to_the_others_and_honest_ones_are_kept():
    rng = np.random.default_rng(0)
    glob = [np.zeros(50), np.zeros(3)]
    honest = {n: [rng.normal(0, 1, 50), rng.normal(0, 1, 3)] for n in (1, 2, 3)}
    updates = {**{n: [w.copy() for w in ws] for n, ws in honest.items()}, 4: [w * 1000 for w in honest[1]]}
    factors = bound_updates(updates, glob, clip=3.0)
    assert set(factors) == {4}
    norms = {n: np.linalg.norm(np.concatenate(ws)) for n, ws in updates.items()}
    assert norms[4] == pytest.approx(3.0 * np.median([norms[1], norms[2], norms[3]]))
    assert all(np.array_equal(updates[n][0], honest[n][0]) for n in (1, 2, 3))
    # Two banks: each is judged by the other, so the boosted one is still bounded.
    two = {1: [w.copy() for w in honest[1]], 2: [w * 1000 for w in honest[2]]}
    assert set(bound_updates(two, glob, clip=3.0)) == {2}


def test_the_deployment_guide_lists_every_record_that_leaves_a_bank():
    text = DOCS.read_text(encoding="utf-8")
    table = text[text.index("## What leaves a bank") :]
    table = table[: table.index("\n## ", 5)]
    for message, records in protocol.LEAVES_A_BANK.items():
        assert re.search(rf"\| {message} \|", table), f"message {message!r} missing from the guide's table"
        for record in records:
            assert f"`{record}`" in table, f"record {record!r} of {message!r} missing from the guide's table"
    for stage, what in protocol.LEAVES_A_BANK_SECURE.items():  # secure mode's own messages
        assert f"| secagg {stage} | `{protocol.SECAGG}` | (secure mode only) | {what} |" in table, stage
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert "in secure mode (`privacy.secure-aggregation = true`)" in rows[0]
    assert all(line.count(" | ") == 3 and not line.endswith("|  |") for line in rows), "every row has its secure cell"


def test_an_update_pointing_away_from_the_others_has_a_negative_cosine_with_their_median():
    from fedcredit.federation.updates import update_directions

    rng = np.random.default_rng(3)
    glob = [np.zeros((5, 4), np.float32), np.zeros(4, np.float32)]
    step = [rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
    updates = {
        n: [g + s + 0.3 * rng.normal(size=s.shape).astype(np.float32) for g, s in zip(glob, step)] for n in range(4)
    }
    updates[9] = [g - 10 * s for g, s in zip(glob, step)]  # sign-flipped and ten times as long
    updates[8] = [g - 10 * s for g, s in zip(glob, step)]  # and a colluder: two of six
    cosines = update_directions(updates, glob)
    assert cosines[9] < -0.5 and cosines[8] < -0.5
    assert all(cosines[n] > 0.5 for n in range(4))


@pytest.mark.parametrize("banks", [2, 3, 4, 7, 10])
def test_the_median_of_the_other_banks_is_numpys_median_of_the_others(banks):
    from fedcredit.federation.updates import medians_without_each

    rng = np.random.default_rng(banks)
    for rows in (rng.normal(size=(banks, 9)), np.round(rng.normal(size=(banks, 9))).astype(np.float32)):  # ties too
        expected = np.stack([np.median(np.delete(rows, i, axis=0), axis=0) for i in range(banks)])
        assert np.array_equal(medians_without_each(rows), expected)
