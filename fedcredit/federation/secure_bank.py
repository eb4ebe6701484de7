"""A bank's side of secure mode: the key stages, and masking whatever it would have sent.

`stage` answers the key-exchange queries (no model, no TensorFlow: in a
deployment each message is a fresh process). When the app ships a consortium
roster, the bank signs the keys it advertises and verifies every peer's signed
keys before it derives a pair secret or encrypts a share (`signed_keys`): a
peer whose keys fail aborts the sum, naming that bank. `secure_mod` wraps the
statistics, train and evaluate handlers like Flower's own mods: the handler
computes the bank's numbers as in plain mode, and the mod turns them into
one vector, checks it (finite; an update within `privacy.max-update-norm`
of the global model, since the coordinator can no longer look), masks it and
replies with the masked vector only. The bank's own figures go to its log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.supercore import log

from fedcredit.core.banks import node_bank_name
from fedcredit.core.stats import Stats
from fedcredit.federation import protocol, secagg, signed_keys
from fedcredit.federation.protocol import SECAGG, ProtocolError
from fedcredit.federation.secagg import BankSession, SecAggError
from fedcredit.federation.signed_keys import SumId
from fedcredit.identity.bank import BankIdentity, bank_identity

SESSIONS = "secagg-sessions"  # Context.state: the sessions this bank advertised keys in, during this run


class Withheld(Exception):
    """The bank's own check refused to send this vector; the message says why."""


def _load(context: Context, session: str) -> BankSession:
    state = context.state.config_records.get(SECAGG)
    if state is None or state.get("session") != session:
        raise SecAggError(f"no key exchange of session {session} at this bank (it may have restarted)")
    return secagg.session_from_state(state)


def _save(context: Context, bank: BankSession) -> None:
    context.state.config_records[SECAGG] = ConfigRecord(secagg.session_to_state(bank))


def identity_of(context: Context, app_dir: str | Path) -> BankIdentity | None:
    """The bank's signing key and pinned roster; None when identity is off (no roster: a simulation)."""
    return bank_identity(context.node_config, app_dir, node_bank_name(context.node_config))


def _sum_id(context: Context, bank: BankSession) -> SumId:
    return SumId(int(context.run_id), bank.session, bank.kind, bank.round, bank.threshold)


def _first_use(context: Context, session: str) -> None:
    """A bank advertises keys once per session of a run, so its signature for a sum is never good for another."""
    record = context.state.config_records.get(SESSIONS)
    seen = list(record["seen"]) if record is not None else []
    if session in seen:
        raise SecAggError(f"session {session} was used before in this run: refusing to advertise keys for it again")
    context.state.config_records[SESSIONS] = ConfigRecord({"seen": [*seen, session]})


def stage(msg: Message, context: Context, app_dir: str | Path) -> RecordDict:
    """One key stage: advertise fresh keys, share encrypted secret shares, or reveal shares for unmasking."""
    record = msg.content.config_records[SECAGG]
    name, session = str(record["stage"]), str(record["session"])
    if name == "advertise":
        threshold = int(record["threshold"])
        identity = identity_of(context, app_dir)
        bank = BankSession.start(session, msg.metadata.dst_node_id, threshold)
        bank.kind, bank.round = str(record["sum"]), int(record["round"])
        _first_use(context, session)
        reply: dict[str, Any] = {"pk1": bank.pk1, "pk2": bank.pk2}
        if identity is not None:
            signature = signed_keys.sign_keys(identity, _sum_id(context, bank), bank.node, bank.pk1, bank.pk2)
            reply.update(bank=identity.name, signature=signature)
    elif name == "share":
        bank = _load(context, session)
        owners, pk1s, pk2s = record["key-owners"], record["pk1s"], record["pk2s"]
        if 2 * bank.threshold <= len(owners):
            # More than half of the banks must take part in rebuilding any secret (SecAgg's honest-majority bound).
            raise SecAggError(f"threshold {bank.threshold} is not above half of the {len(owners)} banks")
        public_keys = dict(zip(owners, zip(pk1s, pk2s, strict=True), strict=True))
        identity = identity_of(context, app_dir)
        if identity is not None:  # before any pair secret is derived or any share encrypted
            banks, signatures = record.get("banks", []), record.get("signatures", [])
            bank.banks = signed_keys.verify_directory(
                identity, _sum_id(context, bank), bank.node, public_keys, banks, signatures
            )
        shares = bank.share(public_keys)
        reply = {"destinations": list(shares), "ciphertexts": list(shares.values())}
    elif name == "reveal":
        bank = _load(context, session)
        shares = bank.reveal(list(record["active"]), list(record["dropped"]))
        reply = {"owners": list(shares), "shares": list(shares.values())}
    else:
        raise SecAggError(f"unknown secure-aggregation stage {name!r}")
    _save(context, bank)
    return RecordDict({SECAGG: ConfigRecord(reply)})


