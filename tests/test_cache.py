"""The bank data cache (`fedcredit.core.cache`) and the synthetic bank files (`fedcredit.core.synth`)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import pytest

import fedcredit.core.cache as cache
from fedcredit.cli import main
from fedcredit.core.banks import load_bank
from fedcredit.core.config import parse_run_config
from fedcredit.core.loading import DataValidationError, load_csv
from fedcredit.core.partition import stratified_positions
from fedcredit.core.schema import load_schema
from fedcredit.core.synth import synthesise
from fedcredit.federation import client

SCHEMA = load_schema("")
CFG = parse_run_config({"partitioning": "iid", "local-epochs": 1, "hidden-units": "8"})


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same columns, dtypes and values (NaN equal to NaN), whatever holds the memory."""
    assert list(a.columns) == list(b.columns)
    for col in b.columns:
        assert a[col].dtype == b[col].dtype, col
        left, right = np.asarray(a[col]), np.asarray(b[col])
        if right.dtype.kind == "f":
            assert np.array_equal(left, right, equal_nan=True), col
        else:
            assert left.tolist() == right.tolist(), col


@pytest.fixture()
def bank(tmp_path, raw_frame):
    """A small bank file with missing cells, and its cache dir."""
    frame = raw_frame.sample(600, random_state=1).reset_index(drop=True)
    frame.loc[::7, "annual_inc"] = None
    frame.loc[::11, "emp_length"] = None
    path = tmp_path / "bank.csv"
    frame.to_csv(path, index=False)
    return path, tmp_path / "cache"


def builds(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = cache.build

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "build", counted)
    return calls


def test_cached_and_uncached_loading_give_identical_frames(bank, monkeypatch):
    path, where = bank
    monkeypatch.setattr(cache, "CHUNK_ROWS", 128)  # several chunks, one vocabulary
    monkeypatch.setattr(cache, "load_csv", lambda *a: pytest.fail("the chunked build fell back to load_csv"))
    first = cache.load_cached(path, SCHEMA, cache_dir=where)
    again = cache.load_cached(path, SCHEMA, cache_dir=where)
    expected = load_csv(path, SCHEMA)
    same(first, expected)
    same(again, expected)
    assert isinstance(again["annual_inc"].to_numpy(), np.ndarray)


def test_cache_is_used_then_rebuilt_when_the_csv_or_the_schema_changes(bank, monkeypatch, raw_frame, tmp_path):
    path, where = bank
    calls = builds(monkeypatch)
    cache.load_cached(path, SCHEMA, cache_dir=where)
    cache.load_cached(path, SCHEMA, cache_dir=where)
    assert len(calls) == 1
    raw_frame.sample(500, random_state=2).to_csv(path, index=False)
    same(cache.load_cached(path, SCHEMA, cache_dir=where), load_csv(path, SCHEMA))
    assert len(calls) == 2
    other = SCHEMA.without(("emp_length",))
    same(cache.load_cached(path, other, cache_dir=where), load_csv(path, other))
    assert len(calls) == 3


def halves(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return stratified_positions(labels, 0.3, 7)


def test_split_reading_gives_the_parts_of_the_frame_with_numbers_as_float32(bank, monkeypatch):
    path, where = bank
    monkeypatch.setattr(cache, "CHUNK_ROWS", 128)
    train, val = cache.load_cached_split(path, SCHEMA, halves, cache_dir=where)
    whole = load_csv(path, SCHEMA)
    rest, sample = halves(whole[SCHEMA.target].to_numpy())
    assert len(train) == len(rest) and len(val) == len(sample) and len(val) == round(0.3 * len(whole))
    for part, rows in ((train, rest), (val, sample)):
        expected = whole.iloc[rows].reset_index(drop=True)
        for col in SCHEMA.numeric:
            assert part[col].dtype == np.float32, col
            assert np.array_equal(part[col], expected[col].astype(np.float32), equal_nan=True), col
        for col in [*SCHEMA.categorical, SCHEMA.target]:
            assert part[col].dtype == expected[col].dtype and part[col].tolist() == expected[col].tolist(), col
    # Without a writable cache the CSV is cut the same way.
    for got, want in zip(cache.cut_frame(whole, SCHEMA.target, halves), (train, val), strict=True):
        same(got, want)


@pytest.mark.parametrize("reader", ["frame", "split"])
@pytest.mark.parametrize("damage", ["truncate", "corrupt", "manifest"])
def test_truncated_or_corrupt_cache_is_detected_and_rebuilt(bank, monkeypatch, caplog, damage, reader):
    path, where = bank
    cache.load_cached(path, SCHEMA, cache_dir=where)
    (directory,) = where.iterdir()
    column = directory / "int_rate.bin"
    data = column.read_bytes()
    if damage == "truncate":
        column.write_bytes(data[:-8])
    elif damage == "corrupt":
        column.write_bytes(data[:8] + bytes(8) + data[16:])
    else:
        (directory / cache.MANIFEST).write_text("{", encoding="utf-8")
    calls = builds(monkeypatch)
    with caplog.at_level(logging.WARNING):
        if reader == "frame":
            frames = [cache.load_cached(path, SCHEMA, cache_dir=where)]
            expected = [load_csv(path, SCHEMA)]
        else:
            frames = cache.load_cached_split(path, SCHEMA, halves, cache_dir=where)
            expected = cache.cut_frame(load_csv(path, SCHEMA), SCHEMA.target, halves)
    assert len(calls) == 1 and "rebuilding" in caplog.text
    assert str(where) not in caplog.text and str(path) not in caplog.text
    for got, want in zip(frames, expected, strict=True):
        same(got, want)


def test_unwritable_cache_dir_falls_back_to_the_csv(bank, caplog, tmp_path):
    path, _ = bank
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING):
        frame = cache.load_cached(path, SCHEMA, cache_dir=blocker / "cache")
    same(frame, load_csv(path, SCHEMA))
    assert "not written" in caplog.text and str(blocker) not in caplog.text


