"""Continue a run that the coordinator's crash cut short (`resume-from`).

Flower cannot resume a run: a SuperLink or ServerApp crash fails it, and
`Strategy.start` always begins at round 1. The run directory already holds
what a continuation needs: the preprocessing, the global weights after each
round and the history. A resumed run is a new run with its own directory
that records where it came from (`resumed-from` in history.json), carries the
old rounds, checkpoints and best model over, starts the strategy from the
last checkpoint, and numbers its rounds on from there. Banks seed every
message by its round number (`round-offset` travels with each message), so a
resumed FedAvg run ends with exactly the weights of an uninterrupted one.

Refused, with the reason, before round 1: a directory that is not a run, a
finished run, a changed config (besides the keys the config table marks
`operational`), a changed schema or bank statistics (the preprocessing would
differ), a checkpoint that is not the one the run wrote, and strategies or
privacy modes whose state lives only in the crashed process (server
optimiser moments, momentum, the privacy accountant).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcredit.core.config import OPERATIONAL_KEYS, RunConfig
from fedcredit.federation.history import History, HistoryError, read_history
from fedcredit.federation.outputs import RunOutputs, load_checkpoint, sha256_of

# Strategies whose state (server optimiser moments, momentum) is not in the run directory.
STATEFUL = ("fedadam", "fedyogi", "fedadagrad", "fedavgm")


class ResumeError(ValueError):
    """The run cannot be resumed from that directory; the message says why."""


@dataclass(frozen=True)
class Resume:
    """What a resumed run starts from."""

    run_dir: Path
    last_round: int
    weights: list[np.ndarray]
    preprocessing: dict[str, Any]
    history: History  # the crashed run's, up to its last checkpointed round


def load(path: str, cfg: RunConfig, schema_sha256: str) -> Resume:
    """The state of the run in `path`, checked against this run's config and schema."""
    run_dir = Path(path).expanduser().resolve()
    if cfg.strategy_name in STATEFUL:
        raise ResumeError(
            f"strategy.name = {cfg.strategy_name!r} keeps server state (optimiser moments or momentum) that the "
            f"run directory does not hold: resuming would not continue the same run. Resume works with "
            f"strategies other than {list(STATEFUL)}"
        )
    if cfg.privacy_mode != "none":
        raise ResumeError(
            "differential privacy: the privacy accountant's state is lost with the crashed ServerApp, so the "
            "epsilon of a resumed run could not be stated; start a new run"
        )
    try:
        history = read_history(run_dir / "history.json")
    except HistoryError as err:
        raise ResumeError(f"resume-from = {run_dir}: {err}") from err
    if history.status == "completed":
        raise ResumeError(f"resume-from = {run_dir}: that run completed; start a new run instead")
    old = history.config
    now = cfg.to_flower()
    changed = sorted(k for k in set(old) | set(now) if k not in OPERATIONAL_KEYS and old.get(k) != now.get(k))
    if changed:
        raise ResumeError(
            f"resume-from = {run_dir}: the run config differs in {changed}; only {list(OPERATIONAL_KEYS)} may change"
        )
    if history.schema_sha256 and history.schema_sha256 != schema_sha256:
        raise ResumeError(f"resume-from = {run_dir}: the schema differs from the one that run used")
    # A round counts once history.json records it: the checkpoint is written first, so a crash between the
    # two leaves a checkpoint the history does not know; that round is trained again.
    recorded = {entry.round for entry in history.rounds}
    checkpoints = {
        int(path.stem.split("-")[1]): path
        for path in run_dir.glob("checkpoints/round-*.npz")
        if path.stem.split("-")[1].isdigit() and int(path.stem.split("-")[1]) in recorded
    }
    if not checkpoints:
        raise ResumeError(f"resume-from = {run_dir}: no checkpoint: the run stopped before its first round")
    last = max(checkpoints)
    if last >= cfg.num_server_rounds:
        raise ResumeError(
            f"resume-from = {run_dir}: it already has {last} rounds; raise num-server-rounds above {last}"
        )
    history.rounds = [entry for entry in history.rounds if entry.round <= last]
    weights = _verified_checkpoint(checkpoints[last], history.round(last))
    return Resume(run_dir, last, weights, _preprocessing(run_dir), history)


def _verified_checkpoint(path: Path, entry: Any) -> list[np.ndarray]:
    """The weights of a checkpoint whose bytes are those the history recorded, and finite."""
    recorded = entry.checkpoint_sha256 if entry is not None else None
    if recorded is None:
        raise ResumeError(
            f"resume-from: {path}: history.json records no SHA-256 for this checkpoint (the run predates "
            "checkpoint digests), so it cannot be verified; start a new run"
        )
    if sha256_of(path) != recorded:
        raise ResumeError(
            f"resume-from: {path} is not the checkpoint the run wrote (its SHA-256 differs from the one in "
            "history.json): it was changed or damaged; restore it from a backup or start a new run"
        )
    try:
        weights = load_checkpoint(path)
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
        raise ResumeError(f"resume-from: {path} cannot be read as a checkpoint: {err}") from None
    if not weights or not all(np.issubdtype(w.dtype, np.floating) and np.isfinite(w).all() for w in weights):
        raise ResumeError(f"resume-from: {path} holds weights that are missing, not numbers or not finite")
    return weights


def _preprocessing(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "preprocessing.json"
    try:
        prep = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResumeError(f"resume-from: {path} is missing: the run's preprocessing is needed to continue it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResumeError(f"resume-from: {path} cannot be read: {err}") from None
    if not isinstance(prep, dict):
        raise ResumeError(f"resume-from: {path} does not hold the run's preprocessing (a JSON object)")
    return prep


def check_weights(resume: Resume, model_weights: list[np.ndarray]) -> None:
    """The checkpoint must fit the model the preprocessing builds: same arrays, shapes and dtypes."""
    fits = len(resume.weights) == len(model_weights) and all(
        w.shape == m.shape and w.dtype == m.dtype for w, m in zip(resume.weights, model_weights)
    )
    if not fits:
        raise ResumeError(
            f"resume-from = {resume.run_dir}: the checkpoint of round {resume.last_round} does not fit the model "
            "(its arrays' shapes or types differ): it belongs to another run or model; start a new run"
        )


def check_preprocessing(resume: Resume, preprocessing: dict[str, Any]) -> None:
    """The banks' statistics now must give the preprocessing the run was trained with."""
    if json.dumps(preprocessing, sort_keys=True) != json.dumps(resume.preprocessing, sort_keys=True):
        raise ResumeError(
            f"resume-from = {resume.run_dir}: the banks' statistics no longer give the run's preprocessing "
            "(a bank's data, or the set of banks, changed): the model cannot continue; start a new run"
        )


def carry_over(resume: Resume, out: RunOutputs) -> None:
    """Copy the old run's checkpoints, score histograms and best model into the new run directory."""
    for checkpoint in sorted(resume.run_dir.glob("checkpoints/round-*.npz")):
        if int(checkpoint.stem.split("-")[1]) <= resume.last_round:
            shutil.copy2(checkpoint, out.dir / "checkpoints" / checkpoint.name)
    for scores in sorted(resume.run_dir.glob("scores/round-*.npz")):  # the validation pack needs every round's
        if int(scores.stem.split("-")[1]) <= resume.last_round:
            (out.dir / "scores").mkdir(exist_ok=True)
            shutil.copy2(scores, out.dir / "scores" / scores.name)
    best = resume.run_dir / "model-best.keras"
    if best.is_file():
        shutil.copy2(best, out.path("model-best.keras"))
