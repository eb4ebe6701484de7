"""Reason-code counts: what a bank counts, what the coordinator accepts of it, and how sums are checked."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict
from runfixture import tiny_run  # noqa: F401  (fixture)

from fedcredit.core import model as mdl
from fedcredit.core.schema import LENDING_CLUB
from fedcredit.federation import protocol
from fedcredit.federation.protocol import ProtocolError
from fedcredit.federation.reasons import add_counts
from fedcredit.risk import explain, predict, reason_counts

S = LENDING_CLUB
LAYOUT = protocol.ReasonLayout.of(S)
F, C = len(LAYOUT.features), len(LAYOUT.constraints)
VAL_ROWS = (380.0, 400.0)


def _honest() -> dict:
    """A consistent bank: 390 rows, 50 declined, 2 without a reason."""
    first = [0] * F
    first[LAYOUT.features.index("sub_grade")], first[LAYOUT.features.index("int_rate")] = 40, 8
    anywhere = [min(3 * v + i % 5, 50) for i, v in enumerate(first)]
    return {
        "rows": 390,
        "declined": 50,
        "no-reason": 2,
        "first": first,
        "any": anywhere,
        "monotone-rows": 100,
        "monotone-violations": [0] * C,
    }


def _reply(counts: dict) -> RecordDict:
    return RecordDict({protocol.REASON_COUNTS: MetricRecord(counts)})


def _edit(**changes) -> dict:
    counts = copy.deepcopy(_honest())
    for key, value in changes.items():
        counts[key] = value(counts[key]) if callable(value) else value
    return counts


def _at(values: list, index: int, value) -> list:
    out = list(values)
    out[index] = value
    return out


SUB_GRADE = LAYOUT.features.index("sub_grade")
CASES = {
    "a negative count": (_edit(first=lambda v: _at(v, 0, -1)), "must be a whole number"),
    "a fractional count": (_edit(**{"no-reason": 1.5}), "must be a whole number"),
    "a NaN count": (_edit(any=lambda v: _at([float(x) for x in v], 3, float("nan"))), "must be a whole number"),
    "an absurd row count": (_edit(rows=10**12), "must be a whole number"),
    "more rows than its validation split": (_edit(rows=900), "does not fit the training rows"),
    "more declines than rows": (_edit(declined=391), "declined must be a whole number from 0 to 390"),
    "a list one short": (_edit(first=lambda v: v[:-1]), f"first must be a list of {F} counts"),
    "a list one long": (_edit(any=lambda v: [*v, 0]), f"any must be a list of {F} counts"),
    "a number instead of a list": (_edit(any=7), f"any must be a list of {F} counts"),
    "a feature as reason 1 beyond the declines": (
        _edit(first=lambda v: _at(v, SUB_GRADE, 51)),
        "must be a whole number from 0 to 50",
    ),
    "first reasons that do not add up to the declines": (
        _edit(first=lambda v: _at(v, SUB_GRADE, 39)),
        "first-reason counts plus no-reason must be the declined loans",
    ),
    "reason 1 more often than any reason": (
        _edit(any=lambda v: _at(v, SUB_GRADE, 10)),
        "first reason more often than it is a reason at all",
    ),
    "more than four reasons a loan": (_edit(any=[50] * F), "more reasons than 4"),
    "more checked rows than the protocol's": (
        _edit(**{"monotone-rows": protocol.MONOTONE_ROWS + 1}),
        f"monotone-rows must be a whole number from 0 to {protocol.MONOTONE_ROWS}",
    ),
    "fewer checked rows than the protocol's": (
        _edit(**{"monotone-rows": 10}),
        f"monotone-rows must be {protocol.MONOTONE_ROWS}",
    ),
    "violations beyond the checked rows": (
        _edit(**{"monotone-violations": [101] + [0] * (C - 1)}),
        "must be a whole number from 0 to 100",
    ),
    "a constraint missing": (_edit(**{"monotone-violations": [0] * (C - 1)}), f"must be a list of {C} counts"),
}


def test_the_protocols_cap_on_reasons_is_explains():
    assert protocol.MAX_REASONS == explain.TOP_REASONS


def test_an_honest_reply_is_read_per_feature():
    got = protocol.read_reasons_reply(protocol.reasons_reply(_honest()), LAYOUT, VAL_ROWS, (45, 55))
    assert got["declined"] == 50 and got["first"]["sub_grade"] == 40 and got["first"]["int_rate"] == 8
    assert list(got["first"]) == list(S.features) and list(got["monotone-violations"]) == list(S.directions)


@pytest.mark.parametrize("case", list(CASES))
def test_a_reply_that_breaks_the_protocol_is_refused(case):
    counts, reason = CASES[case]
    with pytest.raises(ProtocolError, match=reason):
        protocol.read_reasons_reply(_reply(counts), LAYOUT, VAL_ROWS)


def test_records_and_keys_are_exactly_the_protocols():
    content = protocol.reasons_reply(_honest())
    content["extra"] = MetricRecord({"x": 1})
    with pytest.raises(ProtocolError, match="metric records"):
        protocol.read_reasons_reply(content, LAYOUT, VAL_ROWS)
    with pytest.raises(ProtocolError, match="unexpected keys \\['leak'\\]"):
        protocol.read_reasons_reply(_reply({**_honest(), "leak": 1}), LAYOUT, VAL_ROWS)
    with pytest.raises(ProtocolError, match="missing keys \\['no-reason'\\]"):
        protocol.read_reasons_reply(_reply({k: v for k, v in _honest().items() if k != "no-reason"}), LAYOUT, VAL_ROWS)


def test_declines_must_be_what_the_banks_final_histograms_allow():
    bins, threshold = 2000, 0.1
    bad, good = np.zeros(bins, np.int64), np.zeros(bins, np.int64)
    good[150], bad[199], good[200], bad[600] = 300, 3, 5, 42  # PDs 0.075, just below 0.1, just above, 0.3
    low, high = protocol.declined_bounds(bad, good, threshold)
    # The bins on either side of the threshold's edge count either way; the others exactly.
    assert (low, high) == (42, 50)
    assert protocol.read_reasons_reply(protocol.reasons_reply(_honest()), LAYOUT, VAL_ROWS, (low, high))
    with pytest.raises(ProtocolError, match="final evaluation's histograms put 42 to 45"):
        protocol.read_reasons_reply(protocol.reasons_reply(_honest()), LAYOUT, VAL_ROWS, (42, 45))
    # A threshold inside a bin: that bin counts either way.
    assert protocol.declined_bounds(bad, good, 0.3002) == (0, 42)


def test_a_secure_sum_is_checked_as_one_banks_counts():
    second = _edit(rows=385, declined=40, first=lambda v: _at(v, SUB_GRADE, 30), any=lambda v: [min(x, 40) for x in v])
    parts = [_honest(), second]
    vector = np.sum([protocol.reasons_vector(protocol.reasons_reply(p)) for p in parts], axis=0)
    assert vector.shape == (LAYOUT.length,)
    pooled = protocol.read_reasons_sum(vector, LAYOUT, 2, (760.0, 790.0), (88, 92))
    one = [protocol.read_reasons_reply(protocol.reasons_reply(p), LAYOUT, VAL_ROWS) for p in parts]
    assert pooled == add_counts(one)
    assert pooled["first"]["sub_grade"] == 70 and pooled["monotone-rows"] == 200
    with pytest.raises(ProtocolError, match="wrong length"):
        protocol.read_reasons_sum(vector[:-1], LAYOUT, 2, None)
    with pytest.raises(ProtocolError, match="not whole non-negative"):
        protocol.read_reasons_sum(np.asarray(_at(vector, 5, -3.0)), LAYOUT, 2, None)
    with pytest.raises(ProtocolError, match="first-reason counts plus no-reason"):
        protocol.read_reasons_sum(np.asarray(_at(vector, 3, vector[3] + 1)), LAYOUT, 2, None)
    with pytest.raises(ProtocolError, match="final evaluation's histograms"):
        protocol.read_reasons_sum(vector, LAYOUT, 2, None, (10, 20))


@pytest.fixture(scope="module")
def model(tiny_run):  # noqa: F811
    return mdl.load(tiny_run / "model-final.keras")


def test_counts_are_the_reasons_explain_gives_the_declined_loans(model, raw_frame):
    frame = predict.validate_rows(raw_frame.iloc[3000:3400].reset_index(drop=True), S, "x")[0]
    refs = explain.references(model, S)
    threshold = float(np.quantile(mdl.score(model, frame), 0.7))  # about 120 declines
    counts = reason_counts.count_reasons(model, frame, threshold, LAYOUT.features, refs)
    scores, reasons = explain.explain(model, frame, refs)  # every row, independently of the screening
    declined = [why for s, why in zip(scores, reasons, strict=True) if s >= threshold]
    assert counts["rows"] == len(frame) and counts["declined"] == len(declined) > 100
    assert counts["no-reason"] == sum(not why for why in declined)
    for i, feature in enumerate(LAYOUT.features):
        assert counts["first"][i] == sum(bool(why) and why[0].feature == feature for why in declined), feature
        assert counts["any"][i] == sum(feature in {r.feature for r in why} for why in declined), feature
    assert sum(counts["any"]) > sum(counts["first"])  # most declines have more than one reason
    checked = protocol.read_reasons_reply(
        protocol.reasons_reply({**counts, "monotone-rows": 100, "monotone-violations": [0] * C}),
        LAYOUT,
        (len(frame), len(frame)),
    )
    table = reason_counts.frequency_table(checked, {f: S.reason_text(f) for f in S.features})
    assert [r["first"] for r in table] == sorted((r["first"] for r in table), reverse=True)
    top = table[0]
    assert top["first-share"]["value"] == pytest.approx(top["first"] / len(declined))
    assert top["first-share"]["low"] < top["first-share"]["value"] < top["first-share"]["high"]  # Wilson
    assert top["statement"] == S.reason_text(top["feature"])
