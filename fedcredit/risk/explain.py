"""Reasons fit for a notice: which of an applicant's features raise the probability of default (PD).

Rule: a feature is a reason when the applicant's value gives a higher PD than
the feature's lowest-risk value would, all other features kept; the reasons
are the (at most `TOP_REASONS`) largest such increases, largest first. Each
reason carries the schema's plain statement for the feature (`[reasons]`,
e.g. "Interest rate on the loan is high"), the applicant's value, the
lowest-risk value it was compared with and the increase (impact).

Lowest-risk value of a feature:

* Monotone feature (the model holds a direction, `fedcredit.core.model`): the
  end of its range in the low-risk direction, the same for every applicant.
  The range is what the model knows of the federation's values, its
  Normalization layer's mean +- `RANGE_SD` standard deviations, clipped to the
  schema's `[bounds]` (so the lowest-risk number of inquiries is 0, never a
  negative count). An ordered category's end is its first (or last) level.
  A value at or beyond that end is never a reason: the model cannot give it a
  higher PD than the end (monotone by construction).
* Other numeric feature: the value of a `GRID_POINTS` grid over its range that
  gives this applicant the lowest PD; other categorical feature: the known
  category that does.

Either way a feature at its lowest-risk value is never a reason (its impact is
0), and a missing value or a category the model does not know (the unknown
slot, trained on almost no rows) is never one either: the applicant did not
state it, which a notice cannot hold against them. Ties between equal
impacts (to the output's 6 decimals) go to the schema's feature order, so the
same applicant always gets the same reasons. A row whose PD is not finite (a
value so large that it overflows inside the model) gets no reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedcredit.core.schema import default_reason_text

if TYPE_CHECKING:
    from fedcredit.core.schema import Schema

TOP_REASONS = 4
CHUNK_ROWS = 250  # applicants explained per batch: bounds memory (each is rescored ~90 times)
MIN_IMPACT = 1e-6  # PD changes below this are float noise (and the output's precision), not reasons
# The federation's known range of a numeric feature: mean +- RANGE_SD standard deviations, within its bounds.
RANGE_SD = 2.0
GRID_POINTS = 21  # values tried over the range of a numeric feature without a direction


@dataclass(frozen=True)
class References:
    """What the model knows of each feature, for reasons and the monotonicity check (module docstring)."""

    numeric: dict[str, float]  # column -> global mean
    categorical: dict[str, list[str]]  # column -> the model's known categories (ordered columns: lowest first)
    spread: dict[str, float] = field(default_factory=dict)  # column -> global standard deviation
    direction: dict[str, int] = field(default_factory=dict)  # feature -> +1 / -1: the model's monotone constraints
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)  # numeric column -> the schema's bounds
    texts: dict[str, str] = field(default_factory=dict)  # feature -> the statement a notice prints

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def text(self, feature: str) -> str:
        return self.texts.get(feature) or default_reason_text(feature, self.direction.get(feature))

    def span(self, col: str, sd: float = RANGE_SD) -> tuple[float, float]:
        """A numeric column's known range: its mean +- `sd` standard deviations, within its bounds."""
        lo, hi = self.bounds.get(col, (-math.inf, math.inf))
        mean, spread = self.numeric[col], self.spread.get(col, 0.0)
        return float(min(max(mean - sd * spread, lo), hi)), float(max(min(mean + sd * spread, hi), lo))

    def grid(self, col: str, points: int = GRID_POINTS, sd: float = RANGE_SD) -> list[Any]:
        """A numeric feature's range on `points` values, an ordered category's levels in order, or the categories."""
        if col in self.categorical:
            return list(self.categorical[col])
        lo, hi = self.span(col, sd)
        return sorted({float(v) for v in np.linspace(lo, hi, points)}) if hi > lo else [lo]

    def lowest_risk_candidates(self, col: str) -> list[Any]:
        """The values a feature's lowest-risk value is chosen from: its low-risk end, if it has a direction."""
        values = self.grid(col)
        sign = self.direction.get(col)
        if not sign or not values:
            return values
        return [values[0] if sign > 0 else values[-1]]


