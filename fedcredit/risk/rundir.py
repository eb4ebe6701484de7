"""A finished run's directory, read for the tools that look at it afterwards (baseline, report).

`load_run` reads config.json and history.json once and checks them; the
other readers rebuild what a simulation run's config determines (its banks,
its hold-out set) or load its final model. Each failure is a RunDirError
that names the file and what is wrong, so a tool can print it or turn the
section it needed into a note.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedcredit.core.config import ConfigError, RunConfig, parse_run_config
from fedcredit.core.loading import DataValidationError
from fedcredit.core.partition import PartitionError
from fedcredit.core.schema import SchemaError
from fedcredit.federation.history import History, HistoryError, read_history


class RunDirError(ValueError):
    """A run directory cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Run:
    """What a run directory holds, read once."""

    dir: Path
    config: dict[str, Any]
    cfg: RunConfig
    history: History

    @property
    def num_banks(self) -> int:
        """Federation size: banks that sent statistics plus those that failed to."""
        return self.history.num_banks

    @property
    def model_path(self) -> Path:
        return self.dir / "model-final.keras"


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunDirError(f"{path} does not exist: is {path.parent} a fedcredit run directory?")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise RunDirError(f"{path} does not hold a JSON object")
    return value


def load_run(run_dir: str | Path) -> Run:
    """Config and history of a run directory, checked enough to be used."""
    path = Path(run_dir).expanduser().resolve()
    if not path.is_dir():
        raise RunDirError(
            f"run directory {path} "
            + ("is a file: give the directory that holds history.json" if path.exists() else "does not exist")
        )
    config = _read_config(path / "config.json")
    try:
        history = read_history(path / "history.json")
    except HistoryError as err:
        raise RunDirError(str(err)) from err
    try:
        cfg = parse_run_config(config)
    except ConfigError as err:
        raise RunDirError(f"{path / 'config.json'}: {err}") from err
    return Run(path, config, cfg, history)


def one_line(err: Exception) -> str:
    """Multi-line validation errors as one line for stderr."""
    if isinstance(err, DataValidationError):
        return f"{err.path}: " + "; ".join(str(p) for p in err.problems if p.blocking)
    return " ".join(str(err).split())


def simulated_banks(run: Run) -> list[Any]:
    """The run's simulated banks (train and validation rows), rebuilt from its config.

    Refuses a run whose banks are not the simulation's (a deployment): its
    rows never existed in one place and cannot be rebuilt.
    """
    from fedcredit.core.banks import load_bank

    recorded = set(run.history.banks)
    if run.num_banks < 1:
        raise RunDirError(f"{run.dir / 'history.json'} records no banks: the run stopped before statistics")
    try:
        banks = [load_bank(run.cfg, {"partition-id": i, "num-partitions": run.num_banks}) for i in range(run.num_banks)]
    except (DataValidationError, SchemaError, PartitionError, OSError) as err:
        raise RunDirError(
            f"{run.dir}: its banks cannot be rebuilt as simulated banks from its config (a deployment "
            f"run? this needs a simulation run): {one_line(err)}"
        ) from err
    names = {b.name for b in banks}
    if not recorded <= names:
        raise RunDirError(
            f"{run.dir}: its banks {sorted(recorded)} are not the simulated banks {sorted(names)} of its config "
            "(a deployment run?): this needs a simulation run"
        )
    return banks


def holdout(run: Run) -> pd.DataFrame:
    """The run's hold-out set, rebuilt from its config (the same rows the coordinator scored)."""
    from fedcredit.core.banks import holdout_set

    try:
        return holdout_set(run.cfg)
    except (DataValidationError, SchemaError, PartitionError, OSError) as err:
        raise RunDirError(f"cannot rebuild the hold-out set of {run.dir}: {one_line(err)}") from err


def load_final_model(run: Run) -> Any:
    from fedcredit.core import model as mdl

    if not run.model_path.is_file():
        raise RunDirError(f"{run.model_path} does not exist: the run did not finish (status {run.history.status!r})")
    try:
        return mdl.load(run.model_path)
    except mdl.ModelFileError as err:  # not a valid Keras model file (truncated, corrupt): the message says so
        raise RunDirError(str(err)) from err


def target_of(run: Run) -> str:
    from fedcredit.core.banks import schema_of

    try:
        return schema_of(run.cfg).target
    except SchemaError as err:
        raise RunDirError(f"{run.dir / 'config.json'}: {one_line(err)}") from err
