"""CSI and the data section from profile.json, on a hand-built profile whose answers are worked out here."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from fedcredit.core.binned import psi_of_bands
from fedcredit.risk.curves import PSI_FLOOR
from fedcredit.risk.stability import POOLED, data_section, feature_stability, z_bands


def _z(counts_at: dict[int, int], missing: int) -> dict:
    counts = [0] * 26
    for i, n in counts_at.items():
        counts[i] = n
    return {"counts": counts, "missing": missing}


def _split(x: dict, c: list[int], c_missing: int, bads: int) -> dict:
    rows = sum(x["counts"]) + x["missing"]
    return {"rows": rows, "bads": bads, "numeric": {"x": x}, "categorical": {"c": {"counts": c, "missing": c_missing}}}


def _bank(x: dict, c: list[int], c_missing: int, bads: int) -> dict:
    split = _split(x, c, c_missing, bads)
    return {"train": split, "validation": split}


# Bins 12 ([-0.25, 0)) and 13 ([0, 0.25)) only; B has 20 missing values of x, C is B again.
A = _bank(_z({12: 50, 13: 50}, 0), [30, 70, 0], 0, bads=10)
B = _bank(_z({12: 20, 13: 60}, 20), [50, 40, 5], 5, bads=25)
PROFILE = {
    "features": {"numeric": ["x"], "categorical": {"c": ["u", "v", "(unknown)"]}},
    "banks": {"A": A, "B": B, "C": B},
    "pooled": None,
}


def _psi(a: list[float], r: list[float]) -> float:
    a = [max(v, PSI_FLOOR) for v in a]
    r = [max(v, PSI_FLOOR) for v in r]
    return sum((x - y) * math.log(x / y) for x, y in zip(a, r, strict=True))


def test_bands_hold_about_equal_pooled_mass_and_stay_contiguous():
    bands = z_bands([10] * 26)  # a flat pooled distribution: ten bands of 2 or 3 bins (20 or 30 of 260 rows)
    assert len(bands) == 10 and [i for band in bands for i in band] == list(range(26))
    assert all(len(band) in (2, 3) for band in bands) and bands[0] == [0, 1, 2] and bands[1] == [3, 4]
    # Two lumps of pooled mass: two bands (and the empty bins join the lump next to them), whatever n_bands.
    pooled = [0] * 12 + [90, 170] + [0] * 12
    assert z_bands(pooled, 2) == [list(range(13)), list(range(13, 26))]
    assert [len(b) for b in z_bands(pooled, 10)] == [12, 1, 1, 12]
    assert z_bands([0] * 26) == [list(range(26))]


@pytest.mark.parametrize("n_bands", [2, 10])
def test_csi_compares_each_bank_with_the_other_banks_summed(n_bands):
    table = feature_stability(PROFILE, n_bands=n_bands)
    assert list(table.columns) == ["bank", "feature", "csi", "low", "high", "reading"]
    assert ((table["low"] <= table["csi"]) & (table["csi"] <= table["high"])).all()
    csi = {(r.bank, r.feature): r.csi for r in table.itertuples()}
    # x, bands (bins <=12, bins >=13, missing): A [50, 50, 0] of 100; B and C [20, 60, 20] of 100 each.
    assert csi["A", "x"] == pytest.approx(_psi([0.5, 0.5, 0.0], [0.2, 0.6, 0.2]))
    assert csi["B", "x"] == pytest.approx(_psi([0.2, 0.6, 0.2], [0.35, 0.55, 0.1]))  # against A + C
    assert csi["C", "x"] == csi["B", "x"]
    # c, slots (u, v, unknown, missing): A [30, 70, 0, 0]; B and C [50, 40, 5, 5].
    assert csi["A", "c"] == pytest.approx(_psi([0.3, 0.7, 0, 0], [0.5, 0.4, 0.05, 0.05]))
    assert csi["B", "c"] == pytest.approx(_psi([0.5, 0.4, 0.05, 0.05], [0.4, 0.55, 0.025, 0.025]))
    readings = {(r.bank, r.feature): r.reading for r in table.itertuples()}
    assert csi["A", "x"] > 0.25 and readings["A", "x"] == "unstable: investigate"
    assert 0.1 <= csi["B", "c"] < 0.25 and readings["B", "c"] == "shifted: monitor"


def test_no_other_bank_or_no_per_bank_counts_give_no_csi():
    alone = feature_stability({**PROFILE, "banks": {"A": A}})
    assert alone["csi"].isna().all() and set(alone["reading"]) == {"n/a"}
    assert feature_stability({**PROFILE, "banks": {}}).empty  # secure mode: only the pooled profile
    assert math.isnan(psi_of_bands([0, 0], [1, 1]).value)


def test_the_data_section_gives_rows_defaults_missing_and_unknown_shares():
    pooled = {
        split: _split(_z({12: 90, 13: 170}, 40), [130, 150, 10], 10, bads=60) for split in ("train", "validation")
    }
    table = data_section({**PROFILE, "pooled": pooled}).set_index(["bank", "split"])
    assert list(table.index.get_level_values(0).unique()) == ["A", "B", "C", POOLED]
    a, b, everyone = table.loc[("A", "train")], table.loc[("B", "validation")], table.loc[(POOLED, "train")]
    assert (a["rows"], a["bads"], a["default_rate"]) == (100, 10, 0.1)
    assert (a["missing:x"], a["missing:c"], a["unknown:c"]) == (0.0, 0.0, 0.0)
    assert (b["default_rate"], b["missing:x"], b["missing:c"], b["unknown:c"]) == (0.25, 0.2, 0.05, 0.05)
    assert (everyone["rows"], everyone["default_rate"]) == (300, 0.2)
    assert everyone["missing:x"] == pytest.approx(40 / 300)
    assert isinstance(table, pd.DataFrame) and len(table) == 8
