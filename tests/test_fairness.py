"""Fair-lending figures (`fedcredit.core.fairness`) on groups with known outcomes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcredit.core import binned as bn
from fedcredit.core import fairness

BINS = 10  # bin 0 is PD < 0.1: approved at threshold 0.1


def _group(approved_good: int, declined_good: int, approved_bad: int, declined_bad: int) -> bn.Binned:
    good, bad = np.zeros(BINS, int), np.zeros(BINS, int)
    good[0], good[3] = approved_good, declined_good
    bad[0], bad[5] = approved_bad, declined_bad
    return bn.Binned(bad, good)


GROUPS = {
    "male": _group(76, 14, 4, 6),  # 100 loans, 80 approved
    "female": _group(57, 28, 3, 12),  # 100 loans, 60 approved
    "undocumented": _group(2, 0, 0, 1),
}


def test_a_known_adverse_impact_ratio_is_recovered_with_katz_interval():
    table = fairness.attribute(GROUPS, 0.1, min_rows=30)
    rows = {r["group"]: r for r in table["groups"]}
    assert rows["male"]["reference"] and table["reference"] == "male"
    assert rows["male"]["air"] == {"value": 1.0, "low": 1.0, "high": 1.0, "se": 0.0, "method": "reference"}
    assert rows["female"]["approval-rate"]["value"] == pytest.approx(0.60)
    assert rows["female"]["air"]["value"] == pytest.approx(0.75)
    se = math.sqrt(1 / 60 - 1 / 100 + 1 / 80 - 1 / 100)
    assert rows["female"]["air"]["low"] == pytest.approx(0.75 * math.exp(-1.959964 * se), rel=1e-6)
    assert rows["female"]["four-fifths"] and table["four-fifths-flag"]
    assert table["worst-group"] == "female" and "below four fifths" in table["reading"]


def test_equal_opportunity_and_equalised_odds_compare_with_the_reference():
    rows = {r["group"]: r for r in fairness.attribute(GROUPS, 0.1, 30)["groups"]}
    # approval among repaid: male 76/90, female 57/85; among defaulted: male 4/10, female 3/15
    assert rows["female"]["equal-opportunity-difference"]["value"] == pytest.approx(57 / 85 - 76 / 90)
    assert rows["female"]["equalised-odds-difference"] == pytest.approx(
        max(abs(57 / 85 - 76 / 90), abs(3 / 15 - 4 / 10))
    )
    assert rows["male"]["equal-opportunity-difference"]["value"] == 0


def test_small_and_undocumented_groups_are_shown_never_judged():
    table = fairness.attribute(GROUPS, 0.1, 30)
    rows = {r["group"]: r for r in table["groups"]}
    assert rows["undocumented"]["too-small"] and not rows["undocumented"]["judged"]
    assert "four-fifths" in rows["undocumented"] and not rows["undocumented"]["four-fifths"]
    assert table["too-small"] == ["undocumented"]
    # a large undocumented group is still never the reference nor flagged
    big = {**GROUPS, "undocumented": _group(100, 0, 5, 0)}
    t = fairness.attribute(big, 0.1, 30)
    assert t["reference"] == "male" and not {r["group"]: r for r in t["groups"]}["undocumented"]["judged"]


def test_no_judgement_without_two_groups_large_enough():
    table = fairness.attribute({"male": GROUPS["male"], "female": _group(5, 3, 1, 1)}, 0.1, 30)
    assert table["worst-air"] is None and "Not judged" in table["reading"] and not table["four-fifths-flag"]
