"""What a bank does when the ServerApp asks: statistics, feature profile, training, evaluation, reasons.

The Keras model is built once per process and reused across messages (and
across banks in a simulation worker); `Trainer.fit` resets its optimizer and
random state from a per-message seed so that results never depend on what the
process ran before.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod

from fedcredit.core import groups, metrics
from fedcredit.core.banks import BankData, holdout_set, load_bank, schema_of
from fedcredit.core.config import BankLimits, ConfigError, RunConfig, parse_run_config
from fedcredit.core.loading import DataValidationError
from fedcredit.core.partition import PartitionError
from fedcredit.core.profile import SplitProfile, layout_of, split_profile
from fedcredit.core.schema import SchemaError, resolve_schema_path
from fedcredit.core.stats import Preprocessing, compute_stats
from fedcredit.federation import protocol
from fedcredit.federation.outputs import KEPT_MODEL, write_atomically

if TYPE_CHECKING:  # TensorFlow only where a model is built: key-exchange stages start fast
    from fedcredit.core import model as mdl

_MODELS: dict[str, Any] = {}
# Models kept per process: a sweep alternates between a few preprocessings (one per seed) and architectures.
MODELS_KEPT = 4
_INPUTS: dict[tuple[str, str, str], Any] = {}


def _single_threaded() -> None:
    """Simulation workers share the machine's cores: one TensorFlow thread each avoids oversubscription."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already running in this process: keep its threads
        pass


def _model(cfg: RunConfig, prep_json: str, simulation: bool = False) -> tuple[str, Any, mdl.Trainer]:
    """(key, model, its Trainer) for this preprocessing and architecture: built on first use, then reused."""
    from fedcredit.core import model as mdl

    # The schema's digest: the same columns with other orders or monotone constraints build another model.
    architecture = f"{cfg.hidden_units}|{cfg.dropout}|{cfg.l2}|{cfg.learning_rate}|{cfg.monotone_constraints}"
    key = hashlib.sha256(f"{prep_json}|{architecture}|{schema_of(cfg).sha256}".encode()).hexdigest()
    if key not in _MODELS:
        if simulation:
            _single_threaded()
        while len(_MODELS) >= MODELS_KEPT:  # the oldest model and its cached inputs go
            oldest = next(iter(_MODELS))
            del _MODELS[oldest]
            for cached in [k for k in _INPUTS if k[0] == oldest]:
                del _INPUTS[cached]
        model = mdl.build_model(Preprocessing.from_json(prep_json), mdl.ModelSpec.of(cfg, schema_of(cfg)))
        _MODELS[key] = mdl.Trainer(model, cfg.learning_rate)
    trainer = _MODELS[key]
    return key, trainer.model, trainer


def _inputs(key: str, bank: BankData, split: str, trainer: mdl.Trainer):
    """The bank's model inputs (validation) or features (training), computed once per process.

    A bank too big for that (`Trainer.holds`) gets its rows as `FrameRows`:
    trained on and scored a chunk at a time, so memory does not grow with
    its rows beyond the rows themselves.
    """
    from fedcredit.core import model as mdl

    cache_key = (key, bank.name, split)
    if cache_key not in _INPUTS:
        rows = mdl.FrameRows(getattr(bank, split))
        if not trainer.holds(len(rows)):
            return rows
        _INPUTS[cache_key] = trainer.features(rows) if split == "train" else mdl.to_inputs(rows.frame, trainer.model)
    return _INPUTS[cache_key]


def message_seed(cfg: RunConfig, server_round: int, bank_name: str) -> int:
    """Distinct per run seed, round and bank; stable across processes."""
    return (cfg.seed * 1_000_003 + server_round * 10_007 + zlib.crc32(bank_name.encode())) % (2**31 - 1)


