"""Several variants of a run in one Flower run, over the same warm banks (`sweep`).

Each variant runs as a run of its own (`fedcredit.federation.server.run`),
with its own run directory; every message carries the variant's run-config
overrides, so the banks train exactly as they would in a separate run. The
banks' statistics are gathered once per distinct split, their feature profiles
once per split and preprocessing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.core.banks import schema_of
from fedcredit.core.config import parse_run_config, sweep_variants
from fedcredit.core.schema import resolve_schema_path
from fedcredit.federation import protocol
from fedcredit.federation.errors import FederationError
from fedcredit.federation.exchange import short_reason
from fedcredit.federation.history import History
from fedcredit.federation.server import run


class VariantGrid:
    """The Grid as one sweep variant uses it: every message carries the variant's run-config overrides."""

    def __init__(self, grid: Grid, overrides: Mapping[str, Any]) -> None:
        self._grid = grid
        self.record = ConfigRecord(dict(overrides))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        for msg in messages:
            msg.content[protocol.RUN_CONFIG] = self.record
        return self._grid.send_and_receive(messages, timeout=timeout)


def serve(
    grid: Grid, run_config: Mapping[str, Any], run_id: int | str, app_dir: str | Path | None = None
) -> list[History]:
    """What the ServerApp does: one run, or every variant of `sweep` one after the other over the same banks.

    A variant that fails is recorded (its history says why) and the sweep goes on with the next one.
    """
    text = str(run_config.get("sweep", "") or "")
    if not text:
        return [run(grid, run_config, run_id, app_dir)]
    base = {k: v for k, v in run_config.items() if k != "sweep"}
    variants = sweep_variants(text)
    for overrides in variants:  # every variant's config is checked before the first one runs
        cfg = parse_run_config({**base, **overrides})
        schema_of(dataclasses.replace(cfg, schema_path=resolve_schema_path(cfg.schema_path, app_dir)))
    statistics: dict[tuple, Any] = {}
    profiles: dict[tuple, Any] = {}
    histories = []
    for index, overrides in enumerate(variants, start=1):
        log(INFO, "fedcredit sweep: variant %d/%d: %s", index, len(variants), overrides)
        try:
            histories.append(
                run(
                    VariantGrid(grid, overrides),
                    {**base, **overrides},
                    f"{run_id}-{index:03d}",
                    app_dir,
                    statistics=statistics,
                    variant={"index": index, "of": len(variants), "overrides": dict(overrides)},
                    profiles=profiles,
                )
            )
        except Exception as err:  # noqa: BLE001 - its history records why; the next variant still runs
            log(WARNING, "fedcredit sweep: variant %d failed: %s", index, short_reason(str(err)))
    if not histories:
        raise FederationError(f"every one of the sweep's {len(variants)} variants failed (see their history.json)")
    return histories
