"""Which rows a ClientApp trains and validates on.

In simulation (node config has `partition-id`) a bank is a slice of the
embedded data set, cut identically in every process from the run config; in
a deployment (node config has `data-path`) it is the bank's own CSV. Either
way the bank splits its rows into training and validation itself; in
simulation a common hold-out test set is kept out of every bank, for the
ServerApp's evaluation only.

A deployed bank's file is read through its cache (`fedcredit.core.cache`;
node config `cache = "off"` reads the CSV in every message as before) and
its numbers are held as float32, the precision the model reads them at;
simulation never uses the cache and keeps the embedded data's float64.

The frames (a bank's training and validation rows, the hold-out set) carry
the schema's protected columns beside the features and the target, as
loading keeps them (stripped text), for the fairness analysis
(`fedcredit.core.groups.group_index`); nothing that builds statistics or
model inputs reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from fedcredit.core.cache import cache_setting, cut_frame, load_cached_split
from fedcredit.core.config import ConfigError, RunConfig
from fedcredit.core.limits import Limits
from fedcredit.core.loading import DEFAULT_LIMITS, load_csv
from fedcredit.core.partition import partition, stratified_positions, stratified_split
from fedcredit.core.schema import Schema, SchemaError, load_schema

PARTS = ("train", "val")  # a bank's rows: training, validation (the order of `stratified_positions`' parts)


@dataclass(frozen=True)
class BankData:
    """A bank's name and its training and validation rows, each read when first used.

    A deployed bank runs each message in its own process, and most messages
    need one part only (training: the training rows; evaluation: the
    validation rows), so that process holds only the rows it uses.
    """

    name: str
    part: Callable[[str], pd.DataFrame]  # "train" or "val" -> those rows

    @property
    def train(self) -> pd.DataFrame:
        return self.part("train")

    @property
    def val(self) -> pd.DataFrame:
        return self.part("val")


@lru_cache(maxsize=4)
def _load(
    path: str, schema_path: str, mtime: float = 0.0, limits: Limits = DEFAULT_LIMITS
) -> tuple[Schema, pd.DataFrame]:
    """Cached per process; `mtime` makes a bank's corrected file be read again.

    The file is validated as `fedcredit validate` does, with the run's limits on
    category values (those the coordinator applies to the statistics).
    """
    schema = load_schema(schema_path)
    return schema, load_csv(path, schema, limits)


@lru_cache(maxsize=4)
def _load_file(
    path: str,
    schema_path: str,
    mtime: float,
    limits: Limits,
    cache: tuple[bool, str | None],
    split: tuple[float, int],
    part: str,
) -> pd.DataFrame:
    """A deployed bank's training or validation rows (`part`), numbers held as float32, the precision the model reads.

    Through its on-disk cache (`fedcredit.core.cache`: parsed once per file,
    not per message, and read column by column, only this part's rows) unless
    node config `cache = "off"`.
    """
    schema = load_schema(schema_path)

    def cut(labels):
        return [stratified_positions(labels, *split)[PARTS.index(part)]]

    use_cache, cache_dir = cache
    if use_cache:
        (rows,) = load_cached_split(path, schema, cut, limits, cache_dir)
    else:
        (rows,) = cut_frame(_load(path, schema_path, mtime, limits)[1], schema.target, cut)
    return rows


@lru_cache(maxsize=4)
def simulation_split(
    data_path: str,
    schema_path: str,
    test_fraction: float,
    seed: int,
    scheme: str,
    num_banks: int,
    alpha: float,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[pd.DataFrame, list[tuple[str, pd.DataFrame]]]:
    """(hold-out test set, [(bank name, bank rows)]) for a simulated federation."""
    schema, frame = _load(data_path, schema_path, limits=limits)
    pool, test = stratified_split(frame, schema.target, test_fraction, seed)
    banks = partition(pool, scheme, num_banks, seed, schema.target, schema.partition, alpha)
    return test, [(b.name, pool.iloc[b.rows].reset_index(drop=True)) for b in banks]


def holdout_set(cfg: RunConfig) -> pd.DataFrame:
    schema, frame = _load(cfg.data_path, cfg.schema_path, limits=cfg.limits)
    return stratified_split(frame, schema.target, cfg.test_fraction, cfg.seed)[1]


def schema_of(cfg: RunConfig) -> Schema:
    """The schema a run's statistics and model use: the schema file's (or the built-in), less `excluded-features`.

    The one place the run's feature list comes from (statistics, their checks,
    the model, the profiles); a bank's file is still validated against the
    whole schema (`_load`), which is the contract.
    """
    schema = load_schema(cfg.schema_path)
    try:
        return schema.without(cfg.excluded)
    except SchemaError as err:
        raise ConfigError(f"run config 'excluded-features' = {cfg.excluded_features!r}: {err}") from err


def node_bank_name(node_config: Mapping[str, Any]) -> str:
    """A real bank's name: node config `bank-name`, else its `data-path` (one rule for data, keys and history)."""
    return str(node_config.get("bank-name", node_config.get("data-path", "")))


def load_bank(cfg: RunConfig, node_config: Mapping[str, Any]) -> BankData:
    """This node's training and validation rows, from node and run config."""
    schema = schema_of(cfg)
    if "data-path" in node_config:
        path = str(node_config["data-path"])
        mtime = Path(path).stat().st_mtime if Path(path).exists() else 0.0
        args = (path, cfg.schema_path, mtime, cfg.limits, cache_setting(node_config), (cfg.val_fraction, cfg.seed))
        return BankData(node_bank_name(node_config), lambda part: _load_file(*args, part))
    if "partition-id" in node_config and "num-partitions" in node_config:
        pid, n = int(node_config["partition-id"]), int(node_config["num-partitions"])
        _, banks = simulation_split(
            cfg.data_path,
            cfg.schema_path,
            cfg.test_fraction,
            cfg.seed,
            cfg.partitioning,
            n,
            cfg.dirichlet_alpha,
            cfg.limits,
        )
        name, frame = banks[pid]
        parts = dict(zip(PARTS, stratified_split(frame, schema.target, cfg.val_fraction, cfg.seed), strict=True))
        return BankData(name, parts.__getitem__)
    raise ValueError(
        "this SuperNode has no data: start it with --node-config 'data-path=\"/path/to/loans.csv\"' "
        f"(node config seen: {dict(node_config)})"
    )