def test_bad_file_gives_the_usual_error_and_no_cache(raw_frame, tmp_path):
    path = tmp_path / "bank.csv"
    frame = raw_frame.head(300).copy()
    frame.loc[5, "int_rate"] = "12,5%"
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="int_rate") as err:
        cache.load_cached(path, SCHEMA, cache_dir=tmp_path / "cache")
    assert "12,5%" not in err.value.public_text() and "(lines 7)" in str(err.value)
    assert not any(p.name != ".build" and not p.name.startswith(".build") for p in (tmp_path / "cache").iterdir())


def test_deployed_bank_uses_the_cache_unless_off_and_replies_carry_none_of_it(bank, monkeypatch):
    path, where = bank
    calls = builds(monkeypatch)
    node = {"data-path": str(path), "bank-name": "acme", "cache-dir": str(where)}
    reply = client.statistics(CFG, node)
    assert len(calls) == 1 and any(where.iterdir())
    (directory,) = where.iterdir()
    text = repr(reply)
    assert str(where) not in text and directory.name not in text and "cache" not in text
    off = load_bank(CFG, {**node, "cache": "off", "bank-name": "off"})
    assert len(calls) == 1
    same(off.train, load_bank(CFG, node).train)
    with pytest.raises(ValueError, match="node config 'cache'"):
        load_bank(CFG, {**node, "cache": "maybe"})


def test_default_cache_dir_is_next_to_the_csv(bank):
    path, _ = bank
    cache.load_cached(path, SCHEMA)
    assert (path.parent / cache.DIR_NAME / cache.cache_key(cache._sha256(path), SCHEMA, cache.DEFAULT_LIMITS)).is_dir()


def test_synth_is_deterministic_and_valid(tmp_path, capsys):
    a = synthesise(tmp_path / "a.csv", 1500, seed=4, chunk_rows=400)
    b = synthesise(tmp_path / "b.csv", 1500, seed=4, chunk_rows=400)
    c = synthesise(tmp_path / "c.csv", 1500, seed=5)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert len(load_csv(a, SCHEMA)) == 1500
    assert main(["validate", str(a)]) == 0
    out = tmp_path / "t.csv"
    assert main(["synth", "--rows", "300", "--out", str(out), "--data-set", "taiwan_credit_card"]) == 0
    taiwan = os.path.join(os.path.dirname(cache.__file__), "..", "data", "taiwan_credit_card.toml")
    assert main(["validate", str(out), "--schema-path", taiwan]) == 0


@pytest.mark.parametrize("extra", ["1,2,3\n", "\n"])
def test_a_file_the_chunked_pass_cannot_read_exactly_is_decided_by_load_csv(raw_frame, tmp_path, monkeypatch, extra):
    """A ragged row (refused) or a blank line (skipped, lines shift) goes through `load_csv` whole."""
    monkeypatch.setattr(cache, "CHUNK_ROWS", 50)
    path = tmp_path / "bank.csv"
    text = raw_frame.head(200).to_csv(index=False, lineterminator="\n").splitlines(keepends=True)
    last = text[100].rstrip("\n") + "," + extra if extra != "\n" else text[100] + "\n"
    path.write_text("".join([*text[:100], last, *text[101:]]), encoding="utf-8")
    try:
        expected = load_csv(path, SCHEMA)
    except DataValidationError as err:
        with pytest.raises(DataValidationError) as got:
            cache.load_cached(path, SCHEMA, cache_dir=tmp_path / "cache")
        assert str(got.value) == str(err)
    else:
        same(cache.load_cached(path, SCHEMA, cache_dir=tmp_path / "cache"), expected)
