"""Shared fixtures: slices of the embedded data set as text CSVs, and small helpers."""

from __future__ import annotations

import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pandas as pd
import pytest

from fedcredit.core.loading import builtin_csv_text


@pytest.fixture(scope="session")
def raw_frame() -> pd.DataFrame:
    """The embedded data set, every column as text (as a bank's CSV reads)."""
    return pd.read_csv(io.StringIO(builtin_csv_text()), dtype=str)


@pytest.fixture()
def write_csv(tmp_path):
    """Write a frame (or raw text) to a CSV file and return its path."""

    def _write(content: pd.DataFrame | str, name: str = "bank.csv"):
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            content.to_csv(path, index=False)
        return path

    return _write
