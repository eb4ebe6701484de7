"""Fair-lending figures of one protected attribute, from each group's class histograms.

Every bank bins its validation loans' PDs per class and per group of each
protected attribute (sex, age band, ...); summed over banks these give, for
the whole consortium, each group's outcomes at the decision threshold as if
all validation loans were in one place, although no bank ever sends a
borrower's group. A loan is approved when its PD is below `threshold`.

Per group: loans, defaults, approval rate, the adverse impact ratio (AIR:
its approval rate over the most-approved group's; below 0.8 is evidence of
adverse impact under the four-fifths rule, 29 CFR 1607.4(D)), approval
rates among repaid loans (equal opportunity: creditworthy applicants
approved alike) and among defaulted loans (with it, equalised odds), AUC
and calibration (observed default rate against mean PD). Intervals are
95 %: Wilson for rates, Katz's log method for the AIR (a ratio of two
independent proportions), Wald for differences of rates, DeLong for AUC.
A group with fewer than `min_rows` loans (or no loan of a class) is
flagged as too small to judge and is never the reference; the
`undocumented` group (missing or unknown values) is shown but never judged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedcredit.core import binned as bn

FOUR_FIFTHS = 0.8
UNDOCUMENTED = "undocumented"


def approvals(b: bn.Binned, threshold: float) -> tuple[int, int]:
    """(defaulted loans approved, repaid loans approved): PD below the threshold's bin edge."""
    k = bn.edge_of(threshold, b.bins)
    return int(b.bad[:k].sum()), int(b.good[:k].sum())


def air_interval(approved: int, rows: int, ref_approved: int, ref_rows: int) -> bn.Estimate:
    """Ratio of two approval rates with Katz's 95 % log interval (NaN when either rate is 0 or undefined)."""
    if not (rows and ref_rows and approved and ref_approved):
        value = (approved / rows) / (ref_approved / ref_rows) if rows and ref_rows and ref_approved else math.nan
        return bn.Estimate(value, math.nan, math.nan, method="Katz log")
    ratio = (approved / rows) / (ref_approved / ref_rows)
    se = math.sqrt(max(1 / approved - 1 / rows + 1 / ref_approved - 1 / ref_rows, 0.0))
    return bn.Estimate(ratio, ratio * math.exp(-bn.Z95 * se), ratio * math.exp(bn.Z95 * se), se, "Katz log")


def rate_difference(k1: int, n1: int, k2: int, n2: int) -> bn.Estimate:
    """k1/n1 - k2/n2 with its 95 % Wald interval."""
    if not (n1 and n2):
        return bn.NAN
    p1, p2 = k1 / n1, k2 / n2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return bn.Estimate(p1 - p2, p1 - p2 - bn.Z95 * se, p1 - p2 + bn.Z95 * se, se, "Wald")


def group_rows(groups: Mapping[str, bn.Binned], threshold: float, min_rows: int) -> list[dict[str, Any]]:
    """One row per group (in the given order) with every figure and its interval, AIR against the reference."""
    base = []
    for name, b in groups.items():
        approved_bad, approved_good = approvals(b, threshold)
        small = b.rows < min_rows or not b.both_classes
        base.append((name, b, approved_bad, approved_good, small))
    judged = [row for row in base if not row[4] and row[0] != UNDOCUMENTED]
    reference = max(judged, key=lambda r: (r[2] + r[3]) / r[1].rows, default=None)
    out = []
    for name, b, approved_bad, approved_good, small in base:
        approved = approved_bad + approved_good
        row: dict[str, Any] = {
            "group": name,
            "loans": b.rows,
            "defaults": b.n_bad,
            "too-small": small,
            "judged": not small and name != UNDOCUMENTED,
            "default-rate": bn.rate(b.n_bad, b.rows).to_json(),
            "approval-rate": bn.rate(approved, b.rows).to_json(),
            "approval-among-repaid": bn.rate(approved_good, b.n_good).to_json(),
            "approval-among-defaulted": bn.rate(approved_bad, b.n_bad).to_json(),
            "auc": bn.delong_auc(b).to_json(),
            "calibration-gap": bn.calibration_in_the_large(b).to_json(),
            "reference": reference is not None and name == reference[0],
        }
        if reference is not None:
            _, rb, r_bad, r_good, _ = reference
            row["air"] = (
                bn.Estimate(1.0, 1.0, 1.0, 0.0, "reference").to_json()  # compared with itself: exactly 1
                if row["reference"]
                else air_interval(approved, b.rows, r_bad + r_good, rb.rows).to_json()
            )
            row["equal-opportunity-difference"] = rate_difference(approved_good, b.n_good, r_good, rb.n_good).to_json()
            defaulted = rate_difference(approved_bad, b.n_bad, r_bad, rb.n_bad)
            row["equalised-odds-difference"] = max(
                abs(row["equal-opportunity-difference"]["value"]), abs(defaulted.value)
            )
            row["four-fifths"] = bool(row["judged"] and row["air"]["value"] < FOUR_FIFTHS)
        out.append(row)
    return out


def attribute(groups: Mapping[str, bn.Binned], threshold: float, min_rows: int) -> dict[str, Any]:
    """One attribute's table and its reading: the worst judged AIR and whether the four-fifths rule flags it."""
    rows = group_rows(groups, threshold, min_rows)
    judged = [r for r in rows if r["judged"] and "air" in r and math.isfinite(r["air"]["value"])]
    worst = min(judged, key=lambda r: r["air"]["value"]) if len(judged) > 1 else None
    reference = next((r["group"] for r in rows if r["reference"]), None)
    return {
        "groups": rows,
        "reference": reference,
        "worst-air": worst["air"] if worst else None,
        "worst-group": worst["group"] if worst else None,
        "four-fifths-flag": any(r.get("four-fifths") for r in rows),
        "too-small": [r["group"] for r in rows if r["too-small"]],
        "reading": _reading(worst, reference),
    }


def _reading(worst: dict[str, Any] | None, reference: str | None) -> str:
    if worst is None or reference is None:
        return "Not judged: fewer than two groups large enough to compare."
    air = worst["air"]
    text = (
        f"The least-approved group ({worst['group']}) is approved at {air['value']:.2f} times the rate of the "
        f"most-approved ({reference})"
    )
    if math.isfinite(air["low"]):
        text += f" (95 % interval {air['low']:.2f} - {air['high']:.2f})"
    if air["value"] < FOUR_FIFTHS:
        return text + ": below four fifths, evidence of adverse impact to be explained or remedied."
    if math.isfinite(air["low"]) and air["low"] < FOUR_FIFTHS:
        return text + ": above four fifths, but the interval reaches below it; too few loans to rule it out."
    return text + ": above four fifths."


def split_groups(counts: np.ndarray, names: list[str]) -> dict[str, bn.Binned]:
    """(groups, 2, bins) counts as named Binned histograms."""
    return {name: bn.Binned(counts[i, 0], counts[i, 1]) for i, name in enumerate(names)}
