"""Sufficient statistics for federated preprocessing.

Each bank reports, per numeric column, count, sum and sum of squares of its
non-missing values, and per categorical column how often each category
occurs. Merged across banks these give exactly the pooled means, variances
and vocabularies, without any row leaving a bank. Categories seen in fewer
than `min_count` rows overall are left out of the vocabulary (they score as
unknown), so a rare value cannot single out a borrower.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcredit.core.schema import Schema


@dataclass
class Stats:
    numeric: dict[str, tuple[int, float, float]]  # column -> (count, sum, sum of squares)
    categorical: dict[str, dict[str, int]]  # column -> category -> count
    rows: int


def compute_stats(frame: pd.DataFrame, schema: Schema) -> Stats:
    numeric = {}
    for col in schema.numeric:
        v = frame[col].dropna().to_numpy(dtype=np.float64)
        numeric[col] = (int(v.size), float(v.sum()), float(np.square(v).sum()))
    categorical = {
        col: {str(k): int(n) for k, n in frame[col].value_counts().items() if k != ""} for col in schema.categorical
    }
    return Stats(numeric, categorical, len(frame))


def merge_stats(parts: list[Stats]) -> Stats:
    if not parts:
        raise ValueError("no statistics to merge: no bank answered the statistics query")
    numeric = {}
    for col in parts[0].numeric:
        arr = np.array([p.numeric[col] for p in parts], dtype=np.float64).sum(axis=0)
        numeric[col] = (int(arr[0]), float(arr[1]), float(arr[2]))
    categorical = {}
    for col in parts[0].categorical:
        total: Counter[str] = Counter()
        for p in parts:
            total.update(p.categorical[col])
        categorical[col] = dict(total)
    return Stats(numeric, categorical, sum(p.rows for p in parts))


@dataclass(frozen=True)
class Preprocessing:
    """What every bank needs to build the identical model: means, variances, vocabularies."""

    mean: dict[str, float]
    variance: dict[str, float]
    vocabulary: dict[str, list[str]]

    def to_json(self) -> str:
        return json.dumps({"mean": self.mean, "variance": self.variance, "vocabulary": self.vocabulary}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        d = json.loads(text)
        return cls(d["mean"], d["variance"], d["vocabulary"])


def preprocessing_from_stats(stats: Stats, min_count: int) -> Preprocessing:
    mean, variance = {}, {}
    for col, (n, s, ss) in stats.numeric.items():
        if n == 0:
            raise ValueError(f"column '{col}' has no values at any bank: it cannot be a numeric feature")
        m = s / n
        mean[col] = m
        variance[col] = max(ss / n - m * m, 0.0)
    vocabulary = {
        col: sorted(k for k, c in counts.items() if c >= min_count) for col, counts in stats.categorical.items()
    }
    return Preprocessing(mean, variance, vocabulary)
