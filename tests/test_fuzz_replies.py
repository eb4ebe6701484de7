"""Randomly mutated replies of every message kind: each check passes the reply or refuses it, never anything else.

A hostile bank controls every value of its reply within what Flower's records
can carry (MetricRecord: numbers and lists of numbers; ConfigRecord: text,
bytes, booleans and numbers; ArrayRecord: any array). Each reply below starts
honest and gets a few random mutations; the `read_*` check that the
coordinator applies must return or raise `ProtocolError`. Seeded, so a failure
is reproducible: the test id names the kind and the case.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedcredit.core import metrics
from fedcredit.core.loading import load_csv
from fedcredit.core.partition import stratified_split
from fedcredit.core.profile import layout_of, split_profile
from fedcredit.core.schema import LENDING_CLUB
from fedcredit.core.stats import compute_stats, preprocessing_from_stats
from fedcredit.federation import protocol
from fedcredit.federation.protocol import ProtocolError

LIMITS = protocol.Limits(max_categories=200, max_category_length=64)
GLOBAL = ArrayRecord([np.zeros((5, 4), np.float32), np.zeros(4, np.float32), np.zeros((4, 1), np.float32)])
BINS, ROWS = 50, 400
CASES = 300

_STATS = compute_stats(load_csv("", LENDING_CLUB).head(ROWS), LENDING_CLUB)


def _summary(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.random(100) < 0.2
    s = np.clip(rng.normal(0.1 + 0.2 * y, 0.05), 0, 1)
    summary = metrics.summarise(s, y, 0.1, BINS)
    summary.update(loss=summary["sum-logloss"] / 100, auc=metrics.exact_auc(s, y))
    return summary


_TRAIN, _VAL = stratified_split(load_csv("", LENDING_CLUB).head(ROWS), LENDING_CLUB.target, 0.2, 0)
_TRAIN_STATS = compute_stats(_TRAIN, LENDING_CLUB)
_LAYOUT = layout_of(LENDING_CLUB, preprocessing_from_stats(_TRAIN_STATS, 10))
VAL_ROWS = (60.0, 140.0)
_REASONS = protocol.ReasonLayout.of(LENDING_CLUB)


def _reason_counts() -> dict:
    """An honest bank's counts: 100 rows, 12 declined (10 with sub_grade first, 2 without a reason)."""
    first = [10 if f == "sub_grade" else 0 for f in _REASONS.features]
    anywhere = [10 if f == "sub_grade" else (3 if f == "int_rate" else 0) for f in _REASONS.features]
    violations = [0] * len(_REASONS.constraints)
    return {
        "rows": 100,
        "declined": 12,
        "no-reason": 2,
        "first": first,
        "any": anywhere,
        "monotone-rows": 100,
        "monotone-violations": violations,
    }


# Each kind: (an honest reply, the coordinator's check of it).
KINDS = {
    "statistics": (
        lambda: protocol.statistics_reply("acme", "file", LENDING_CLUB.sha256, _STATS),
        lambda c: protocol.read_statistics(c, LENDING_CLUB, LIMITS),
    ),
    "train": (
        lambda: protocol.train_reply([a + 0.1 for a in GLOBAL.to_numpy_ndarrays()], 0.25, ROWS),
        lambda c: protocol.read_train_reply(c, GLOBAL, ROWS),
    ),
    "evaluate": (
        lambda: protocol.evaluate_reply(_summary()),
        lambda c: protocol.read_evaluate_reply(c, BINS, VAL_ROWS, 0.1),
    ),
    "folded": (
        lambda: protocol.train_reply(GLOBAL.to_numpy_ndarrays(), 0.25, ROWS, _summary(1)),
        lambda c: (
            protocol.read_summary(c.metric_records[protocol.EVALUATION], BINS, VAL_ROWS, 0.1, what="evaluation")
            if protocol.EVALUATION in c.metric_records
            else protocol.read_train_reply(c, GLOBAL, ROWS)
        ),
    ),
    "personalise": (
        lambda: protocol.personalise_reply("global", {c: _summary(i) for i, c in enumerate(protocol.CANDIDATES)}),
        lambda c: protocol.read_personalise_reply(c, BINS, VAL_ROWS, 0.1),
    ),
    "profile": (
        lambda: protocol.profile_reply(
            split_profile(_TRAIN, LENDING_CLUB.target, _LAYOUT), split_profile(_VAL, LENDING_CLUB.target, _LAYOUT)
        ),
        lambda c: protocol.read_profile_reply(c, _LAYOUT, _TRAIN_STATS, 0.2),
    ),
    "reasons": (
        lambda: protocol.reasons_reply(_reason_counts()),
        lambda c: protocol.read_reasons_reply(c, _REASONS, VAL_ROWS, (10, 14)),
    ),
    "advertise": (
        lambda: RecordDict({protocol.SECAGG: ConfigRecord({"pk1": b"k" * 91, "pk2": b"q" * 91})}),
        lambda c: protocol.read_stage_reply("advertise", c),
    ),
    "share": (
        lambda: RecordDict({protocol.SECAGG: ConfigRecord({"destinations": [12, 13], "ciphertexts": [b"a", b"b"]})}),
        lambda c: protocol.read_stage_reply("share", c),
    ),
    "reveal": (
        lambda: RecordDict({protocol.SECAGG: ConfigRecord({"owners": [12, 13], "shares": [b"a", b"b"]})}),
        lambda c: protocol.read_stage_reply("reveal", c),
    ),
    "masked": (
        lambda: RecordDict({protocol.SECAGG: ConfigRecord({"masked": b"\x01" * 16 * 8})}),
        lambda c: protocol.read_masked_reply(c, 8, False),
    ),
}


