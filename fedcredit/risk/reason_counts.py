"""How often each feature is a reason for a decline: the counts a bank sends, and the shares the report shows.

Among the loans the model declines (PD at or above the threshold, the PD of
`fedcredit.risk.explain`, as `fedcredit predict` decides), per feature how
often it is the first reason and how often any of the (at most
`TOP_REASONS`) reasons, and how many declined loans have no reason at all
(every stated value at or beyond its lowest-risk value). Counts only, so they
add up over banks: the coordinator pools them without a row, and in secure
mode sees only their sum. `bank_counts` adds the bank's own monotonicity
check; `frequency_table` turns pooled counts into shares of the declined
loans with Wilson intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedcredit.core.binned import rate
from fedcredit.risk.explain import References, explain, references

if TYPE_CHECKING:
    from fedcredit.core.schema import Schema

SCREEN_MARGIN = 1e-6  # loans scored this far below the threshold are explained too, in case the paths differ


def count_reasons(
    model: Any, frame: pd.DataFrame, threshold: float, features: Sequence[str], refs: References | None = None
) -> dict[str, Any]:
    """{rows, declined, no-reason, first, any} of `frame` (validated loans); the lists follow `features`."""
    from fedcredit.core import model as mdl

    refs = refs or references(model)
    loans = frame[refs.features].reset_index(drop=True)
    # Only loans near or above the threshold are explained (explain rescores each ~90 times); their PD from
    # explain decides, as in `fedcredit predict`: two scoring paths differ by ~1e-8, far below SCREEN_MARGIN.
    near = loans[mdl.score(model, loans) >= threshold - SCREEN_MARGIN] if len(loans) else loans
    scores, reasons = explain(model, near, refs)
    first, anywhere = dict.fromkeys(features, 0), dict.fromkeys(features, 0)
    declined = np.flatnonzero(scores >= threshold)  # a PD that is not finite is never a decline
    none = 0
    for i in declined:
        if not reasons[i]:
            none += 1
            continue
        first[reasons[i][0].feature] += 1
        for reason in reasons[i]:
            anywhere[reason.feature] += 1
    return {
        "rows": len(frame),
        "declined": int(declined.size),
        "no-reason": none,
        "first": [first[f] for f in features],
        "any": [anywhere[f] for f in features],
    }


def bank_counts(
    model: Any, rows: pd.DataFrame, schema: Schema, threshold: float, monotone_rows: int, seed: int
) -> dict[str, Any]:
    """What a bank sends after the last round (`protocol.reasons_reply`): `count_reasons` of its validation rows,
    and for each declared monotone constraint how many of (a seeded sample of `monotone_rows` of) them break it."""
    from fedcredit.risk.monotone import check_monotone

    refs = references(model, schema)
    features, constraints = list(schema.features), list(schema.directions)
    counts = count_reasons(model, rows, threshold, features, refs)
    sample = rows.sample(n=min(monotone_rows, len(rows)), random_state=seed)
    table = check_monotone(model, sample, schema, refs, typical=sample.iloc[:0])  # its own rows only
    broken = dict(zip(table["feature"], table["violations"], strict=True))
    counts["monotone-rows"] = len(sample)
    counts["monotone-violations"] = [int(broken[c]) for c in constraints]
    return counts


def frequency_table(counts: Mapping[str, Any], texts: Mapping[str, str]) -> list[dict[str, Any]]:
    """Per feature: its statement, and its share of the declined loans as first and as any reason (Wilson).

    Most frequent first reason first (then any reason, then the schema's order).
    """
    n = int(counts["declined"])
    features = list(counts["first"])
    rows = [
        {
            "feature": f,
            "statement": texts.get(f, f),
            "first": int(counts["first"][f]),
            "first-share": rate(int(counts["first"][f]), n).to_json(),
            "any": int(counts["any"][f]),
            "any-share": rate(int(counts["any"][f]), n).to_json(),
        }
        for f in features
    ]
    return sorted(rows, key=lambda r: (-r["first"], -r["any"], features.index(r["feature"])))