def references(model: Any, schema: Schema | None = None) -> References:
    """Means, ranges and directions from the model's own layers; bounds and reason texts from the schema.

    A reason text that claims a direction ("... is high") is used only when
    the model holds that direction: a model trained with
    `monotone-constraints = false` gets the plain "... raises the estimated risk".
    """
    from fedcredit.core import model as mdl

    names = {t.name: t.dtype for t in model.inputs}
    numeric: dict[str, float] = {}
    spread: dict[str, float] = {}
    if any(dtype != "string" for dtype in names.values()):
        layer = model.get_layer("standardise")
        mean = np.asarray(layer.mean, dtype=np.float64).ravel()
        variance = np.asarray(layer.variance, dtype=np.float64).ravel()
        for col, m, v in zip(mdl.numeric_columns(model), mean, variance, strict=True):
            numeric[col], spread[col] = float(m), float(np.sqrt(max(v, 0.0)))
    ordered = mdl.ordered_levels(model)
    categorical = {}
    for col, dtype in names.items():
        if dtype == "string":
            if col in ordered:
                categorical[col] = ordered[col]
                continue
            vocab = [str(v) for v in model.get_layer(f"onehot_{col}").get_vocabulary()[1:]]  # [0]: the unknown slot
            categorical[col] = [] if vocab == ["<none>"] else vocab  # "<none>": every category was rare
    direction = mdl.monotone_directions(model)
    bounds = {col: schema.bound(col) for col in numeric} if schema is not None else {}
    texts = {}
    if schema is not None:
        declared = schema.directions
        texts = {
            c: schema.reason_text(c)
            if declared.get(c) == direction.get(c)
            else default_reason_text(c, direction.get(c))
            for c in names
        }
    return References(numeric, categorical, spread, direction, bounds, texts)


@dataclass(frozen=True)
class Reason:
    feature: str
    value: Any  # the applicant's value
    reference: Any  # the feature's lowest-risk value it was compared with
    impact: float  # PD points the applicant's value adds over the lowest-risk value
    text: str = ""  # the statement a notice prints


def _known(frame: pd.DataFrame, col: str, refs: References) -> np.ndarray:
    """Rows whose value of `col` is stated and known to the model (never a reason otherwise)."""
    if col in refs.categorical:
        return frame[col].isin(refs.categorical[col]).to_numpy()
    return np.isfinite(pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64))


def _explain_chunk(model: Any, frame: pd.DataFrame, refs: References) -> tuple[np.ndarray, list[list[Reason]]]:
    from fedcredit.core import model as mdl

    n = len(frame)
    candidates = {col: refs.lowest_risk_candidates(col) for col in refs.features}
    candidates = {col: values for col, values in candidates.items() if values}
    variants = [frame] + [frame.assign(**{col: v}) for col, values in candidates.items() for v in values]
    scores = mdl.score(model, pd.concat(variants, ignore_index=True)).reshape(len(variants), n)
    base, rows = scores[0], np.arange(n)
    impacts: dict[str, np.ndarray] = {}
    lowest: dict[str, np.ndarray] = {}
    at = 1
    for col, values in candidates.items():
        block = scores[at : at + len(values)]
        at += len(values)
        best = np.argmin(block, axis=0)  # the first of equal minima: deterministic
        impact = np.round(base - block[best, rows], 6)
        impacts[col] = np.where(_known(frame, col, refs), impact, 0.0)
        lowest[col] = np.asarray(values, dtype=object)[best]
    order = {col: k for k, col in enumerate(refs.features)}
    reasons = []
    for i in range(n):
        found = [(-impacts[c][i], order[c], c) for c in impacts if impacts[c][i] > MIN_IMPACT]
        reasons.append(
            [
                Reason(c, _value(frame[c].iloc[i]), _plain(lowest[c][i]), float(-d), refs.text(c))
                for d, _, c in sorted(found)[:TOP_REASONS]
            ]
        )
    return base, reasons


def _value(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return None if v == "" else str(v)


def _plain(v: Any) -> Any:
    return round(float(v), 6) if isinstance(v, (float, np.floating)) else str(v)


def explain(model: Any, frame: pd.DataFrame, refs: References | None = None) -> tuple[np.ndarray, list[list[Reason]]]:
    """(PD of each row, its reasons) for a validated frame of the model's features."""
    refs = refs or references(model)
    scores, reasons = [], []
    for start in range(0, len(frame), CHUNK_ROWS):
        s, r = _explain_chunk(model, frame.iloc[start : start + CHUNK_ROWS].reset_index(drop=True), refs)
        scores.append(s)
        reasons += r
    return (np.concatenate(scores) if scores else np.empty(0)), reasons
