"""Which group of each protected attribute a loan row belongs to: the fair-lending analysis's only input.

Pure functions of a frame and the schema's `[protected.<column>]` declarations
(`fedcredit.core.schema.Protected`); nothing here reads files, builds models
or sends anything. A bank computes the group index of its own rows; only
counts (or sums) per group may ever leave it, never a row's group or value.

How a cell is matched, the same for a bank's CSV and the embedded data sets
(which are read as text too):

- value maps (`groups = { "1" = "male" }`): the cell's text with surrounding
  spaces stripped must equal a declared value exactly. No numeric reading:
  "1.0" or "01" is not "1" (declare them too if a bank writes them so).
- bands (`bands = [25, 40, 62]`): the cell read as a number (as a numeric
  feature is: "24.5", "1e2"); band i holds edge[i-1] <= value < edge[i].
- a missing cell (empty or only spaces), an undeclared value, and for bands
  a cell that is not a finite number, fall into `undocumented`, the last group.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedcredit.core.schema import UNDOCUMENTED, Protected, Schema

__all__ = ["UNDOCUMENTED", "attribute_index", "group_counts", "group_index", "group_names"]


def group_names(schema: Schema) -> dict[str, tuple[str, ...]]:
    """Protected column -> its group names in their fixed order, `undocumented` last (in schema order)."""
    return {p.column: p.group_names for p in schema.protected}


def _text(values: pd.Series) -> pd.Series:
    """Cells as stripped text, missing ones (NaN, None, empty, only spaces) as None."""
    text = values.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip())
    return text.mask(text == "")


def attribute_index(values: pd.Series, attribute: Protected) -> np.ndarray:
    """Each cell's group index into `attribute.group_names` (int64; the last index is `undocumented`)."""
    undocumented = len(attribute.group_names) - 1
    text = _text(values)
    if attribute.groups:
        names = attribute.names
        code = {value: names.index(name) for value, name in attribute.groups}
        return text.map(code).fillna(undocumented).to_numpy(dtype=np.int64)
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    index = np.searchsorted(np.asarray(attribute.bands, dtype=np.float64), numbers, side="right").astype(np.int64)
    index[~np.isfinite(numbers)] = undocumented
    return index


def group_index(frame: pd.DataFrame, schema: Schema) -> dict[str, np.ndarray]:
    """Protected column -> each row's group index into `group_names(schema)[column]`.

    `frame` carries the protected columns as loading keeps them
    (`fedcredit.core.loading`, `fedcredit.core.banks`: stripped text).
    """
    missing = [p.column for p in schema.protected if p.column not in frame.columns]
    if missing:
        raise KeyError(
            f"protected columns {missing} are not in the frame: load it with the schema that declares them "
            "(fedcredit.core.loading keeps them beside the features)"
        )
    return {p.column: attribute_index(frame[p.column], p) for p in schema.protected}


def group_counts(frame: pd.DataFrame, schema: Schema) -> dict[str, dict[str, int]]:
    """Protected column -> {group name: rows}, every group listed (zero counts too), `undocumented` last."""
    names = group_names(schema)
    return {
        col: dict(zip(names[col], (int(n) for n in np.bincount(index, minlength=len(names[col])))))
        for col, index in group_index(frame, schema).items()
    }