# A bank's own mistakes (its file, the schema, the split, the config): the reply says what
# is wrong in one line, without a traceback in the coordinator's log.
USER_ERRORS = (DataValidationError, SchemaError, PartitionError, ConfigError)
ERROR_CODE = protocol.ERROR_CODE


def raw_config(msg: Message, context: Context) -> dict[str, Any]:
    """The run config this message is answered with: the run's, with a sweep variant's overrides on top."""
    return {**context.run_config, **protocol.variant_overrides(msg.content)}


def run_config(raw: Mapping[str, Any], app_dir: str | Path, node_config: Mapping[str, Any] | None = None) -> RunConfig:
    """The run config as this bank applies it.

    A relative schema path is the app's own file (it travels in the FAB). A
    bank may set `schema-path` in its node config to a copy it keeps itself;
    the coordinator refuses it unless its SHA-256 is the consortium's. The
    bank's own limits (`BankLimits`, node config) bound what the run may ask.
    """
    cfg = parse_run_config(raw)
    BankLimits.from_node_config(node_config or {}).check(cfg)
    path = str((node_config or {}).get("schema-path", cfg.schema_path))
    return dataclasses.replace(cfg, schema_path=resolve_schema_path(path, app_dir))


def answer(msg: Message, build: Callable[[], RecordDict]) -> Message:
    """The reply to `msg`: what `build` returns, or the bank's error in one line."""
    try:
        return Message(content=build(), reply_to=msg)
    except USER_ERRORS as err:
        # A data file's problems leave the bank as kinds, schema columns and lines only (no cell value).
        text = err.public_text() if isinstance(err, DataValidationError) else str(err)
        reason = " ".join(f"{type(err).__name__}: {text}".split())
        print(f"fedcredit bank: {msg.metadata.message_type} refused: {err}", flush=True)  # the bank's own log
        return Message(Error(code=ERROR_CODE, reason=reason), reply_to=msg)


def statistics(cfg: RunConfig, node_config: Mapping[str, Any]) -> tuple[str, str, str, Any]:
    """(bank name, source, SHA-256 of its schema, sufficient statistics of its training rows)."""
    bank = load_bank(cfg, node_config)
    schema = schema_of(cfg)
    # "file": a real bank's CSV (deployment); "simulation": a slice of the embedded data set.
    source = "file" if "data-path" in node_config else "simulation"
    return bank.name, source, schema.sha256, compute_stats(bank.train, schema)


def profile(cfg: RunConfig, node_config: Mapping[str, Any], prep_json: str) -> tuple[SplitProfile, SplitProfile]:
    """(training, validation) counts of this bank's rows over the global bins: no value, no row.

    The vocabulary the coordinator sends sets the reply's size: one longer than
    the run's `max-categories` (which no honest preprocessing exceeds) is refused.
    """
    bank = load_bank(cfg, node_config)
    schema = schema_of(cfg)
    try:
        layout = layout_of(schema, Preprocessing.from_json(prep_json), cfg.limits.max_categories)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"the profile query's preprocessing cannot be used: {err}") from None
    return split_profile(bank.train, schema.target, layout), split_profile(bank.val, schema.target, layout)