def _junk_number(rng: np.random.Generator):
    return [
        0,
        -1,
        1,
        2**63 - 1,
        -(2**63),
        10**18,
        float("nan"),
        float("inf"),
        -float("inf"),
        1e308,
        -1e308,
        5e-324,
        0.5,
        -0.0,
        float(rng.normal() * 10 ** rng.integers(0, 12)),
        int(rng.integers(-1000, 1000)),
    ][rng.integers(0, 16)]


def _junk_metric(rng: np.random.Generator):
    if rng.random() < 0.5:
        return _junk_number(rng)
    n = int(rng.choice([0, 1, 2, 3, BINS - 1, BINS, BINS + 1, 2 * BINS, 10_000]))
    kind = rng.integers(0, 3)
    if kind == 0:
        return [float(_junk_number(rng)) for _ in range(min(n, 50))] + [0.0] * max(0, n - 50)
    if kind == 1:
        return [int(rng.integers(-5, 5)) for _ in range(n)]
    return [float(rng.random()) for _ in range(n)]


def _junk_config(rng: np.random.Generator):
    choices = [
        lambda: _junk_number(rng),
        lambda: bool(rng.random() < 0.5),
        lambda: "",
        lambda: "x" * int(rng.choice([1, 64, 65, 10_000, 1_000_000])),
        lambda: "[" * int(rng.choice([10, 1000, 100_000])),
        lambda: '{"a": ' + "9" * int(rng.choice([5, 25, 5000])) + "}",
        lambda: json.dumps({f"v{i}": int(rng.integers(-3, 3)) for i in range(int(rng.choice([1, 5, 300])))}),
        lambda: '{"a": NaN, "b": Infinity}',
        lambda: "\x00\x1b[31mred\n",
        lambda: "global",
        lambda: bytes(rng.integers(0, 256, int(rng.choice([0, 1, 91, 4097]))).astype(np.uint8)),
        lambda: [int(rng.integers(-3, 20)) for _ in range(int(rng.integers(0, 5)))],
        lambda: [b"x" * int(rng.integers(0, 5000)) for _ in range(int(rng.integers(0, 4)))],
        lambda: ["a", "b"],
        lambda: [True, False],
    ]
    return choices[rng.integers(0, len(choices))]()


def _junk_array(rng: np.random.Generator) -> np.ndarray:
    shape = tuple(int(x) for x in rng.integers(0, 6, rng.integers(0, 4)))
    dtype = rng.choice([np.float32, np.float64, np.int64, np.float16, np.bool_])
    array = rng.normal(size=shape).astype(dtype)
    if array.size and dtype in (np.float32, np.float64) and rng.random() < 0.3:
        array.flat[0] = rng.choice([np.nan, np.inf])
    return array


def _mutate(content: RecordDict, rng: np.random.Generator) -> None:
    """One mutation a hostile bank could send: a value, a key or a whole record changed."""
    names = list(content.keys())
    action = rng.integers(0, 10)
    if action == 0 and names:  # drop a record
        del content[names[rng.integers(0, len(names))]]
        return
    if action == 1:  # add a record
        kind = rng.integers(0, 3)
        name = str(rng.choice(["metrics", "config", "arrays", "bogus", protocol.SECAGG, protocol.EVALUATION]))
        content[name] = [
            MetricRecord({"x": 1.0}),
            ConfigRecord({"x": "y"}),
            ArrayRecord([_junk_array(rng)]),
        ][kind]
        return
    if not names:
        return
    record = content[names[rng.integers(0, len(names))]]
    keys = list(record.keys())
    if action == 2 and keys:  # drop a key
        del record[keys[rng.integers(0, len(keys))]]
        return
    key = keys[rng.integers(0, len(keys))] if keys and action != 3 else f"extra-{rng.integers(0, 9)}"
    if isinstance(record, ArrayRecord):
        value = _junk_array(rng)
        try:
            arrays = record.to_numpy_ndarrays()
            arrays[rng.integers(0, len(arrays))] = value
            content[names[names.index(next(n for n in names if content[n] is record))]] = ArrayRecord(arrays)
        except (ValueError, IndexError, TypeError):
            pass
        return
    value = _junk_metric(rng) if isinstance(record, MetricRecord) else _junk_config(rng)
    if isinstance(record, MetricRecord) and isinstance(record.get(key), list) and rng.random() < 0.5:
        old = list(record[key])  # change one entry of a histogram only
        if old:
            old[rng.integers(0, len(old))] = _junk_number(rng)
            value = [float(v) for v in old] if any(isinstance(v, float) for v in old) else old
    try:
        record[key] = value
    except (TypeError, ValueError):  # a value the record cannot carry: a bank cannot send it either
        pass


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_mutated_reply_is_passed_or_refused_never_anything_else(kind):
    honest, check = KINDS[kind]
    check(honest())  # the honest reply passes
    rng = np.random.default_rng(sum(map(ord, kind)))
    refused = 0
    for case in range(CASES):
        content = copy.deepcopy(honest())
        for _ in range(int(rng.integers(1, 4))):
            _mutate(content, rng)
        try:
            check(content)
        except ProtocolError:
            refused += 1
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{kind} case {case}: the check raised {type(err).__name__}: {err!s:.300}")
    assert refused > CASES // 3, f"only {refused} of {CASES} mutated {kind} replies were refused"


def test_the_mutations_reach_what_matters():
    """The mutator itself: it does change values, drop keys and records, as the refusals above rely on."""
    rng = np.random.default_rng(0)
    honest = KINDS["evaluate"][0]()
    changed = 0
    for _ in range(50):
        content = copy.deepcopy(honest)
        _mutate(content, rng)
        changed += content.metric_records.get(protocol.METRICS) != honest.metric_records[protocol.METRICS]
    assert changed > 25