def _vector(kind: str, request: RecordDict, reply: RecordDict, record: ConfigRecord) -> np.ndarray:
    """What this bank would have sent, as one vector; raises Withheld if its own checks refuse it."""
    if kind == "query":
        numeric = {c: tuple(v) for c, v in reply[protocol.NUMERIC_STATS].items()}
        categorical = {c: json.loads(v) for c, v in reply[protocol.CATEGORY_COUNTS].items()}
        stats = Stats(numeric, categorical, int(reply[protocol.BANK_ROWS]["rows"]))
        return protocol.statistics_vector(stats, json.loads(str(record[protocol.LAYOUT])))
    if kind == "train":
        weights = reply[protocol.ARRAYS].to_numpy_ndarrays()
        metrics = reply[protocol.METRICS]
        global_weights = request[protocol.ARRAYS].to_numpy_ndarrays()
        if not all(np.isfinite(w).all() for w in weights):
            raise Withheld("the bank's update has NaN or infinite weights")
        distance = protocol.update_distance(weights, global_weights)
        bound = float(record[protocol.MAX_UPDATE_NORM])
        log(INFO, "fedcredit bank (secure mode): update norm %.4g, train loss %.4f", distance, metrics["train-loss"])
        if distance > bound:
            raise Withheld(f"its update norm {distance:.3g} exceeds privacy.max-update-norm={bound:g}")
        weight = float(metrics[str(record[protocol.WEIGHT_KEY])])
        vector = protocol.train_vector(weights, float(metrics["train-loss"]), int(metrics["num-examples"]), weight)
        if protocol.EVALUATION in reply.metric_records:  # folded evaluation: the summary rides in the same sum
            summary = reply[protocol.EVALUATION]
            vector = np.concatenate([vector, protocol.summary_vector(summary, len(summary["hist-bad"]))])
        return vector
    if kind == protocol.PROFILE:
        return protocol.profile_vector(reply, json.loads(str(record[protocol.LAYOUT])))
    if kind == protocol.REASONS:
        return protocol.reasons_vector(reply)
    if kind == protocol.PERSONALISE:
        kept = str(reply[protocol.PERSONALISATION]["kept"])
        summaries = {name: reply[name] for name in protocol.CANDIDATES}
        return protocol.personalise_vector(kept, summaries, len(summaries["global"]["hist-bad"]))
    summary = reply[protocol.METRICS]
    log(
        INFO,
        "fedcredit bank (secure mode, not sent): own validation AUC %.4f, loss %.4f on %d rows",
        summary["auc"],
        summary["loss"],
        summary["num-examples"],
    )
    return protocol.summary_vector(summary, len(summary["hist-bad"]))


def secure_mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Outermost mod: with a `secagg` record, reply with the masked vector of what the handler computed."""
    record = msg.content.config_records.get(SECAGG)
    if record is None:
        return call_next(msg, context)
    # Off the message before the handler and Flower's DP mods see it (they insist on one ConfigRecord);
    # the coordinator gives every bank's message its own RecordDict, so nothing else shares it.
    msg.content.config_records.pop(SECAGG)
    try:
        _check_sum(msg, _load(context, str(record["session"])))  # before the handler spends any work on it
    except (SecAggError, KeyError, TypeError, ValueError) as err:
        return _cannot(msg, err)
    reply = call_next(msg, context)
    if reply.has_error():  # the bank failed: the coordinator counts it as dropped out
        return reply
    try:
        return Message(content=_masked(msg, reply, record, context), reply_to=msg)
    except (SecAggError, ProtocolError, KeyError, TypeError, ValueError) as err:
        return _cannot(msg, err)


def _cannot(msg: Message, err: Exception) -> Message:
    log(WARNING, "fedcredit bank (secure mode): cannot take part in this sum: %s", err)
    return Message(Error(code=protocol.ERROR_CODE, reason=f"secure aggregation: {err}"), reply_to=msg)


def _check_sum(msg: Message, bank: BankSession) -> None:
    """The message to mask is the sum the keys were advertised (and, with a roster, signed) for: one sum only."""
    kind, round_ = msg.metadata.message_type, protocol.sum_round(msg.content)
    if (kind, round_) != (bank.kind, bank.round):
        raise SecAggError(
            f"the keys of session {bank.session} were advertised for the {bank.kind} sum of round {bank.round}, "
            f"not for this {kind} message of round {round_}"
        )


def _masked(msg: Message, reply: Message, record: ConfigRecord, context: Context) -> RecordDict:
    bank = _load(context, str(record["session"]))  # its sum was checked by secure_mod before the handler ran
    ciphertexts = dict(zip(record["sources"], record["ciphertexts"], strict=True))
    content = RecordDict()
    if msg.metadata.message_type == "query":
        content[protocol.BANK_INFO] = reply.content[protocol.BANK_INFO]
    try:
        vector = secagg.encode(_vector(msg.metadata.message_type, msg.content, reply.content, record))
    except (Withheld, SecAggError) as err:
        log(WARNING, "fedcredit bank (secure mode): withholding its %s vector: %s", msg.metadata.message_type, err)
        bank.mask(None, ciphertexts)
        content[SECAGG] = ConfigRecord({"withheld": str(err)})
    else:
        content[SECAGG] = ConfigRecord({"masked": secagg.to_bytes(bank.mask(vector, ciphertexts))})
    _save(context, bank)
    return content


def answer_stage(msg: Message, context: Context, app_dir: str | Path) -> Message:
    """The reply to a key-stage query; a refused stage is an error reply naming the check.

    `app_dir`: the app's directory, where a consortium roster ships (`fedcredit.identity`).
    """
    try:
        return Message(content=stage(msg, context, app_dir), reply_to=msg)
    except (SecAggError, ProtocolError, KeyError, TypeError, ValueError) as err:
        log(WARNING, "fedcredit bank (secure mode): key stage refused: %s", err)
        return Message(Error(code=protocol.ERROR_CODE, reason=f"secure aggregation: {err}"), reply_to=msg)
