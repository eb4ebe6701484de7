"""A failed write of a run output leaves the previous file intact and no truncated or temporary file."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import keras
import numpy as np
import pytest

from fedcredit.federation.outputs import RunOutputs, load_checkpoint, write_json


def _disk_full(written: Path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(written))


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


@pytest.fixture()
def out(tmp_path) -> RunOutputs:
    return RunOutputs(str(tmp_path), "t")


@pytest.fixture()
def model() -> keras.Model:
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


def test_save_json_failing_midway_keeps_the_previous_file(out, monkeypatch):
    out.save_json("history.json", {"rounds": [1]})
    real_write_text = Path.write_text

    def write_then_fail(self: Path, text: str, *args, **kwargs) -> int:
        real_write_text(self, text[:5], *args, **kwargs)
        raise _disk_full(self)

    monkeypatch.setattr(Path, "write_text", write_then_fail)
    with pytest.raises(OSError, match=f"could not write {out.path('history.json')}") as info:
        out.save_json("history.json", {"rounds": [1, 2]})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert json.loads(out.path("history.json").read_text()) == {"rounds": [1]}
    assert _files(out.dir) == ["history.json"]


def test_write_json_replaces_the_file_and_writes_null_for_nan(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"a": 1.0})
    write_json(path, {"a": float("nan"), "b": np.float32(2.0)})
    assert json.loads(path.read_text()) == {"a": None, "b": 2.0}
    assert _files(tmp_path) == ["x.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_save_checkpoint_round_trips(out):
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0.5], dtype=np.float32)]
    path = out.save_checkpoint(3, weights)
    assert path == out.dir / "checkpoints" / "round-003.npz"
    loaded = load_checkpoint(path)
    assert len(loaded) == 2 and all(np.array_equal(a, b) for a, b in zip(loaded, weights, strict=True))
    assert _files(path.parent) == ["round-003.npz"]


def test_save_checkpoint_failing_midway_keeps_the_previous_file(out, monkeypatch):
    old = [np.ones((2, 2), dtype=np.float32)]
    path = out.save_checkpoint(1, old)

    def savez_then_fail(file, *arrays, **kwargs) -> None:
        file.write(b"PK\x03\x04 half a zip")
        raise _disk_full(Path(file.name))

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(OSError, match=f"could not write {path}.*No space left on device"):
        out.save_checkpoint(1, [np.zeros((2, 2), dtype=np.float32)])
    with pytest.raises(OSError, match="round-002.npz"):
        out.save_checkpoint(2, old)
    monkeypatch.undo()
    assert np.array_equal(load_checkpoint(path)[0], old[0])
    assert _files(path.parent) == ["round-001.npz"]  # no round-002, no temporary file


def test_save_model_writes_a_loadable_keras_file(out, model):
    x = np.array([[1.0, 2.0], [3.0, -1.0]], dtype=np.float32)
    path = out.save_model("model-final.keras", model)
    assert path == out.path("model-final.keras")
    assert np.allclose(keras.saving.load_model(path).predict(x, verbose=0), model.predict(x, verbose=0))
    assert _files(out.dir) == ["model-final.keras"]


def test_save_model_failing_midway_keeps_the_previous_model(out, model, monkeypatch):
    path = out.save_model("model-best.keras", model)
    before = path.read_bytes()

    def save_then_fail(filepath, *args, **kwargs) -> None:
        Path(filepath).write_bytes(b"PK\x03\x04 truncated")
        raise _disk_full(Path(filepath))

    model.layers[0].kernel.assign(np.full((2, 1), 7.0, dtype=np.float32))
    monkeypatch.setattr(model, "save", save_then_fail)
    with pytest.raises(OSError, match=f"could not write {path}"):
        out.save_model("model-best.keras", model)
    with pytest.raises(OSError, match="model-final.keras"):
        out.save_model("model-final.keras", model)
    assert path.read_bytes() == before
    assert _files(out.dir) == ["model-best.keras"]
    assert not np.allclose(keras.saving.load_model(path).layers[0].kernel.numpy(), 7.0)


def test_a_failure_that_is_not_an_oserror_keeps_its_type_and_cleans_up(out, model, monkeypatch):
    def save_then_fail(filepath, *args, **kwargs) -> None:
        Path(filepath).write_bytes(b"PK")
        raise ValueError("cannot serialize layer")

    monkeypatch.setattr(model, "save", save_then_fail)
    with pytest.raises(ValueError, match="cannot serialize layer") as info:
        out.save_model("model-final.keras", model)
    assert any(str(out.path("model-final.keras")) in note for note in info.value.__notes__)
    assert _files(out.dir) == []
