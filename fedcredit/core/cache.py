"""A bank's parsed loan file, kept on its own disk so later messages need not re-parse the CSV.

In a deployment every message runs in a fresh ClientApp process, which
without a cache reads and validates the whole CSV again. The first message
validates it once and writes each column of the validated frame as a raw
numpy file (numbers as float64, the target as int8, text as int32 codes
into a vocabulary kept in the manifest); later messages memory-map them.
A deployed bank reads them cut into training and validation rows one column
at a time, numbers as float32 (`load_cached_split`), so it holds its rows once.

The cache lives in `cache-dir` (node config; default: `.fedcredit-cache`
next to the CSV), one directory per key: the SHA-256 of the CSV's bytes, the
schema's SHA-256, the limits and `FORMAT`. A changed file or schema has
another key, so it is built anew. The manifest records every column file's
size and CRC-32, checked on each load: a truncated or corrupt cache is
rebuilt. When the cache cannot be written (read-only disk, no space) the
bank reads the CSV as before and logs why. The cache holds borrowers' data:
it is never sent, and nothing of it (path, values, vocabulary) goes into a
reply or a log line; keep `cache-dir` as private as the CSV.

The build reads the CSV in chunks of `CHUNK_ROWS` rows through the very
checks of `fedcredit.core.loading.validate_frame`, so memory holds one chunk,
not the file. Anything the chunked pass cannot decide exactly as
`check_csv` does (a blocking problem in any chunk, a repeated header name, a
ragged row, text that is not UTF-8, quoted line breaks, more categories than
the limits allow) sends the file through `load_csv` whole, which then gives
the usual error (file, column, line) or frame.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from fedcredit.core.limits import Limits
from fedcredit.core.loading import DEFAULT_LIMITS, load_csv, validate_frame
from fedcredit.core.schema import Schema

FORMAT = 1  # bumped when the layout changes: an old cache then has another key and is rebuilt
CHUNK_ROWS = 250_000
DIR_NAME = ".fedcredit-cache"
MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


T = TypeVar("T")
# What cuts a bank's rows into parts (training, validation): its target column -> each part's row positions.
Split = Callable[[np.ndarray], Sequence[np.ndarray]]


class CacheError(RuntimeError):
    """A cache directory that cannot be used as it is (missing, truncated, corrupt): rebuilt."""


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _crc32(path: Path) -> int:
    """A cheap checksum (far faster than SHA-256), read on every load to catch a corrupted column."""
    crc = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            crc = zlib.crc32(block, crc)
    return crc


def cache_key(csv_sha256: str, schema: Schema, limits: Limits) -> str:
    """What the cached columns depend on: the file's bytes, the schema, the limits and the layout."""
    text = json.dumps([FORMAT, csv_sha256, schema.sha256, asdict(limits)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def default_cache_dir(csv_path: str | Path) -> Path:
    return Path(csv_path).resolve().parent / DIR_NAME


def _text_columns(schema: Schema, frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if frame[c].dtype not in (np.float64, np.int8)]


def _plain_header(path: Path) -> list[str] | None:
    """The header's names when the file can be read in chunks exactly as `read_table` reads it, else None."""
    with path.open("rb") as handle:
        if b'"' in handle.read(1 << 16):  # quoted cells may hold line breaks: line numbers would differ
            return None
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle, skipinitialspace=True), None)
    if not header:
        return None
    names = [h.strip() for h in header]
    return names if len(set(names)) == len(names) and all(names) else None


def _chunks(path: Path, schema: Schema, limits: Limits, names: list[str]):
    """Validated frames of CHUNK_ROWS rows, or None (then the whole file goes through `load_csv`)."""
    wanted = [c for c in names if c in set(schema.columns) | {schema.partition}]
    try:
        # No `names`/`usecols`: then pandas refuses a row with more fields than the header (a ragged
        # row, which `read_table` reports) instead of silently dropping its extra fields.
        reader = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            chunksize=CHUNK_ROWS,
            encoding="utf-8-sig",
            encoding_errors="strict",
            skip_blank_lines=False,
        )
        line = 2
        for raw in reader:
            if not isinstance(raw.index, pd.RangeIndex) or len(raw.columns) != len(names):
                yield None  # a first row with more fields became pandas' index: ragged
                return
            raw = raw.set_axis(names, axis=1)[wanted]
            raw = raw.apply(lambda s: s.str.strip()).replace("", None).astype("str")
            raw.index = pd.RangeIndex(line, line + len(raw))
            if raw.isna().all(axis=1).any():  # a blank line: read_table skips it, so lines would shift
                yield None
                return
            line += len(raw)
            report = validate_frame(raw, schema, str(path), True, limits, stripped=True)
            yield report.frame if report.ok else None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError):
        yield None


