"""A bank's feature profile: how many of its rows fall in each global bin, for the model-risk data section.

A model-risk review wants, per bank, its rows, defaults and missing values, and
how far each feature's distribution at one bank is from the other banks'
(CSI, `fedcredit.risk.stability`). Counts over bins every bank agrees on
answer both without a value or a row leaving the bank, and they add up
across banks, so the same counts work summed securely.

Numeric features are binned on z = (x - global mean) / global standard
deviation, the value the model's Normalization layer feeds the network
(`SD_FLOOR` as Keras floors the deviation), over one fixed grid `Z_EDGES`:
0.25 standard deviations wide from -3 to 3 plus a tail on each side, 26 bins,
fine enough for the coordinator to merge neighbouring bins into about ten
bands of equal pooled mass afterwards. A value on an edge counts in the bin
above it. Categorical features count per vocabulary value (the global
vocabulary, in its order), then one unknown slot for any other value (as the
model's lookup does). Missing values are counted apart in both.

One split's profile is JSON-shaped, as profile.json keeps it::

    {"rows": n, "bads": k,
     "numeric": {col: {"counts": [26 bins], "missing": m}},
     "categorical": {col: {"counts": [one per vocabulary value, then unknown], "missing": m}}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fedcredit.core.schema import Schema
from fedcredit.core.stats import Preprocessing

# Inner edges of the z grid: -3, -2.75, ..., 3 (25 edges, 26 bins with the two tails).
Z_EDGES: tuple[float, ...] = tuple(float(e) for e in np.linspace(-3.0, 3.0, 25))
NUMERIC_BINS = len(Z_EDGES) + 1
UNKNOWN = "(unknown)"  # the name of the slot after a vocabulary's values in profile.json
SD_FLOOR = 1e-7  # keras.backend.epsilon(): Normalization divides by max(sqrt(variance), this)

SplitProfile = dict[str, Any]  # one split's counts, shaped as in the module docstring


@dataclass(frozen=True)
class ProfileLayout:
    """Which features a profile counts and how many slots each has: fixed by the schema and the preprocessing."""

    numeric: tuple[str, ...]
    categorical: dict[str, tuple[str, ...]]  # column -> its vocabulary, in order (the unknown slot follows)
    mean: dict[str, float]
    variance: dict[str, float]

    def slots(self, col: str) -> int:
        """Counts per feature (without the missing count)."""
        return NUMERIC_BINS if col in self.mean else len(self.categorical[col]) + 1

    def to_json(self) -> str:
        """The order of a secure-mode vector: numeric columns, then each categorical column with its vocabulary."""
        return json.dumps(
            {"numeric": list(self.numeric), "categorical": {c: list(v) for c, v in self.categorical.items()}}
        )

    def names(self) -> dict[str, Any]:
        """The features as profile.json names them: numeric columns, and each categorical column's slots."""
        return {
            "numeric": list(self.numeric),
            "categorical": {c: [*vocab, UNKNOWN] for c, vocab in self.categorical.items()},
        }


def layout_of(schema: Schema, prep: Preprocessing, max_categories: int | None = None) -> ProfileLayout:
    """The layout of this schema under this preprocessing; ValueError if they do not fit each other.

    `max_categories`: a bank's bound on the vocabulary it is asked to count (its reply grows with it).
    """
    missing = [c for c in schema.numeric if c not in prep.mean or c not in prep.variance]
    missing += [c for c in schema.categorical if c not in prep.vocabulary]
    if missing:
        raise ValueError(f"the preprocessing has no entry for the schema's columns {missing}")
    for col in schema.categorical:
        if max_categories is not None and len(prep.vocabulary[col]) > max_categories:
            raise ValueError(
                f"the vocabulary of '{col}' has {len(prep.vocabulary[col])} values, more than max-categories="
                f"{max_categories}"
            )
    return ProfileLayout(
        numeric=tuple(schema.numeric),
        categorical={c: tuple(str(v) for v in prep.vocabulary[c]) for c in schema.categorical},
        mean={c: float(prep.mean[c]) for c in schema.numeric},
        variance={c: float(prep.variance[c]) for c in schema.numeric},
    )


def standard_deviation(variance: float) -> float:
    return max(float(np.sqrt(max(variance, 0.0))), SD_FLOOR)


def z_bins(values: np.ndarray, mean: float, variance: float) -> np.ndarray:
    """The bin (0..NUMERIC_BINS-1) of each finite value on the z grid."""
    z = (np.asarray(values, dtype=np.float64) - mean) / standard_deviation(variance)
    return np.searchsorted(np.asarray(Z_EDGES), z, side="right")


def numeric_counts(values: pd.Series, mean: float, variance: float) -> dict[str, Any]:
    present = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    missing = ~np.isfinite(present)
    counts = np.bincount(z_bins(present[~missing], mean, variance), minlength=NUMERIC_BINS)
    return {"counts": [int(c) for c in counts], "missing": int(missing.sum())}


def categorical_counts(values: pd.Series, vocabulary: Iterable[str]) -> dict[str, Any]:
    vocab = list(vocabulary)
    missing = (values.isna() | values.astype(str).eq("")).to_numpy()  # as compute_stats: "" is no category
    present = values[~missing].astype(str)
    index = {v: i for i, v in enumerate(vocab)}
    slots = present.map(index).fillna(len(vocab)).astype(np.int64).to_numpy()
    counts = np.bincount(slots, minlength=len(vocab) + 1)
    return {"counts": [int(c) for c in counts], "missing": int(missing.sum())}


def split_profile(frame: pd.DataFrame, target: str, layout: ProfileLayout) -> SplitProfile:
    """One split's rows, defaults (target 1) and counts per feature."""
    return {
        "rows": len(frame),
        "bads": int(pd.to_numeric(frame[target]).sum()),
        "numeric": {c: numeric_counts(frame[c], layout.mean[c], layout.variance[c]) for c in layout.numeric},
        "categorical": {c: categorical_counts(frame[c], v) for c, v in layout.categorical.items()},
    }


def add_profiles(parts: Iterable[Mapping[str, Any]]) -> SplitProfile | None:
    """The sum of split profiles of one layout (None for none): what the pooled rows would give."""
    parts = list(parts)
    if not parts:
        return None
    first = parts[0]

    def total(kind: str, col: str) -> dict[str, Any]:
        counts = np.sum([p[kind][col]["counts"] for p in parts], axis=0)
        return {"counts": [int(c) for c in counts], "missing": sum(int(p[kind][col]["missing"]) for p in parts)}

    return {
        "rows": sum(int(p["rows"]) for p in parts),
        "bads": sum(int(p["bads"]) for p in parts),
        **{kind: {col: total(kind, col) for col in first[kind]} for kind in ("numeric", "categorical")},
    }
