"""history.json as typed records: one reader and one writer for every tool.

The coordinator writes the file after every round; the report, the
baselines, the comparison and the tests read it. Reading it through these
dataclasses instead of nested dict look-ups means one place knows the keys,
a key that older files lack gets its default here (not a `.get(..) or {}`
at each use), and a value of the wrong type stops with the file and the key
named. Keys this module does not know are kept in `extra` and written back
unchanged, so a newer writer's keys survive an older tool's round trip.

No Flower import: the format is plain JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fedcredit.federation.outputs import write_json

Metrics = dict[str, float | int | None]
"""Metric name -> value, e.g. {"auc": 0.71, "num-examples": 800}; null (None) where a metric is undefined."""

T = TypeVar("T")


class HistoryError(ValueError):
    """A history.json that is not a fedcredit run history; the message names the file and the key."""


class _Wrong(Exception):
    """A type error at one key path, turned into a HistoryError naming the file by `History.from_json`."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(where, problem)
        self.where, self.problem = where, problem


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value), type(value).__name__)


def _expect(expected: str) -> Callable[[Any, str], _Wrong]:
    return lambda value, where: _Wrong(where, f"must be {expected}, not {_kind(value)}")


# --- type checks: (value, key path) -> the value, or _Wrong ------------------------------


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _expect("a string")(value, where)
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expect("an integer")(value, where)
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expect("a number")(value, where)
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _expect("true or false")(value, where)
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _expect("an object")(value, where)
    return value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise _expect("a list of strings")(value, where)
    return [_str(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _mapping(check: Callable[[Any, str], T]) -> Callable[[Any, str], dict[str, T]]:
    return lambda value, where: {k: check(v, f"{where}.{k}") for k, v in _object(value, where).items()}


def _or_null(check: Callable[[Any, str], T]) -> Callable[[Any, str], T | None]:
    return lambda value, where: None if value is None else check(value, where)


def _metric_value(value: Any, where: str) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expect("a number or null")(value, where)
    return value


_metrics = _mapping(_metric_value)
_reasons = _mapping(_str)


class _Keys:
    """One JSON object taken key by key, each value type-checked; the keys never taken are `rest` (extra)."""

    def __init__(self, value: Any, where: str) -> None:
        self.rest = dict(_object(value, where))
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def take(self, key: str, check: Callable[[Any, str], T], default: T) -> T:
        """The checked value of `key`, or `default` when the file has no such key (an older file)."""
        if key not in self.rest:
            return default
        return check(self.rest.pop(key), self.at(key))

    def require(self, key: str, check: Callable[[Any, str], T], what: str) -> T:
        if key not in self.rest:
            raise _Wrong(self.at(key), f"is missing: {what}")
        return check(self.rest.pop(key), self.at(key))


def _with_extra(known: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Known keys first (in the coordinator's order), then the unknown ones as read."""
    return {**known, **{k: v for k, v in extra.items() if k not in known}}


def metric(values: Metrics | None, name: str) -> float | None:
    """One metric as a float, None when absent or undefined (null, NaN)."""
    value = (values or {}).get(name)
    return None if value is None or not math.isfinite(value) else float(value)


# --- the records ------------------------------------------------------------------------


@dataclass
class PhaseRecord:
    """One phase (train or evaluate) of one round: which banks replied, failed or stayed silent, and their figures."""

    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # bank -> the ClientApp's error, whole
    refused: dict[str, str] = field(default_factory=dict)  # bank -> why its reply broke the protocol
    clipped: dict[str, float] = field(default_factory=dict)  # bank -> factor its update was scaled down by
    suspicious: dict[str, float] = field(default_factory=dict)  # bank -> cosine of an update pointing away
    withheld: dict[str, str] = field(default_factory=dict)  # secure mode: bank -> why its own check kept its vector
    missing: list[str] = field(default_factory=list)
    not_sampled: list[str] = field(default_factory=list)  # banks of the run not asked (disconnected, fraction-*)
    pooled: Metrics | None = None  # evaluate: pooled metrics; train: mean train loss; None: no bank replied
    banks: dict[str, Metrics] = field(default_factory=dict)
    not_aggregated: str | None = None  # why the strategy aggregated nothing this round
    leave_one_out_auc: dict[str, float] = field(default_factory=dict)  # evaluate: pooled AUC without each bank
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sampled(self) -> int:
        """Banks asked in this phase."""
        return len(self.ok) + len(self.failed) + len(self.refused) + len(self.withheld) + len(self.missing)

    @classmethod
    def _parse(cls, value: Any, where: str) -> PhaseRecord:
        keys = _Keys(value, where)
        return cls(
            ok=keys.take("ok", _strings, []),
            failed=keys.take("failed", _reasons, {}),
            refused=keys.take("refused", _reasons, {}),
            clipped=keys.take("clipped", _mapping(_number), {}),
            suspicious=keys.take("suspicious", _mapping(_number), {}),
            withheld=keys.take("withheld", _reasons, {}),
            missing=keys.take("missing", _strings, []),
            not_sampled=keys.take("not-sampled", _strings, []),
            pooled=keys.take("pooled", _or_null(_metrics), None),
            banks=keys.take("banks", _mapping(_or_null(_metrics)), {}),
            not_aggregated=keys.take("not-aggregated", _or_null(_str), None),
            leave_one_out_auc=keys.take("leave-one-out-auc", _mapping(_number), {}),
            extra=keys.rest,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": list(self.ok),
            "failed": dict(self.failed),
            "refused": dict(self.refused),
            "clipped": dict(self.clipped),
            "missing": list(self.missing),
            "pooled": self.pooled,
            "banks": dict(self.banks),
        }
        if self.suspicious:  # train: updates that pointed away from the other banks'
            out["suspicious"] = dict(self.suspicious)
        if self.withheld:  # secure mode only
            out["withheld"] = dict(self.withheld)
        if self.not_sampled:  # absent means every bank of the run was asked
            out["not-sampled"] = list(self.not_sampled)
        if self.not_aggregated is not None:
            out["not-aggregated"] = self.not_aggregated
        if self.leave_one_out_auc:  # plain mode with two or more banks evaluated
            out["leave-one-out-auc"] = dict(self.leave_one_out_auc)
        return _with_extra(out, self.extra)


@dataclass
class RoundEntry:
    """One round of the run. Round 0 (the initial model) has only `round` and, with hold-out evaluation, `holdout`."""

    round: int
    holdout: Metrics | None = None  # the global model on the coordinator's hold-out set (simulation only)
    aggregated: bool | None = None  # False: the global weights did not change this round
    train: PhaseRecord | None = None
    evaluate: PhaseRecord | None = None
    seconds: float | None = None
    privacy: dict[str, Any] | None = None  # the epsilon spent up to this round, with differential privacy
    checkpoint_sha256: str | None = None  # of checkpoints/round-NNN.npz: resume refuses a file that differs
    # protected attribute -> pooled validation approval rate per group, worst adverse impact ratio, four-fifths flag
    fairness: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pooled(self) -> Metrics | None:
        """Pooled validation metrics of this round (None: not evaluated, or no bank replied)."""
        return self.evaluate.pooled if self.evaluate is not None else None

    @property
    def pooled_auc(self) -> float | None:
        return metric(self.pooled, "auc")

    @property
    def holdout_auc(self) -> float | None:
        return metric(self.holdout, "auc")

    @property
    def bank_metrics(self) -> dict[str, Metrics]:
        """Each bank's validation metrics (empty when the round was not evaluated)."""
        return {b: m or {} for b, m in self.evaluate.banks.items()} if self.evaluate is not None else {}

    @property
    def failures(self) -> dict[str, str]:
        """Bank -> error or refusal reason, of training and then evaluation."""
        phases = [p for p in (self.train, self.evaluate) if p is not None]
        return {bank: why for p in phases for bank, why in {**p.failed, **p.refused}.items()}

    @classmethod
    def _parse(cls, value: Any, where: str) -> RoundEntry:
        keys = _Keys(value, where)
        return cls(
            round=keys.require("round", _int, "every round entry has its number"),
            holdout=keys.take("holdout", _or_null(_metrics), None),
            aggregated=keys.take("aggregated", _or_null(_bool), None),
            train=keys.take("train", _or_null(PhaseRecord._parse), None),
            evaluate=keys.take("evaluate", _or_null(PhaseRecord._parse), None),
            seconds=keys.take("seconds", _or_null(_number), None),
            privacy=keys.take("privacy", _or_null(_object), None),
            checkpoint_sha256=keys.take("checkpoint-sha256", _or_null(_str), None),
            fairness=keys.take("fairness", _or_null(_object), None),
            extra=keys.rest,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"round": self.round}
        for key, value in (
            ("holdout", self.holdout),
            ("aggregated", self.aggregated),
            ("train", self.train),
            ("evaluate", self.evaluate),
            ("seconds", self.seconds),
            ("privacy", self.privacy),
            ("checkpoint-sha256", self.checkpoint_sha256),
            ("fairness", self.fairness),
        ):
            if value is not None:
                out[key] = value.to_json() if isinstance(value, PhaseRecord) else value
        return _with_extra(out, self.extra)


@dataclass
class BankRecord:
    """A bank that sent its statistics."""

    node_id: str | None = None
    training_rows: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _parse(cls, value: Any, where: str) -> BankRecord:
        keys = _Keys(value, where)
        return cls(
            node_id=keys.take("node-id", _or_null(_str), None),
            training_rows=keys.take("training-rows", _or_null(_int), None),
            extra=keys.rest,
        )

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in (("node-id", self.node_id), ("training-rows", self.training_rows)) if v is not None}
        return _with_extra(out, self.extra)


@dataclass
class StrategyRecord:
    """The strategy the run used (`name` as configured, `flower_class` as instantiated) and its DP mode."""

    name: str | None = None
    flower_class: str | None = None
    privacy: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _parse(cls, value: Any, where: str) -> StrategyRecord:
        keys = _Keys(value, where)
        return cls(
            name=keys.take("name", _or_null(_str), None),
            flower_class=keys.take("flower-class", _or_null(_str), None),
            privacy=keys.take("privacy", _or_null(_str), None),
            extra=keys.rest,
        )

    def to_json(self) -> dict[str, Any]:
        out = {
            k: v
            for k, v in (("name", self.name), ("flower-class", self.flower_class), ("privacy", self.privacy))
            if v is not None
        }
        return _with_extra(out, self.extra)


@dataclass
class ResumedFrom:
    """The crashed run a resumed run continues, and how many of its rounds it took over."""

    run_dir: str
    rounds: int

    @classmethod
    def _parse(cls, value: Any, where: str) -> ResumedFrom:
        keys = _Keys(value, where)
        return cls(
            run_dir=keys.require("run-dir", _str, "the crashed run's directory"),
            rounds=keys.require("rounds", _int, "the rounds taken over"),
        )

    def to_json(self) -> dict[str, Any]:
        return {"run-dir": self.run_dir, "rounds": self.rounds}


@dataclass
class History:
    """A run's history.json. Optional values are None when the run never got there (or the file predates them)."""

    run_id: str | None = None
    status: str | None = None  # running | completed | failed | stopped
    reason: str | None = None  # why the run failed or stopped
    config: dict[str, Any] = field(default_factory=dict)
    output_dir: str | None = None
    schema_sha256: str | None = None  # the data schema every bank had to share
    roster_sha256: str | None = None  # the consortium roster every reply was verified against (None: no roster)
    banks: dict[str, BankRecord] = field(default_factory=dict)
    statistics_failed: dict[str, str] = field(default_factory=dict)  # node-N -> why it sent no statistics
    strategy: StrategyRecord | None = None
    privacy: dict[str, Any] | None = None  # mechanism and epsilon spent, with differential privacy
    best_round: int | None = None  # the round of model-best.keras (`rounds.best_round` says how it is chosen)
    model_final_sha256: str | None = None
    seconds: float | None = None
    rounds: list[RoundEntry] = field(default_factory=list)
    evaluation: str | None = None  # folded | separate | off: which model each round's pooled figures score
    ignored_keys: list[str] | None = None  # keys set in the config that this strategy/privacy mode does not use
    resumed_from: ResumedFrom | None = None  # the crashed run this one continues
    sweep: dict[str, Any] | None = None  # in a sweep: {index, of, overrides} of this variant
    personalisation: dict[str, Any] | None = None  # what each bank kept after the last round, and pooled figures
    software: dict[str, str] | None = None  # versions of fedcredit, Flower, TensorFlow, ... and the app's commit
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trained_rounds(self) -> list[RoundEntry]:
        """Rounds after the initial model (round 0)."""
        return [r for r in self.rounds if r.round > 0]

    @property
    def num_banks(self) -> int:
        """Federation size: banks that sent statistics plus those that failed to."""
        return len(self.banks) + len(self.statistics_failed)

    @property
    def epsilon(self) -> float | None:
        """Differential privacy: the epsilon spent (None without DP or without an accountant)."""
        value = (self.privacy or {}).get("epsilon")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def last_round(self) -> RoundEntry | None:
        """The last round written (round 0 when no round finished; None for an empty history)."""
        return self.rounds[-1] if self.rounds else None

    def last_pooled(self) -> Metrics | None:
        """Pooled validation metrics of the last round (None when it was not evaluated)."""
        last = self.last_round()
        return last.pooled if last is not None else None

    @classmethod
    def from_json(cls, data: Any, source: str = "history.json") -> History:
        """The history in a parsed JSON value; `source` (the file) is named in every error."""
        if not isinstance(data, dict):
            raise HistoryError(f"{source} does not hold a JSON object but {_kind(data)}: not a fedcredit history.json")
        try:
            keys = _Keys(data, "")
            return cls(
                run_id=keys.take("run-id", _or_null(_str), None),
                status=keys.take("status", _or_null(_str), None),
                reason=keys.take("reason", _or_null(_str), None),
                config=keys.take("config", _object, {}),
                output_dir=keys.take("output-dir", _or_null(_str), None),
                schema_sha256=keys.take("schema-sha256", _or_null(_str), None),
                roster_sha256=keys.take("roster-sha256", _or_null(_str), None),
                banks=keys.take("banks", _mapping(BankRecord._parse), {}),
                statistics_failed=keys.take("statistics-failed", _reasons, {}),
                strategy=keys.take("strategy", _or_null(StrategyRecord._parse), None),
                privacy=keys.take("privacy", _or_null(_object), None),
                best_round=keys.take("best-round", _or_null(_int), None),
                model_final_sha256=keys.take("model-final-sha256", _or_null(_str), None),
                seconds=keys.take("seconds", _or_null(_number), None),
                rounds=keys.require("rounds", _rounds, "not a fedcredit history.json (it has a 'rounds' list)"),
                evaluation=keys.take("evaluation", _or_null(_str), None),
                ignored_keys=keys.take("ignored-keys", _or_null(_strings), None),
                resumed_from=keys.take("resumed-from", _or_null(ResumedFrom._parse), None),
                sweep=keys.take("sweep", _or_null(_object), None),
                personalisation=keys.take("personalisation", _or_null(_object), None),
                software=keys.take("software", _or_null(_mapping(_str)), None),
                extra=keys.rest,
            )
        except _Wrong as wrong:
            raise HistoryError(
                f"{source}: key '{wrong.where}' {wrong.problem}; regenerate the file with a fedcredit "
                "run or correct that key"
            ) from None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of history.json, keys as the coordinator has always written them."""
        out: dict[str, Any] = {
            "run-id": self.run_id,
            "status": self.status,
            "config": self.config,
            "output-dir": self.output_dir,
            "schema-sha256": self.schema_sha256,
            "roster-sha256": self.roster_sha256,
            "banks": {b: r.to_json() for b, r in self.banks.items()},
            "rounds": [r.to_json() for r in self.rounds],
            "statistics-failed": dict(self.statistics_failed),
            "strategy": self.strategy.to_json() if self.strategy is not None else None,
            "privacy": self.privacy,
            "best-round": self.best_round,
            "model-final-sha256": self.model_final_sha256,
            "reason": self.reason,
            "seconds": self.seconds,
            "sweep": self.sweep,
            "ignored-keys": self.ignored_keys,
            "resumed-from": self.resumed_from.to_json() if self.resumed_from is not None else None,
            "evaluation": self.evaluation,
            "personalisation": self.personalisation,
            "software": self.software,
        }
        return _with_extra({k: v for k, v in out.items() if v is not None}, self.extra)

    def round(self, number: int) -> RoundEntry | None:
        """The entry of round `number` (None when the run never got there)."""
        return next((r for r in self.rounds if r.round == number), None)


def _rounds(value: Any, where: str) -> list[RoundEntry]:
    if not isinstance(value, list):
        raise _expect("a list of round entries")(value, where)
    return [RoundEntry._parse(v, f"{where}[{i}]") for i, v in enumerate(value)]


def read_history(path: str | Path) -> History:
    """The history.json at `path`; HistoryError (naming the file) when it is missing, not JSON or mistyped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HistoryError(f"{path} does not exist: is {path.parent} a fedcredit run directory?") from None
    except (OSError, UnicodeDecodeError) as err:
        raise HistoryError(f"{path} cannot be read: {err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HistoryError(f"{path} is not valid JSON: {err}") from err
    return History.from_json(data, str(path))


def write_history(path: str | Path, history: History) -> None:
    """Write history.json atomically (readers never see half a file); NaN becomes null.

    What `History.from_json` would refuse is never written: the file every tool reads is one it can read.
    """
    data = history.to_json()
    History.from_json(data, str(path))
    write_json(Path(path), data)