def _write(frame: pd.DataFrame, target: Path, vocab: dict[str, dict[str, int]], text: list[str]) -> None:
    """Append one validated chunk to the column files."""
    for col in frame.columns:
        if col in text:
            words = vocab.setdefault(col, {})
            values = frame[col].to_numpy(dtype=object)
            for value in pd.unique(values):
                words.setdefault(value, len(words))
            data = pd.Series(values).map(words).to_numpy(dtype=np.int32)
        else:
            data = frame[col].to_numpy()
        with (target / f"{col}.bin").open("ab") as handle:
            data.tofile(handle)


def build(path: Path, schema: Schema, limits: Limits, target: Path, csv_sha256: str) -> None:
    """Write the cache into `target` (a fresh directory)."""
    names = _plain_header(path)
    vocab: dict[str, dict[str, int]] = {}
    dtypes: dict[str, str] = {}
    rows, ok = 0, names is not None
    for frame in _chunks(path, schema, limits, names) if names else []:
        if frame is None:
            ok = False
            break
        text = _text_columns(schema, frame)
        dtypes = dtypes or {c: ("int32" if c in text else str(frame[c].dtype)) for c in frame.columns}
        _write(frame, target, vocab, text)
        rows += len(frame)
    ok = ok and rows > 0 and not any(limits.too_many_categories(len(vocab.get(c, {}))) for c in schema.categorical)
    if not ok:  # decided exactly as every other use of the file decides
        for child in target.iterdir():
            child.unlink()
        whole = load_csv(path, schema, limits)
        vocab, rows = {}, len(whole)
        text = _text_columns(schema, whole)
        dtypes = {c: ("int32" if c in text else str(whole[c].dtype)) for c in whole.columns}
        _write(whole, target, vocab, text)
    columns = {
        c: {"dtype": dtypes[c], "bytes": (target / f"{c}.bin").stat().st_size, "crc32": _crc32(target / f"{c}.bin")}
        for c in dtypes
    }
    manifest = {
        "format": FORMAT,
        "csv-sha256": csv_sha256,
        "schema-sha256": schema.sha256,
        "limits": asdict(limits),
        "rows": rows,
        "columns": columns,
        "vocabulary": {c: list(words) for c, words in vocab.items()},
    }
    (target / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


def _columns(directory: Path, csv_sha256: str, schema: Schema, limits: Limits):
    """[(column, a checked loader of its values)]; CacheError when the manifest does not match.

    Each loader memory-maps its column only when called, so a caller that
    converts one column at a time holds one mapped column, not the file.
    """
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CacheError(f"no readable manifest ({type(err).__name__})") from None
    expected = (FORMAT, csv_sha256, schema.sha256, asdict(limits))
    found = (manifest.get("format"), manifest.get("csv-sha256"), manifest.get("schema-sha256"), manifest.get("limits"))
    if found != expected:
        raise CacheError("built for another file, schema, limits or format")
    rows = int(manifest["rows"])

    def loader(col: str, info: dict[str, Any]):
        def load() -> tuple[np.ndarray, np.ndarray | None]:
            file = directory / f"{col}.bin"
            dtype = np.dtype(info["dtype"])
            size = file.stat().st_size if file.is_file() else -1
            if size != info["bytes"] or size != rows * dtype.itemsize:
                raise CacheError(f"a column file has {size} bytes, the manifest says {info['bytes']}")
            if _crc32(file) != info["crc32"]:
                raise CacheError("a column file does not match its checksum")
            mapped = np.memmap(file, dtype=dtype, mode="r", shape=(rows,)) if rows else np.empty(0, dtype)
            words = manifest["vocabulary"].get(col)
            return mapped, None if words is None else np.array(words, dtype=object)

        return load

    return [(col, loader(col, info)) for col, info in manifest["columns"].items()]


def open_cache(directory: Path, csv_sha256: str, schema: Schema, limits: Limits) -> pd.DataFrame:
    """The cached frame, its columns memory-mapped; CacheError when anything does not match the manifest."""
    columns = _columns(directory, csv_sha256, schema, limits)
    data = {}
    for col, load in columns:
        mapped, words = load()
        data[col] = pd.Series(mapped, copy=False) if words is None else pd.Series(words[mapped], dtype="str")
    return pd.DataFrame(data, copy=False)


def _compact(values: np.ndarray, words: np.ndarray | None) -> pd.Series:
    if words is not None:
        return pd.Series(words[values], dtype="str")
    return pd.Series(values.astype(np.float32) if values.dtype == np.float64 else values)


def open_cache_split(
    directory: Path, csv_sha256: str, schema: Schema, limits: Limits, split: Split
) -> list[pd.DataFrame]:
    """The cached rows cut by `split` (the target column -> row positions of each part), numbers as float32.

    One column is mapped and converted at a time, so memory holds the parts
    (the data once, at the model's precision) and one mapped column.
    """
    columns = _columns(directory, csv_sha256, schema, limits)
    target = dict(columns)[schema.target]()
    parts = split(np.asarray(target[0]))
    data: list[dict[str, pd.Series]] = [{} for _ in parts]
    for col, load in columns:
        mapped, words = target if col == schema.target else load()  # the target is checked and mapped once
        for part, positions in zip(data, parts, strict=True):
            part[col] = _compact(mapped[positions], words)
        del mapped
    return [pd.DataFrame(part, copy=False) for part in data]


def _through_cache(
    path: Path, schema: Schema, limits: Limits, cache_dir: str | Path | None, read: Callable[[Path, str], T]
) -> T | None:
    """`read(cache directory, the CSV's SHA-256)` of a matching cache, built (or rebuilt) if need be.

    None when the cache cannot be written (logging why, never a path or
    value of the data). Validation errors are those of `load_csv`.
    """
    digest = _sha256(path)
    root = Path(cache_dir) if cache_dir else default_cache_dir(path)
    directory = root / cache_key(digest, schema, limits)
    if directory.is_dir():
        try:
            return read(directory, digest)
        except CacheError as err:
            log.warning("bank data cache unusable (%s): rebuilding it from the CSV", err)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    except OSError as err:
        log.warning("bank data cache not written (%s): reading the CSV in this message", type(err).__name__)
        return None
    try:
        build(path, schema, limits, staging, digest)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(staging, directory)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("bank data cache not written (%s): reading the CSV in this message", type(err).__name__)
        return None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return read(directory, digest)


def load_cached(
    csv_path: str | Path, schema: Schema, limits: Limits = DEFAULT_LIMITS, cache_dir: str | Path | None = None
) -> pd.DataFrame:
    """The validated frame of a bank's CSV (as `load_csv` gives it), from its cache when one matches, else parsed once and cached."""
    path = Path(csv_path)
    if path.is_file():
        frame = _through_cache(path, schema, limits, cache_dir, lambda d, digest: open_cache(d, digest, schema, limits))
        if frame is not None:
            return frame
    return load_csv(path, schema, limits)  # the usual missing-file error, or no cache can be written


def load_cached_split(
    csv_path: str | Path,
    schema: Schema,
    split: Split,
    limits: Limits = DEFAULT_LIMITS,
    cache_dir: str | Path | None = None,
) -> list[pd.DataFrame]:
    """A bank's rows cut by `split` (target column -> row positions per part) through its cache, numbers as float32.

    What a deployed bank trains and validates on: its rows held once, at the
    precision the model reads them (`to_inputs` makes float32), instead of
    the float64 frame and its parts side by side. Without a usable cache the
    CSV is read whole and cut the same way.
    """
    path = Path(csv_path)
    if path.is_file():
        parts = _through_cache(
            path, schema, limits, cache_dir, lambda d, digest: open_cache_split(d, digest, schema, limits, split)
        )
        if parts is not None:
            return parts
    return cut_frame(load_csv(path, schema, limits), schema.target, split)


def cut_frame(frame: pd.DataFrame, target: str, split: Split) -> list[pd.DataFrame]:
    """A loaded frame cut as `load_cached_split` cuts the cache: the same parts, numbers as float32."""
    floats = {c: np.float32 for c in frame.columns if frame[c].dtype == np.float64}
    return [frame.iloc[p].reset_index(drop=True).astype(floats) for p in split(frame[target].to_numpy())]


def cache_setting(node_config: dict[str, Any] | Any) -> tuple[bool, str | None]:
    """(whether to cache, the cache dir or None for the default) from node config `cache` and `cache-dir`."""
    mode = str(node_config.get("cache", "on")).lower()
    if mode not in ("on", "off"):
        raise ValueError(f'node config \'cache\' = {mode!r}: use "on" (default) or "off"')
    directory = node_config.get("cache-dir") or None
    return mode == "on", None if directory is None else str(directory)
