"""The files a run leaves behind, all in one absolute directory per run."""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

KEPT_MODEL = "model-kept.keras"  # the model a bank keeps after personalisation

FILES = {
    "config.json": "the run config used (every key, defaults included)",
    "history.json": "per round: pooled and per-bank metrics, hold-out metrics, banks ok/failed/missing",
    "preprocessing.json": "global means, variances and vocabularies merged from the banks' statistics",
    "profile.json": "per bank (secure mode: pooled only): rows, defaults and counts of each feature over global bins",
    "reasons.json": "per bank (secure mode: pooled only): how often each feature is a reason for the final model's "
    "declines on its validation loans, and rows breaking a monotone constraint",
    "model-final.keras": "the final global model; scores a raw applicant DataFrame",
    "model-best.keras": "the global model of the best round (highest pooled validation AUC, also with any one bank left out; else the latest)",
    "checkpoints/round-NNN.npz": "the global weights after each round",
    "scores/round-NNN.npz": "per evaluated round: pooled (plain mode: also per-bank) and hold-out PD histograms per class",
    "banks/<bank>/model-kept.keras": "simulation: the model each bank kept after personalisation (at a real bank: "
    "its node config's model-dir)",
    "tensorboard/": "pooled, hold-out and per-bank metrics per round as TensorBoard scalars",
}


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null, so that other tools can read the file."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def write_atomically(path: Path, write: Callable[[Path], None], suffix: str = ".partial") -> Path:
    """Let `write` fill a temporary file next to `path`, then rename it over `path`.

    Readers (the report, a copy of the run directory) see the previous file or the new
    one, never a truncated one. The temporary name is hidden, unique, ends with
    `suffix` (Keras insists on `.keras`) and is removed when the write fails; an
    OSError is raised again with `path` in it. The file gets the usual umask mode.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{suffix}")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
    except OSError as err:
        message = f"could not write {path} ({err.strerror or err}); the previous file, if any, is unchanged"
        raise (OSError(err.errno, message) if err.errno is not None else OSError(message)) from err
    except BaseException as err:
        err.add_note(f"while writing {path}; the previous file, if any, is unchanged")
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: Path, value: Any) -> None:
    text = json.dumps(_clean(value), indent=2, allow_nan=False) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


class RunOutputs:
    def __init__(self, output_dir: str, run_id: int | str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.dir = (Path(output_dir).expanduser() / f"{stamp}-run{run_id}").resolve()
        (self.dir / "checkpoints").mkdir(parents=True, exist_ok=False)

    def path(self, name: str) -> Path:
        return self.dir / name

    def save_json(self, name: str, value: Any) -> None:
        write_json(self.path(name), value)

    def save_model(self, name: str, model: Any) -> Path:
        """A Keras model as `name` (e.g. model-final.keras), written atomically."""
        return write_atomically(self.path(name), model.save, suffix=".partial.keras")

    def checkpoint(self, server_round: int) -> Path:
        """Where the global weights after `server_round` are kept."""
        return self.dir / "checkpoints" / f"round-{server_round:03d}.npz"

    def save_checkpoint(self, server_round: int, weights: Sequence[np.ndarray]) -> Path:
        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:  # a file object: np.savez would add ".npz" to a name
                np.savez(f, *weights)

        return write_atomically(self.checkpoint(server_round), write)


def load_checkpoint(path: str | Path) -> list[np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_scalars(log_dir: Path, server_round: int, groups: dict[str, dict[str, Any] | None]) -> None:
    """Per-round metrics as TensorBoard scalars, e.g. pooled/auc, holdout/auc, bank/acme/auc.

    Uses TensorFlow's own summary writer (TensorFlow is loaded already for the
    model); viewing needs the `tensorboard` package only.
    """
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        for group, values in groups.items():
            for key, value in (values or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    tf.summary.scalar(f"{group}/{key}", float(value), step=server_round)
    writer.close()