def train(
    cfg: RunConfig,
    node_config: Mapping[str, Any],
    weights: Sequence[np.ndarray],
    prep_json: str,
    server_round: int,
    proximal_mu: float = 0.0,
) -> tuple[list[np.ndarray], float, int]:
    """(new weights, last epoch's loss, training rows): local training from the global weights.

    FedProx's `proximal-mu` adds the proximal term. `privacy.dp-sgd = true`:
    DP-SGD, and the bank itself refuses a round that would take its own
    borrowers beyond `privacy.target-epsilon` (it does not rely on the
    coordinator's check); its epsilon goes to its own log.
    """
    from fedcredit.core import model as mdl
    from fedcredit.core.dpsgd import DpSgd

    bank = load_bank(cfg, node_config)
    labels = bank.train[schema_of(cfg).target].to_numpy()
    dp = None
    if cfg.privacy_dp_sgd:
        dp = DpSgd(cfg.privacy_example_clipping_norm, cfg.privacy_example_noise_multiplier)
        spent = _dp_sgd_epsilon(cfg, bank.name, len(labels), server_round)
    key, model, trainer = _model(cfg, prep_json, "partition-id" in node_config)
    seed = message_seed(cfg, server_round, bank.name)
    options = mdl.FitOptions(
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        positive_weight=cfg.positive_weight,
        seed=seed if dp is None else dp_sgd_seed(node_config, seed),
        proximal_mu=proximal_mu,
        dp=dp,
    )
    loss = trainer.fit(weights, _inputs(key, bank, "train", trainer), labels, options)
    if dp is not None:
        print(f"fedcredit bank {bank.name}: DP-SGD round {server_round}, epsilon {spent:.4g} so far", flush=True)
    return model.get_weights(), loss, len(labels)


DP_SGD_REPRODUCIBLE = "dp-sgd-reproducible"  # node config: a bank that wants DP-SGD runs reproducible (tests only)


def dp_sgd_seed(node_config: Mapping[str, Any], seed: int) -> int:
    """The seed of DP-SGD's batches and noise: fresh from the OS at a real bank, the message seed in a simulation.

    The run seed is set by the coordinator and the message seed is public, so
    noise drawn from it could be recomputed and subtracted by whoever knows
    them, and the secret sampling the accounting assumes would be known: a bank
    with real borrowers (node config `data-path`) draws its seed from
    `secrets`. A simulation's virtual banks (`partition-id`) keep the message
    seed so runs are reproducible; a bank may ask for that too with node config
    `dp-sgd-reproducible = true` (tests, never on real rows).
    """
    if "data-path" not in node_config or node_config.get(DP_SGD_REPRODUCIBLE) is True:
        return seed
    return secrets.randbits(63)


def _dp_sgd_epsilon(cfg: RunConfig, name: str, rows: int, server_round: int) -> float:
    """This bank's epsilon after `server_round` rounds; a ConfigError if that is beyond the run's budget."""
    from fedcredit.federation import accounting

    spent = accounting.bank_epsilon(cfg, rows, server_round)
    if cfg.privacy_target_epsilon > 0 and spent > cfg.privacy_target_epsilon:
        raise ConfigError(
            f"bank {name}: DP-SGD round {server_round} would take its epsilon to {spent:.3g}, beyond "
            f"privacy.target-epsilon = {cfg.privacy_target_epsilon:g}: it does not train"
        )
    return spent


def evaluate(
    cfg: RunConfig, node_config: Mapping[str, Any], weights: Sequence[np.ndarray], prep_json: str
) -> dict[str, int | float | list[int]]:
    """Shareable summary of the global model's scores on this bank's validation rows."""
    bank = load_bank(cfg, node_config)
    key, model, trainer = _model(cfg, prep_json, "partition-id" in node_config)
    model.set_weights(list(weights))
    schema = schema_of(cfg)
    labels = bank.val[schema.target].to_numpy()
    return _summary(cfg, model, _inputs(key, bank, "val", trainer), labels, groups.group_index(bank.val, schema))


# What counts a bank's reasons (`fedcredit.risk.reason_counts.bank_counts`, handed in by client_app.py: the
# federation layer does not import the risk tools): (model, validation rows, schema, threshold, rows to check
# monotonicity on, seed) -> the counts of `protocol.reasons_reply`.
ReasonCounter = Callable[[Any, Any, Any, float, int, int], dict[str, Any]]


