"""The model-risk data section from profile.json: each bank's data, and how stable each feature is across banks.

A validator asks of every bank's data: how many loans, how many defaults,
how much is missing, how much falls outside the vocabulary, and whether a
feature is distributed at one bank as at the others (a model trained mostly
on the others may not fit it). profile.json (`fedcredit.federation.profiles`)
holds each bank's counts over global bins; these functions read them.

CSI (characteristic stability index) is the PSI formula of
`fedcredit.risk.curves` applied to a feature: one bank's shares against the
shares of all other banks' rows summed, over bands. Numeric bands merge
adjacent z bins into about `N_BANDS` bands of equal pooled mass (the pooled
counts are all banks' together, so every bank is measured on the same
bands), with missing values as one more band; a categorical feature's bands
are its vocabulary slots, the unknown slot and missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedcredit.core.binned import psi_of_bands, psi_reading

N_BANDS = 10
POOLED = "(pooled)"  # the data section's row of all banks together
SPLITS = ("train", "validation")


def z_bands(pooled_counts: Sequence[float], n_bands: int = N_BANDS) -> list[list[int]]:
    """Adjacent z bins grouped into at most `n_bands` bands of about equal pooled mass.

    Each bin goes to the band its middle row falls in (by cumulative share),
    so the bands stay contiguous and a bin holding much of the mass is a band
    of its own; empty bins join their neighbours. Fewer bands when the mass
    is lumpy.
    """
    counts = np.asarray(pooled_counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return [list(range(counts.size))]
    middle = (np.cumsum(counts) - counts / 2) / total
    band = np.minimum((middle * n_bands).astype(int), n_bands - 1)
    groups: dict[int, list[int]] = {}
    for i, b in enumerate(band):
        groups.setdefault(int(b), []).append(i)
    return list(groups.values())


def _band_counts(feature: Mapping[str, Any], bands: list[list[int]] | None) -> np.ndarray:
    """A feature's counts per band (categorical: per slot), then its missing count."""
    counts = np.asarray(feature["counts"], dtype=np.float64)
    banded = [counts[group].sum() for group in bands] if bands is not None else list(counts)
    return np.asarray([*banded, float(feature["missing"])])


def feature_stability(profile: Mapping[str, Any], split: str = "train", n_bands: int = N_BANDS) -> pd.DataFrame:
    """CSI of every bank's feature distribution against all other banks' rows, with its bootstrap interval.

    Columns bank, feature, csi, low, high (`fedcredit.core.binned.psi_of_bands`), reading.
    Empty when the profile has no per-bank counts (secure mode); a bank with
    no other bank to compare with gets NaN ("n/a").
    """
    banks = profile.get("banks") or {}
    out = []
    for kind in ("numeric", "categorical"):
        for col in profile["features"][kind]:
            features = {name: bank[split][kind][col] for name, bank in banks.items()}
            bands = None
            if kind == "numeric" and features:
                bands = z_bands(np.sum([f["counts"] for f in features.values()], axis=0), n_bands)
            counts = {name: _band_counts(f, bands) for name, f in features.items()}
            total = np.sum(list(counts.values()), axis=0) if counts else None
            for name, mine in counts.items():
                csi = psi_of_bands(mine, total - mine)
                out.append(
                    {
                        "bank": name,
                        "feature": col,
                        "csi": csi.value,
                        "low": csi.low,
                        "high": csi.high,
                        "reading": psi_reading(csi.value),
                    }
                )
    return pd.DataFrame(out, columns=["bank", "feature", "csi", "low", "high", "reading"])


def data_section(profile: Mapping[str, Any]) -> pd.DataFrame:
    """Per bank (and pooled) and split: rows, bads, default rate, each feature's missing rate, unknown shares.

    Columns `missing:<feature>` (share of rows without a value) and
    `unknown:<column>` (share of rows whose category is outside the
    vocabulary: the model scores them as unknown).
    """
    entries = list((profile.get("banks") or {}).items())
    if profile.get("pooled"):
        entries.append((POOLED, profile["pooled"]))
    out = []
    for name, bank in entries:
        for split in SPLITS:
            part = bank[split]
            rows = int(part["rows"])

            def share(count: float, rows: int = rows) -> float:
                return count / rows if rows else math.nan

            row: dict[str, Any] = {
                "bank": name,
                "split": split,
                "rows": rows,
                "bads": int(part["bads"]),
                "default_rate": share(part["bads"]),
            }
            for kind in ("numeric", "categorical"):
                row.update({f"missing:{col}": share(f["missing"]) for col, f in part[kind].items()})
            row.update({f"unknown:{col}": share(f["counts"][-1]) for col, f in part["categorical"].items()})
            out.append(row)
    return pd.DataFrame(out)
