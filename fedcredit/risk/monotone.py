"""Does the model's probability of default (PD) move only the declared way? A check, and partial dependence.

The model is monotone by construction (`fedcredit.core.model`); this check
is the evidence a model-risk validator asks for, and it catches a model built
without the constraints (`monotone-constraints = false`) or by other code.
For every constraint, the PD is computed as the feature moves over its grid:
a dense grid over the numeric feature's range (the federation's mean +-
`CHECK_SD` standard deviations, within the schema's bounds: wider than the
range reasons compare against) or every level of an ordered category, once
with the other features at typical values (numeric: the federation's mean;
categorical: the rows' most common value) and once for each real row, the
row's other values kept. A row violates the constraint when its PD moves
against the direction by more than `TOLERANCE` (float32 rounding) between two
neighbouring grid values.

`partial_dependence` gives, for the strongest features (the widest swing of
the mean PD over the grid), the mean PD over the rows as each feature moves
over its known range: the curves a report plots
(`fedcredit.risk.monotone_figures`). Both functions only read the model and
the rows given; nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedcredit.risk.explain import GRID_POINTS, References, references

if TYPE_CHECKING:
    from fedcredit.core.schema import Schema

CHECK_POINTS = 41  # values per numeric grid
CHECK_SD = 4.0  # the check's range: mean +- 4 standard deviations, within the bounds
TOLERANCE = 1e-6  # PD moves against the direction smaller than this are float32 rounding, not violations
CHECK_COLUMNS = ["feature", "direction", "grid_points", "rows_checked", "violations", "largest_violation"]
DIRECTION_NAMES = {1: "increasing", -1: "decreasing"}


def typical_row(refs: References, rows: pd.DataFrame) -> pd.DataFrame:
    """One row of typical values: numeric at the federation's mean, categorical at the rows' most common known value."""
    row: dict[str, Any] = dict(refs.numeric)
    for col, levels in refs.categorical.items():
        known = rows[col][rows[col].isin(levels)] if col in rows else pd.Series(dtype=object)
        row[col] = str(known.value_counts().idxmax()) if len(known) else (levels[len(levels) // 2] if levels else "")
    return pd.DataFrame([row])


def _curves(model: Any, rows: pd.DataFrame, col: str, values: list[Any]) -> np.ndarray:
    """PD of every row (columns) at every grid value of `col` (rows of the result)."""
    from fedcredit.core import model as mdl

    variants = pd.concat([rows.assign(**{col: v}) for v in values], ignore_index=True)
    return mdl.score(model, variants).reshape(len(values), len(rows))


def check_monotone(
    model: Any,
    rows: pd.DataFrame,
    schema: Schema | None = None,
    refs: References | None = None,
    points: int = CHECK_POINTS,
    tolerance: float = TOLERANCE,
) -> pd.DataFrame:
    """The check's table: one line per constraint (feature, direction, grid points, rows checked, violations, largest).

    `rows` are real applicants or loans (validated feature columns); the
    typical row is checked first, so rows_checked is len(rows) + 1. The
    constraints are the schema's when it is given (so a model that does not
    hold them is checked against them, ordered categories in the schema's
    order), else the model's own. `largest_violation` is in PD points (0: none).
    """
    refs = refs or references(model, schema)
    directions = schema.directions if schema is not None else refs.direction
    orders = schema.orders if schema is not None else {}
    frame = pd.concat([typical_row(refs, rows), rows[refs.features]], ignore_index=True)
    lines = []
    for col, sign in directions.items():
        if col in orders:
            values: list[Any] = list(orders[col])
        elif col in refs.categorical:
            values = list(refs.categorical[col])
        else:
            values = refs.grid(col, points, CHECK_SD)
        worst = np.zeros(len(frame))  # per row: its largest PD move against the direction
        if len(values) > 1:
            worst = (-sign * np.diff(_curves(model, frame, col, values), axis=0)).max(axis=0)
        lines.append(
            {
                "feature": col,
                "direction": DIRECTION_NAMES[sign],
                "grid_points": len(values),
                "rows_checked": len(frame),
                "violations": int((worst > tolerance).sum()),
                "largest_violation": float(max(worst.max(initial=0.0), 0.0)),
            }
        )
    return pd.DataFrame(lines, columns=CHECK_COLUMNS)


def partial_dependence(
    model: Any,
    rows: pd.DataFrame,
    features: Iterable[str] | None = None,
    top: int = 6,
    refs: References | None = None,
    schema: Schema | None = None,
    points: int = GRID_POINTS,
) -> pd.DataFrame:
    """Mean PD over `rows` as each feature moves over its known range: (feature, position, value, pd), strongest first.

    Without `features`, the `top` features whose mean PD swings most over
    their grid. Numeric grids span the range reasons use (mean +- 2 standard
    deviations within the bounds); categories are in their order (ordered
    columns) or the model's vocabulary order.
    """
    refs = refs or references(model, schema)
    frame = rows[refs.features].reset_index(drop=True)
    chosen = list(features) if features is not None else refs.features
    curves: dict[str, tuple[list[Any], np.ndarray]] = {}
    for col in chosen:
        values = refs.grid(col, points)
        if values:
            curves[col] = (values, _curves(model, frame, col, values).mean(axis=1))
    ranked = sorted(curves, key=lambda c: (-float(np.ptp(curves[c][1])), refs.features.index(c)))
    if features is None:
        ranked = ranked[:top]
    table = [
        {"feature": col, "position": k, "value": v, "pd": float(p)}
        for col in ranked
        for k, (v, p) in enumerate(zip(*curves[col], strict=True))
    ]
    return pd.DataFrame(table, columns=["feature", "position", "value", "pd"])


def summary(table: pd.DataFrame) -> Mapping[str, Any]:
    """The check's verdict in a few numbers: constraints, how many are held on every row, the largest violation."""
    return {
        "constraints": len(table),
        "held": int((table["violations"] == 0).sum()),
        "violations": int(table["violations"].sum()),
        "largest_violation": float(table["largest_violation"].max()) if len(table) else 0.0,
    }
