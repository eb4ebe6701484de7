"""Does the model's probability of default (PD) move only the declared way? A check, and partial dependence.

The model is monotone by construction (`fedcredit.core.model`); this check
is the evidence a model-risk validator asks for, and it catches a model built
without the constraints (`monotone-constraints = false`) or by other code.
For every constraint, the PD is computed as the feature moves over its grid:
a dense grid over the numeric feature's range (the federation's mean +-
`CHECK_SD` standard deviations, within the schema's bounds: wider than the
range reasons compare against) or every level of an ordered category, once
with the other features at typical values (numeric: the federation's mean;
categorical: the most common value, of the rows or of the banks' pooled
counts) and once for each real row, the row's other values kept. A row violates the constraint when its PD moves
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


def typical_row(
    refs: References, rows: pd.DataFrame, counts: Mapping[str, Mapping[str, int]] | None = None
) -> pd.DataFrame:
    """One row of typical values: numeric at the federation's mean, categorical at the most common known value.

    Most common in `counts` (column -> {category: loans}, e.g. the banks'
    pooled profile) where it has the column, else among `rows`: a
    coordinator without loan rows still has a typical applicant. A column
    with neither takes its middle known level.
    """
    row: dict[str, Any] = dict(refs.numeric)
    for col, levels in refs.categorical.items():
        tally = {v: n for v, n in (counts or {}).get(col, {}).items() if v in levels and n > 0}
        if tally:
            row[col] = max(levels, key=lambda v: (tally.get(v, 0), -levels.index(v)))  # ties: the earlier level
            continue
        known = rows[col][rows[col].isin(levels)] if col in rows else pd.Series(dtype=object)
        row[col] = str(known.value_counts().idxmax()) if len(known) else (levels[len(levels) // 2] if levels else "")
    return pd.DataFrame([row])


BATCH_ROWS = 250_000  # scored variants per model call: bounds memory for many rows


def _curves(model: Any, rows: pd.DataFrame, grids: Mapping[str, list[Any]]) -> dict[str, np.ndarray]:
    """Per column of `grids`: the PD of every row (columns) at every grid value (rows of the result).

    The rows' model inputs are repeated with each column set to each of its
    values and scored in few model calls (at most `BATCH_ROWS` variants
    each): far cheaper than a frame per value, and a bank runs this in every run.
    """
    from fedcredit.core import model as mdl

    n, grids = len(rows), {col: values for col, values in grids.items() if values}
    if not n:
        return {col: np.zeros((len(values), 0)) for col, values in grids.items()}
    base = {name: t.numpy() for name, t in mdl.to_inputs(rows, model).items()}
    out: dict[str, np.ndarray] = {}
    batch: dict[str, list[Any]] = {}
    for col, values in grids.items():
        if batch and (sum(map(len, batch.values())) + len(values)) * n > BATCH_ROWS:
            out.update(_score_batch(model, rows, base, batch))
            batch = {}
        batch[col] = values
    if batch:
        out.update(_score_batch(model, rows, base, batch))
    return out


def _score_batch(
    model: Any, rows: pd.DataFrame, base: Mapping[str, np.ndarray], grids: Mapping[str, list[Any]]
) -> dict[str, np.ndarray]:
    import tensorflow as tf

    from fedcredit.core import model as mdl

    n, total = len(rows), sum(len(values) for values in grids.values())
    inputs = {name: np.tile(a, (total, 1)) for name, a in base.items()}
    at = 0
    for col, values in grids.items():
        # The grid values converted as `to_inputs` converts a column (text, or float32).
        converted = mdl.to_inputs(rows.iloc[[0] * len(values)].assign(**{col: values}), model)[col].numpy()
        inputs[col][at * n : (at + len(values)) * n] = np.repeat(converted, n, axis=0)
        at += len(values)
    scores = mdl.predict(model, {name: tf.constant(a) for name, a in inputs.items()})
    out, at = {}, 0
    for col, values in grids.items():
        out[col] = scores[at * n : (at + len(values)) * n].reshape(len(values), n)
        at += len(values)
    return out


def check_monotone(
    model: Any,
    rows: pd.DataFrame,
    schema: Schema | None = None,
    refs: References | None = None,
    points: int = CHECK_POINTS,
    tolerance: float = TOLERANCE,
    typical: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The check's table: one line per constraint (feature, direction, grid points, rows checked, violations, largest).

    `rows` are real applicants or loans (validated feature columns); the
    typical row (`typical`, default `typical_row(refs, rows)`; an empty
    frame checks `rows` alone) is checked first, so rows_checked is
    len(rows) + 1. The
    constraints are the schema's when it is given (so a model that does not
    hold them is checked against them, ordered categories in the schema's
    order), else the model's own. `largest_violation` is in PD points (0: none).
    """
    refs = refs or references(model, schema)
    directions = schema.directions if schema is not None else refs.direction
    orders = schema.orders if schema is not None else {}
    typical = typical_row(refs, rows) if typical is None else typical
    frame = pd.concat([typical[refs.features], rows[refs.features]], ignore_index=True)
    grids: dict[str, list[Any]] = {}
    for col in directions:
        if col in orders:
            grids[col] = list(orders[col])
        elif col in refs.categorical:
            grids[col] = list(refs.categorical[col])
        else:
            grids[col] = refs.grid(col, points, CHECK_SD)
    curves = _curves(model, frame, {col: values for col, values in grids.items() if len(values) > 1})
    lines = []
    for col, sign in directions.items():
        values = grids[col]
        worst = np.zeros(len(frame))  # per row: its largest PD move against the direction
        if col in curves and len(frame):
            worst = (-sign * np.diff(curves[col], axis=0)).max(axis=0)
        lines.append(
            {
                "feature": col,
                "direction": DIRECTION_NAMES[sign],
                "grid_points": len(values),
                "rows_checked": len(frame),
                "violations": int((worst > tolerance).sum()),
                "largest_violation": float(max(0.0, worst.max(initial=0.0))),  # 0.0, never -0.0
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
    grids = {col: refs.grid(col, points) for col in chosen}
    scored = _curves(model, frame, grids)
    curves = {col: (grids[col], scored[col].mean(axis=1)) for col in scored}
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
