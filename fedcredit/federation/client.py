"""What a bank does when the ServerApp asks: statistics, training, evaluation.

The Keras model is built once per process and reused across messages (and
across banks in a simulation worker); `model.fit` resets its optimizer and
random state from a per-message seed so that results never depend on what the
process ran before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod

from fedcredit.core import metrics
from fedcredit.core import model as mdl
from fedcredit.core.banks import BankData, load_bank, schema_of
from fedcredit.core.config import ConfigError, RunConfig, parse_run_config
from fedcredit.core.loading import DataValidationError
from fedcredit.core.partition import PartitionError
from fedcredit.core.schema import SchemaError, resolve_schema_path
from fedcredit.core.stats import Preprocessing, compute_stats

_MODELS: dict[str, Any] = {}
_INPUTS: dict[tuple[str, str, str], Any] = {}


def _single_threaded() -> None:
    """Simulation workers share the machine's cores: one TensorFlow thread each avoids oversubscription."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already running in this process: keep its threads
        pass


def _model(cfg: RunConfig, prep_json: str, simulation: bool = False):
    """The process's model for this preprocessing and architecture (built on first use)."""
    key = hashlib.sha256(f"{prep_json}|{cfg.hidden_units}|{cfg.dropout}|{cfg.l2}|{cfg.learning_rate}".encode()).hexdigest()
    if key not in _MODELS:
        if simulation:
            _single_threaded()
        _MODELS.clear()
        _INPUTS.clear()
        schema = schema_of(cfg)
        _MODELS[key] = mdl.build_model(Preprocessing.from_json(prep_json), schema.numeric, schema.categorical,
                                       cfg.hidden_layers, cfg.dropout, cfg.l2, cfg.learning_rate, cfg.seed)
    return key, _MODELS[key]


def _inputs(key: str, bank: BankData, split: str, model):
    """The bank's model inputs (validation) or features (training), computed once per process."""
    cache_key = (key, bank.name, split)
    if cache_key not in _INPUTS:
        inputs = mdl.to_inputs(getattr(bank, split), model)
        _INPUTS[cache_key] = mdl.features(model, inputs) if split == "train" else inputs
    return _INPUTS[cache_key]


def message_seed(cfg: RunConfig, server_round: int, bank_name: str) -> int:
    """Distinct per run seed, round and bank; stable across processes."""
    return (cfg.seed * 1_000_003 + server_round * 10_007 + zlib.crc32(bank_name.encode())) % (2**31 - 1)


# A bank's own mistakes (its file, the schema, the split, the config): the reply says what
# is wrong in one line, without a traceback in the coordinator's log.
USER_ERRORS = (DataValidationError, SchemaError, PartitionError, ConfigError)
ERROR_CODE = 1


def run_config(raw: Mapping[str, Any], app_dir: str | Path) -> RunConfig:
    """The run config as this bank applies it: a relative schema path is the app's own file."""
    cfg = parse_run_config(raw)
    return dataclasses.replace(cfg, schema_path=resolve_schema_path(cfg.schema_path, app_dir))


def answer(msg: Message, build: Callable[[], RecordDict]) -> Message:
    """The reply to `msg`: what `build` returns, or the bank's error in one line."""
    try:
        return Message(content=build(), reply_to=msg)
    except USER_ERRORS as err:
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        print(f"fedcredit bank: {msg.metadata.message_type} refused: {err}", flush=True)  # the bank's own log
        return Message(Error(code=ERROR_CODE, reason=reason), reply_to=msg)


def statistics(cfg: RunConfig, node_config: Mapping[str, Any]) -> tuple[str, str, str, Any]:
    """(bank name, source, SHA-256 of its schema, sufficient statistics of its training rows)."""
    bank = load_bank(cfg, node_config)
    schema = schema_of(cfg)
    # "file": a real bank's CSV (deployment); "simulation": a slice of the embedded data set.
    source = "file" if "data-path" in node_config else "simulation"
    return bank.name, source, schema.sha256, compute_stats(bank.train, schema)


def train(cfg: RunConfig, node_config: Mapping[str, Any], weights: Sequence[np.ndarray], prep_json: str,
          server_round: int, proximal_mu: float = 0.0) -> tuple[list[np.ndarray], float, int]:
    """(new weights, last epoch's loss, training rows): local training from the global weights.

    FedProx's `proximal-mu` adds the proximal term.
    """
    bank = load_bank(cfg, node_config)
    key, model = _model(cfg, prep_json, "partition-id" in node_config)
    labels = bank.train[schema_of(cfg).target].to_numpy()
    loss = mdl.fit(model, weights, _inputs(key, bank, "train", model), labels, cfg.local_epochs,
                   cfg.batch_size, cfg.positive_weight, message_seed(cfg, server_round, bank.name), proximal_mu)
    return model.get_weights(), loss, len(labels)


def evaluate(cfg: RunConfig, node_config: Mapping[str, Any], weights: Sequence[np.ndarray],
             prep_json: str) -> dict[str, int | float | list[int]]:
    """Shareable summary of the global model's scores on this bank's validation rows."""
    bank = load_bank(cfg, node_config)
    key, model = _model(cfg, prep_json, "partition-id" in node_config)
    model.set_weights(list(weights))
    labels = bank.val[schema_of(cfg).target].to_numpy()
    scores = mdl.predict(model, _inputs(key, bank, "val", model))
    summary = metrics.summarise(scores, labels, cfg.threshold, cfg.histogram_bins)
    summary["loss"] = summary["sum-logloss"] / max(summary["num-examples"], 1)
    summary["auc"] = metrics.exact_auc(scores, labels)
    return summary


def privacy_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Client-side DP clipping on train messages, when the run config asks for it.

    Flower's clipping mods fail on messages without a clipping norm, so they
    are applied only in the client-side privacy modes.
    """
    mode = context.run_config.get("privacy.mode", "none")
    if mode == "client-fixed":
        return fixedclipping_mod(msg, context, call_next)
    if mode == "client-adaptive":
        return adaptiveclipping_mod(msg, context, call_next)
    return call_next(msg, context)
