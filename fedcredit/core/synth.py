"""Synthetic bank files of any size, for benchmarks and tests: never real borrowers.

A real loan book has millions of rows; the embedded data sets have a few
thousand. `synthesise` resamples an embedded set's rows (with replacement)
and perturbs them, so a file of N rows has the embedded set's columns,
categories, missing cells and default rate, but no row is a copy of a real
loan's numbers:

- a numeric cell is multiplied by (1 + noise), noise ~ N(0, `noise`),
  rounded to the column's decimals, kept non-negative where the column is,
  and clipped to the schema's `[bounds]`;
- a categorical cell is replaced, with probability `noise`, by the value of
  another resampled row (so category frequencies are kept);
- labels, missing cells and the partition column are kept as drawn.

Rows are written in chunks (`chunk_rows`), so 5M rows need one chunk in
memory, not 5M. The same seed gives the same file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from fedcredit.core.loading import DATA_SETS, builtin_csv_text
from fedcredit.core.schema import Schema, load_schema

CHUNK_ROWS = 200_000


def _schema(data_set: str) -> Schema:
    """The embedded data set's own schema (fedcredit/data/NAME.toml)."""
    from importlib import resources

    return load_schema(str(resources.files("fedcredit") / "data" / f"{data_set}.toml"))


def _decimals(text: pd.Series) -> int:
    """Digits after the point the column is written with (0 for integers), so noisy cells look like the real ones."""
    parts = text.dropna().str.partition(".")[2]
    return int(parts.str.len().max()) if len(parts) else 0


def synthesise(
    out: str | Path,
    rows: int,
    data_set: str = "lending_club",
    seed: int = 0,
    noise: float = 0.05,
    chunk_rows: int = CHUNK_ROWS,
) -> Path:
    """Write `rows` synthetic loans resampled from an embedded data set to `out` (a CSV); returns the path."""
    if data_set not in DATA_SETS:
        raise ValueError(f"no embedded data set {data_set!r}: choose one of {list(DATA_SETS)}")
    if rows < 1:
        raise ValueError(f"rows must be at least 1, not {rows}")
    schema = _schema(data_set)
    base = pd.read_csv(io.StringIO(builtin_csv_text(data_set)), dtype=str, keep_default_na=False)
    base = base.replace("", None)
    numeric = {c: pd.to_numeric(base[c]).to_numpy(dtype=float) for c in schema.numeric if c in base.columns}
    decimals = {c: _decimals(base[c]) for c in numeric}
    nonneg = {c: bool(np.nanmin(v) >= 0) for c, v in numeric.items()}
    bounds = {c: b for c, b in dict(schema.bounds).items() if c in numeric}
    categorical = [c for c in schema.categorical if c in base.columns]
    rng = np.random.default_rng(seed)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        while written < rows:
            n = min(chunk_rows, rows - written)
            pick = rng.integers(0, len(base), n)
            chunk = base.iloc[pick].reset_index(drop=True)
            for col, values in numeric.items():
                x = values[pick] * (1.0 + rng.normal(0.0, noise, n))
                if nonneg[col]:
                    x = np.abs(x)
                if col in bounds:
                    x = np.clip(x, *bounds[col])
                x = np.round(x, decimals[col])
                text = pd.Series(np.char.mod(f"%.{decimals[col]}f", x))
                chunk[col] = text.where(~np.isnan(x), None)
            for col in categorical:
                swap = rng.random(n) < noise
                other = base[col].to_numpy()[rng.integers(0, len(base), n)]
                chunk[col] = np.where(swap, other, chunk[col].to_numpy())
            chunk.to_csv(handle, index=False, header=written == 0, lineterminator="\n")
            written += n
    return path