def reasons(
    cfg: RunConfig, node_config: Mapping[str, Any], weights: Sequence[np.ndarray], prep_json: str, count: ReasonCounter
) -> dict[str, Any]:
    """Counts for `protocol.reasons_reply`: the final model's reasons among this bank's declined validation loans,
    and how many of (at most `MONOTONE_ROWS` of) its validation rows break each declared monotone constraint.

    The model is this process's, built from the preprocessing (as for
    evaluate) with the final weights. The counts add up over banks, so the
    coordinator can pool them (in secure mode it sees only the sum); no loan,
    score or reason of a loan leaves the bank. Its own figures go to its log.
    """
    bank = load_bank(cfg, node_config)
    _, model, _ = _model(cfg, prep_json, "partition-id" in node_config)
    model.set_weights(list(weights))
    counts = count(model, bank.val, schema_of(cfg), cfg.threshold, protocol.MONOTONE_ROWS, cfg.seed)
    print(
        f"fedcredit bank {bank.name}: {counts['declined']} of {counts['rows']} validation loans declined at PD >= "
        f"{cfg.threshold:g}, {counts['no-reason']} without a reason; {sum(counts['monotone-violations'])} "
        f"(row, constraint) violations of the monotone constraints on {counts['monotone-rows']} rows",
        flush=True,
    )
    return counts


# The three models each bank compares after the last round, in order of preference on ties.
CANDIDATES = protocol.CANDIDATES


