"""Reason codes: which of an applicant's features raised the probability of default (PD) most.

Rule: replace one feature at a time by its reference value and rescore; the
feature's impact is PD(applicant) - PD(applicant with that feature at its
reference). The features with the largest positive impacts are the reasons,
largest first; a feature that does not raise the PD is never a reason, so
an applicant may have fewer than three.

* Numeric reference: the federation's global mean, read from the model's
  `standardise` Normalization layer (also what a missing value is imputed
  with, so a missing value is never a reason).
* Categorical reference: the middle category for this applicant. Every
  known category (the model's vocabulary) is tried in turn; ranked by the
  PD it gives, the median one is the reference (the lower of the two middle
  ones for an even count). It is the categorical counterpart of the mean
  (a middle-of-the-road value, not the best possible one, which would make
  almost every category a reason) and needs nothing but the model: the
  model carries no category frequencies, so the most common category
  cannot be known, and the unknown slot is trained on almost no rows. A
  missing or unknown category can be a reason.

A row whose PD is not finite (a value so large that it overflows inside the
model) gets no reasons: every impact compared with NaN is false.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

TOP_REASONS = 3
CHUNK_ROWS = 1000  # applicants explained per batch: bounds memory (each is rescored ~70 times)
MIN_IMPACT = 1e-6  # PD changes below this are float noise (and the output's precision), not reasons


@dataclass(frozen=True)
class References:
    """Reference values of the model's features (see the module docstring)."""

    numeric: dict[str, float]  # column -> global mean
    categorical: dict[str, list[str]]  # column -> the model's known categories
    spread: dict[str, float] = field(default_factory=dict)  # column -> global standard deviation


@dataclass(frozen=True)
class Reason:
    feature: str
    value: Any  # the applicant's value (None: missing)
    reference: Any
    impact: float  # PD points the feature's value adds over its reference


def references(model: Any) -> References:
    """Global means (and standard deviations) from the Normalization layer, vocabularies from the lookup layers."""
    names = {t.name: t.dtype for t in model.inputs}
    numeric_cols = [n for n, dtype in names.items() if dtype != "string"]
    if numeric_cols:
        try:
            concat = model.get_layer("numeric")
            order = [t.name for t in concat.input]
        except ValueError:  # one numeric column: no Concatenate layer
            order = numeric_cols
        layer = model.get_layer("standardise")
        mean = np.asarray(layer.mean, dtype=np.float64).ravel()
        variance = np.asarray(layer.variance, dtype=np.float64).ravel()
        numeric = {col: float(m) for col, m in zip(order, mean, strict=True)}
        spread = {col: float(np.sqrt(max(v, 0.0))) for col, v in zip(order, variance, strict=True)}
    else:
        numeric, spread = {}, {}
    categorical = {}
    for col, dtype in names.items():
        if dtype == "string":
            vocab = [str(v) for v in model.get_layer(f"onehot_{col}").get_vocabulary()[1:]]  # [0] is the unknown slot
            categorical[col] = [] if vocab == ["<none>"] else vocab  # "<none>": every category was rare
    return References(numeric, categorical, spread)


def _explain_chunk(model: Any, frame: pd.DataFrame, refs: References) -> tuple[np.ndarray, list[list[Reason]]]:
    from fedcredit.core import model as mdl

    n = len(frame)
    variants = [frame]
    for col, mean in refs.numeric.items():
        variants.append(frame.assign(**{col: mean}))
    for col, vocab in refs.categorical.items():
        variants += [frame.assign(**{col: v}) for v in vocab]
    scores = mdl.score(model, pd.concat(variants, ignore_index=True)).reshape(len(variants), n)
    base, rows = scores[0], np.arange(n)
    impacts: dict[str, np.ndarray] = {}
    ref_values: dict[str, np.ndarray] = {}
    at = 1
    for col, mean in refs.numeric.items():
        impacts[col] = base - scores[at]
        ref_values[col] = np.full(n, mean)
        at += 1
    for col, vocab in refs.categorical.items():
        if not vocab:
            continue
        block = scores[at : at + len(vocab)]
        middle = np.argsort(block, axis=0, kind="stable")[(len(vocab) - 1) // 2]
        impacts[col] = base - block[middle, rows]
        ref_values[col] = np.asarray(vocab, dtype=object)[middle]
        at += len(vocab)
    reasons = []
    for i in range(n):
        ranked = sorted(((impacts[c][i], c) for c in impacts if impacts[c][i] > MIN_IMPACT), reverse=True)
        reasons.append(
            [Reason(c, _value(frame[c].iloc[i]), _plain(ref_values[c][i]), float(d)) for d, c in ranked[:TOP_REASONS]]
        )
    return base, reasons


def _value(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return None if v == "" else str(v)


def _plain(v: Any) -> Any:
    return round(float(v), 6) if isinstance(v, (float, np.floating)) else str(v)


def explain(model: Any, frame: pd.DataFrame, refs: References | None = None) -> tuple[np.ndarray, list[list[Reason]]]:
    """(PD of each row, its reason codes) for a validated frame of the model's features."""
    refs = refs or references(model)
    scores, reasons = [], []
    for start in range(0, len(frame), CHUNK_ROWS):
        s, r = _explain_chunk(model, frame.iloc[start : start + CHUNK_ROWS].reset_index(drop=True), refs)
        scores.append(s)
        reasons += r
    return (np.concatenate(scores) if scores else np.empty(0)), reasons
