"""The files a run leaves behind, all in one absolute directory per run."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FILES = {
    "config.json": "the run config used (every key, defaults included)",
    "history.json": "per round: pooled and per-bank metrics, hold-out metrics, banks ok/failed/missing",
    "preprocessing.json": "global means, variances and vocabularies merged from the banks' statistics",
    "model-final.keras": "the final global model; scores a raw applicant DataFrame",
    "model-best.keras": "the global model of the round with the best pooled validation AUC",
    "checkpoints/round-NNN.npz": "the global weights after each round",
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


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(value), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)  # readers never see a half-written file


class RunOutputs:
    def __init__(self, output_dir: str, run_id: int | str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.dir = (Path(output_dir).expanduser() / f"{stamp}-run{run_id}").resolve()
        (self.dir / "checkpoints").mkdir(parents=True, exist_ok=False)

    def path(self, name: str) -> Path:
        return self.dir / name

    def save_json(self, name: str, value: Any) -> None:
        write_json(self.path(name), value)

    def save_checkpoint(self, server_round: int, weights: Sequence[np.ndarray]) -> Path:
        path = self.dir / "checkpoints" / f"round-{server_round:03d}.npz"
        np.savez(path, *weights)
        return path


def load_checkpoint(path: str | Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


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