def _summary(
    cfg: RunConfig, model: Any, inputs: Any, labels: np.ndarray, group_index: Mapping[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """What a bank may share of a model's scores: the summary, its loss and its exact AUC.

    `group_index` (protected attribute -> each row's group): also each
    group's histograms, for the fair-lending figures; counts only.
    """
    from fedcredit.core import model as mdl

    scores = mdl.predict(model, inputs)
    summary = metrics.summarise(scores, labels, cfg.threshold, cfg.histogram_bins)
    summary["loss"] = summary["sum-logloss"] / max(summary["num-examples"], 1)
    summary["auc"] = metrics.exact_auc(scores, labels)
    names = groups.group_names(schema_of(cfg)) if group_index else {}
    for attr in sorted(group_index or {}):
        summary[protocol.GROUP_PREFIX + attr] = metrics.group_histograms(
            scores,
            labels,
            group_index[attr],
            len(names[attr]),
            cfg.histogram_bins,  # type: ignore[index]
        )
    return summary


def _own_holdout(cfg: RunConfig, bank: BankData) -> Any:
    """Simulation with the region split: the hold-out loans of the states this bank serves."""
    schema = schema_of(cfg)
    if cfg.partitioning != "region" or not schema.partition or schema.partition not in bank.train:
        return None
    test = holdout_set(cfg)
    own = test[test[schema.partition].isin(set(bank.train[schema.partition]))]
    return own.reset_index(drop=True) if len(own) else None


def choose(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """The model a bank keeps: the global one, unless another beats it clearly on the validation rows.

    "Clearly" means by more than the standard error of the global model's
    validation AUC: with a few dozen defaults per bank, the best of three
    AUCs is often best by chance, and such a pick scored worse than the
    global model on the bank's own hold-out loans (benchmarks/personalise.py).
    """
    glob = summaries["global"]
    auc = glob["auc"]
    margin = metrics.auc_standard_error(auc, glob["num-bad"], glob["num-examples"] - glob["num-bad"])
    rivals = [n for n in CANDIDATES[1:] if np.isfinite(summaries[n]["auc"])]
    if not np.isfinite(auc) or not np.isfinite(margin) or not rivals:
        return "global"
    best = max(rivals, key=lambda n: (summaries[n]["auc"], -CANDIDATES.index(n)))
    return best if summaries[best]["auc"] > auc + margin else "global"


def personalise(
    cfg: RunConfig,
    node_config: Mapping[str, Any],
    weights: Sequence[np.ndarray],
    prep_json: str,
    bank_dir: str | None = None,
) -> tuple[str, dict[str, dict[str, Any]]]:
    """(the model this bank keeps, {summary name: validation (and own hold-out) summary}).

    The bank compares the final global model, that model fine-tuned on its own
    training rows (`personalize.*`), and the same architecture trained from
    scratch on its own rows for the federation's epochs (`num-server-rounds` x
    `local-epochs`), all on its validation rows, and keeps the global one
    unless another is clearly better there (`choose`). The kept model is written at the bank
    (node config `model-dir`, or `bank_dir` in simulation); only the summaries
    leave it. Which model it keeps: `choose`.
    """
    from fedcredit.core import model as mdl

    bank = load_bank(cfg, node_config)
    schema = schema_of(cfg)
    prep, spec = Preprocessing.from_json(prep_json), mdl.ModelSpec.of(cfg, schema)
    y_train, y_val = bank.train[schema.target].to_numpy(), bank.val[schema.target].to_numpy()
    seed = message_seed(cfg, cfg.num_server_rounds + 1, bank.name)
    models = {name: mdl.build_model(prep, spec) for name in CANDIDATES}
    models["global"].set_weights(list(weights))
    rows = mdl.FrameRows(bank.train)
    tuner = mdl.Trainer(models["personalised"], cfg.personalize_learning_rate, layers=cfg.personalize_layers)
    features = tuner.features(rows) if tuner.holds(len(rows)) else rows  # a big bank's rows are streamed
    tuner.fit(
        weights, features, y_train, mdl.FitOptions(cfg.personalize_epochs, cfg.batch_size, cfg.positive_weight, seed)
    )
    alone = mdl.Trainer(models["local-only"], cfg.learning_rate)
    epochs = cfg.num_server_rounds * cfg.local_epochs
    alone.fit(
        models["local-only"].get_weights(),
        features,
        y_train,
        mdl.FitOptions(epochs, cfg.batch_size, cfg.positive_weight, seed),
    )
    x_val = mdl.FrameRows(bank.val)  # made into inputs a chunk at a time: the same scores, bounded memory
    summaries = {name: _summary(cfg, model, x_val, y_val) for name, model in models.items()}
    kept = choose(summaries)
    own = _own_holdout(cfg, bank) if "partition-id" in node_config and cfg.holdout_eval else None
    if own is not None:
        x_own, y_own = mdl.FrameRows(own), own[schema.target].to_numpy()
        summaries.update({f"holdout-{name}": _summary(cfg, model, x_own, y_own) for name, model in models.items()})
    aucs = " / ".join(f"{summaries[n]['auc']:.4f}" for n in CANDIDATES)
    print(
        f"fedcredit bank {bank.name}: keeps the {kept} model (validation AUC global / personalised / "
        f"local-only {aucs})",
        flush=True,
    )
    target_dir = node_config.get("model-dir") or bank_dir
    if target_dir:
        Path(target_dir).mkdir(parents=True, exist_ok=True)
        write_atomically(Path(target_dir) / KEPT_MODEL, models[kept].save, suffix=".partial.keras")
        print(f"fedcredit bank {bank.name}: kept model written to {Path(target_dir) / KEPT_MODEL}", flush=True)
    return kept, summaries


def privacy_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Client-side DP clipping on train messages, when the run config asks for it.

    Flower's clipping mods fail on messages without a clipping norm, so they
    are applied only in the client-side privacy modes. They also insist on
    exactly one ConfigRecord, so the preprocessing and sweep records are set
    aside while they look and handed back to the handler.
    """
    mode = raw_config(msg, context).get("privacy.mode", "none")
    if mode not in ("client-fixed", "client-adaptive"):
        return call_next(msg, context)
    aside = {
        name: msg.content.config_records.pop(name)
        for name in (protocol.PREPROCESSING, protocol.RUN_CONFIG)
        if name in msg.content.config_records
    }

    def handler(inner: Message, ctx: Context) -> Message:
        for name, record in aside.items():
            inner.content[name] = record
        return call_next(inner, ctx)

    mod = fixedclipping_mod if mode == "client-fixed" else adaptiveclipping_mod
    return mod(msg, context, handler)
