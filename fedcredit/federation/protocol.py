"""What crosses the wire between the coordinator and a bank: every message, record and key.

A privacy reviewer reads this one file to see what leaves a bank (`LEAVES_A_BANK`).
Each side encodes with the functions here, and the coordinator decodes every
reply with the `read_*` functions, which check it against the protocol before
any of its numbers is used: exactly the expected records and keys, types,
array names, shapes and dtypes of the global model, finite numbers in
plausible ranges. A reply that fails raises `ProtocolError` with the reason;
the caller refuses that bank's reply (recording the reason) and goes on with
the others.

Messages (coordinator -> bank, bank -> coordinator):

- query "statistics": `config` {action}. Reply: `bank-info` {name, source,
  schema-sha256}, `numeric-stats` {column: [count, sum, sum of squares]},
  `category-counts` {column: JSON {category: count}}, `bank` {rows}.
- query "profile" (after the statistics, before round 1): `config`
  {preprocessing-sha256}, `preprocessing`. Reply: `profile-train` and
  `profile-validation` {rows, bads, numeric/<column>: [counts over the z
  grid of `fedcredit.core.profile`, missing], categorical/<column>: [counts
  per vocabulary value, unknown, missing]}. Counts only.
- train: `arrays` (global weights), `config` {server-round,
  preprocessing-sha256, round-offset[, proximal-mu]}, `preprocessing` {json}. Reply:
  `arrays` (the bank's weights), `metrics` {train-loss, num-examples,
  unit-weight[, norm_bit under client-side adaptive DP]}.
- evaluate: `arrays`, `config` {server-round, preprocessing-sha256, round-offset},
  `preprocessing` {json}. Reply: `metrics` {the score summary of
  `fedcredit.core.metrics.summarise`, loss, auc, unit-weight}.
- query "personalise" (after the last round): `arrays` (the final global
  weights), `config` {preprocessing-sha256[, bank-dir in simulation]},
  `preprocessing`. Reply: `personalisation` {kept}, and one score summary
  per candidate model (`global`, `personalised`, `local-only`; in a
  simulation with the region split also `holdout-*` on its region's
  hold-out loans). The models stay at the bank.
- query "reasons" (after the last round, before personalisation): `arrays`
  (the final global weights), `config` {preprocessing-sha256},
  `preprocessing`. Reply: `reason-counts` {rows, declined, no-reason,
  first, any, monotone-rows, monotone-violations}: on its validation rows,
  how often each feature is the first (or any) reason among the loans the
  model declines at the threshold, and per declared monotone constraint how
  many of its checked rows break it (`ReasonLayout`). Counts only.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedcredit.core import metrics
from fedcredit.core.limits import MAX_ROWS, Limits, sums_fault
from fedcredit.core.profile import NUMERIC_BINS, Z_EDGES, ProfileLayout, SplitProfile, standard_deviation
from fedcredit.core.schema import Schema
from fedcredit.core.stats import Stats
from fedcredit.federation.secagg import ENTRY_BYTES

# --- names -------------------------------------------------------------------------

STATISTICS = "statistics"  # the query's action
CONFIG = "config"
ARRAYS = "arrays"
METRICS = "metrics"
PREPROCESSING = "preprocessing"
BANK_INFO = "bank-info"
NUMERIC_STATS = "numeric-stats"
CATEGORY_COUNTS = "category-counts"
BANK_ROWS = "bank"
PREPROCESSING_SHA = "preprocessing-sha256"
ROUND_OFFSET = "round-offset"  # rounds a resumed run already had: the bank's round is server-round + this
SCHEMA_SHA = "schema-sha256"
# privacy.dp-sgd = true: a bank's training rows in its bank info, in the clear also in secure mode (its epsilon).
DP_ROWS = "dp-sgd-training-rows"
# In a sweep (several variants in one Flower run) every message carries its variant's run-config overrides:
# the bank applies them over the run's config, so each variant trains exactly as a run of its own.
RUN_CONFIG = "run-config"

# Every bank reply carries this key = 1: the weight of equal-weight averaging,
# which Flower's privacy accounting requires (banks of different sizes would
# otherwise weigh differently and the sensitivity bound would not hold).
UNIT_WEIGHT = "unit-weight"
# Folded evaluation: a train message whose config has this key = 1 asks the bank to score the incoming
# global model on its validation rows first; the reply carries that summary in its own record.
EVALUATE_FIRST = "evaluate-first"
EVALUATION = "evaluation"
# Flower's client-side adaptive clipping mod adds this bit to train replies.
NORM_BIT = "norm_bit"

TRAIN_KEYS = ("train-loss", "num-examples", UNIT_WEIGHT)
EVALUATE_KEYS = (*metrics.COUNT_KEYS, *metrics.SUM_KEYS, *metrics.HIST_KEYS, "loss", "auc", UNIT_WEIGHT)
SOURCES = ("file", "simulation")
ERROR_CODE = 1  # the code of a bank's error reply: its own data, config or a refused stage, in one line

MAX_NAME_LENGTH = 64

# What leaves a bank, message by message (checked against docs/deployment.md by a test).
LEAVES_A_BANK: dict[str, dict[str, str]] = {
    "statistics": {
        BANK_INFO: "the bank's name, whether it reads a file or a simulated slice, the SHA-256 of its schema; "
        "with privacy.mode `dp-sgd` also its number of training rows (what its epsilon is computed from)",
        NUMERIC_STATS: "per numeric column: count, sum and sum of squares of its training rows",
        CATEGORY_COUNTS: (
            "per categorical column: how many training rows carry each category (only the values the schema "
            "agrees on, where it lists them)"
        ),
        BANK_ROWS: "the number of training rows",
    },
    "profile": {
        "profile-train": "on its training rows: rows, defaulted rows, and per feature how many rows fall in each "
        "global bin (numeric: 26 bins of the standardised value; categorical: each vocabulary value, then unknown) "
        "and how many are missing",
        "profile-validation": "the same counts on its validation rows",
    },
    "train": {
        ARRAYS: "the model weights after local training",
        METRICS: "training loss, the number of training rows, the unit weight",
        EVALUATION: "with folded evaluation: the same score summary as evaluate, of the incoming global model",
    },
    "evaluate": {
        METRICS: "on its validation rows: score histograms per class, confusion counts at the threshold, "
        "Brier/log-loss/score sums, its own AUC and loss; with protected attributes in the schema also, per "
        "attribute, the same class histograms for each group (counts only, adding up to the bank's own)",
    },
    "personalise": {
        "personalisation": "which of its three models the bank keeps (global, personalised or local-only)",
        "global": "the same score summary as evaluate, of the final global model on its validation rows",
        "personalised": "the same, of the global model fine-tuned on its own rows",
        "local-only": "the same, of the model trained on its own rows alone",
    },
    "reasons": {
        "reason-counts": "on its validation rows scored with the final global model: their number, how many the "
        "model declines at the threshold, how many of those have no reason, and per feature how often it is the "
        "first and how often any of the (at most 4) reasons; per declared monotone constraint, for how many of "
        "(at most 100 of) its validation rows the PD moves against it (counts only)",
    },
}


class ProtocolError(ValueError):
    """A bank's reply does not follow the protocol; the message says which check failed."""


# --- statistics ------------------------------------------------------------------------


@dataclass(frozen=True)
class BankStatistics:
    """A checked statistics reply."""

    name: str
    source: str
    schema_sha256: str
    stats: Stats | None  # None in secure mode: the coordinator has only the sum
    disclosed_rows: int | None = None  # privacy.dp-sgd = true: training rows, also in secure mode (accounting)

    @property
    def rows(self) -> int | None:
        """The bank's training rows, where the coordinator knows them."""
        return self.stats.rows if self.stats is not None else self.disclosed_rows


def statistics_request() -> RecordDict:
    return RecordDict({CONFIG: ConfigRecord({"action": STATISTICS})})


def statistics_reply(
    name: str, source: str, schema_sha256: str, stats: Stats, disclose_rows: bool = False
) -> RecordDict:
    """Counts and sums only; categories travel as names with their counts.

    `disclose_rows` (privacy.dp-sgd = true): the bank info also carries the
    training row count, which secure mode would otherwise hide, since the
    coordinator accounts each bank's epsilon at its own rows.
    """
    numeric = MetricRecord({col: [float(n), float(s), float(ss)] for col, (n, s, ss) in stats.numeric.items()})
    cats = ConfigRecord({col: json.dumps(counts, sort_keys=True) for col, counts in stats.categorical.items()})
    info = ConfigRecord(
        {"name": name, "source": source, SCHEMA_SHA: schema_sha256, **({DP_ROWS: stats.rows} if disclose_rows else {})}
    )
    return RecordDict(
        {BANK_INFO: info, NUMERIC_STATS: numeric, CATEGORY_COUNTS: cats, BANK_ROWS: MetricRecord({"rows": stats.rows})}
    )


def _records(content: RecordDict, arrays: set[str], metric: set[str], config: set[str]) -> None:
    got = (set(content.array_records), set(content.metric_records), set(content.config_records))
    for kind, have, want in zip(("array", "metric", "config"), got, (arrays, metric, config)):
        if have != want:
            raise ProtocolError(f"{kind} records {sorted(have)}, expected {sorted(want)}")


def _keys(record: Mapping[str, Any], expected: Sequence[str], what: str, optional: Sequence[str] = ()) -> None:
    have = set(record)
    missing, extra = set(expected) - have, have - set(expected) - set(optional)
    if missing or extra:
        raise ProtocolError(f"{what}: missing keys {sorted(missing)}, unexpected keys {sorted(extra)}")


def _count(value: Any, what: str, upper: int = MAX_ROWS) -> int:
    """A non-negative whole number up to `upper` (floats with an integral value pass: lists are floats)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{what} is not a number")
    if not math.isfinite(value) or value != int(value) or not 0 <= value <= upper:
        raise ProtocolError(f"{what} must be a whole number from 0 to {upper}")
    return int(value)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"{what} is not a finite number")
    return float(value)


def _numeric(col: str, value: Any, rows: int) -> tuple[int, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise ProtocolError(f"numeric statistics of '{col}' must be [count, sum, sum of squares]")
    n = _count(value[0], f"count of '{col}'", rows)
    s, ss = _finite(value[1], f"sum of '{col}'"), _finite(value[2], f"sum of squares of '{col}'")
    if n == 0 and (s != 0 or ss != 0):
        raise ProtocolError(f"'{col}' has sums but a count of 0")
    fault = sums_fault(n, s, ss)  # the bound a bank's loading puts on every value (fedcredit.core.limits)
    if fault:
        raise ProtocolError(f"the sums of '{col}' {fault}")
    # Cauchy-Schwarz: sum of squares >= sum^2 / count (up to rounding).
    if ss < 0 or (n and s * s / n - ss > 1e-9 * max(ss, 1.0)):
        raise ProtocolError(f"sum of squares of '{col}' is below sum^2/count: impossible for real values")
    return n, s, ss


# JSON a bank sends is decoded only within bounds checked first: its length, how deep it nests, and how
# many digits a number has (Python refuses integers over 4,300 digits only after reading them).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
MAX_JSON_DIGITS = 20


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise ProtocolError(f"a number of more than {MAX_JSON_DIGITS} digits")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > 2 * MAX_JSON_DIGITS + 10:
        raise ProtocolError(f"a number written with more than {2 * MAX_JSON_DIGITS + 10} characters")
    return float(text)


def _no_constant(text: str) -> Any:
    raise ProtocolError(f"{text} is not a JSON number")


def bounded_json(text: Any, what: str, max_chars: int, max_depth: int = 1) -> Any:
    """The JSON value of `text`, decoded only if it is at most `max_chars` long and nests at most `max_depth` deep."""
    if not isinstance(text, str):
        raise ProtocolError(f"{what} must be JSON text")
    if len(text) > max_chars:
        raise ProtocolError(f"{what} is {len(text)} characters of JSON, more than the {max_chars} it can need")
    depth = deepest = 0
    for char in _JSON_STRING.sub('""', text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > max_depth:
                raise ProtocolError(f"{what} nests deeper than {max_depth} level(s)")
        elif char in "]}":
            depth -= 1
    try:
        return json.loads(text, parse_int=_bounded_int, parse_float=_bounded_float, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ProtocolError(f"{what} is not valid JSON: {err}") from None


def _categories(col: str, text: Any, rows: int, limits: Limits, agreed: frozenset[str] | None) -> dict[str, int]:
    """A bank's category counts of one column; `agreed`: the schema's values for it (None: any value)."""
    # Every value at most max-category-length characters (each up to 6 when escaped), plus its count.
    max_chars = 2 + limits.max_categories * (6 * limits.max_category_length + 2 * MAX_JSON_DIGITS + 8)
    counts = bounded_json(text, f"category counts of '{col}'", max_chars)
    if not isinstance(counts, dict):
        raise ProtocolError(f"category counts of '{col}' are not a JSON object of counts")
    if limits.too_many_categories(len(counts)):
        raise ProtocolError(
            f"'{col}' has {len(counts)} distinct categories, more than max-categories={limits.max_categories}"
        )
    out: dict[str, int] = {}
    for value, count in counts.items():
        fault = limits.category_fault(value)  # the rule a bank's loading applies (fedcredit.core.limits)
        if fault:
            raise ProtocolError(f"a category of '{col}' {fault}")
        if agreed is not None and value not in agreed:  # an honest bank's loading counts it as unknown
            raise ProtocolError(f"a category of '{col}' is not one of the values the schema agrees on ([categories])")
        out[value] = _count(count, f"a category count of '{col}'", rows)
    if sum(out.values()) > rows:
        raise ProtocolError(f"category counts of '{col}' add up to more than the bank's {rows} rows")
    return out


def read_bank_info(content: RecordDict) -> tuple[str, str, str]:
    """(name, source, schema SHA-256) of a statistics reply."""
    info = content.config_records[BANK_INFO]
    _keys(info, ("name", "source", SCHEMA_SHA), BANK_INFO, optional=(DP_ROWS,))
    name, source, sha = info["name"], info["source"], info[SCHEMA_SHA]
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ProtocolError(f"the bank name must be printable text of 1 to {MAX_NAME_LENGTH} characters")
    if source not in SOURCES or not isinstance(sha, str):
        raise ProtocolError(f"bank-info: source must be one of {list(SOURCES)} and schema-sha256 text")
    return name.strip(), source, sha


def read_disclosed_rows(content: RecordDict) -> int | None:
    """A statistics reply's training rows disclosed for DP-SGD accounting (None: not disclosed)."""
    info = content.config_records[BANK_INFO]
    return _count(info[DP_ROWS], f"bank-info {DP_ROWS}") if DP_ROWS in info else None


def check_schema(sha256: str, schema: Schema) -> None:
    """A bank's schema digest must be the coordinator's: one contract for the whole consortium."""
    if sha256 != schema.sha256:
        raise ProtocolError(
            f"the bank's schema (SHA-256 {sha256[:12]}) differs from the coordinator's ({schema.sha256[:12]}): "
            "every bank must run the same app version and schema file"
        )


def read_statistics(content: RecordDict, schema: Schema, limits: Limits) -> BankStatistics:
    """The statistics of one bank, checked against the schema and the limits.

    A category value outside the schema's agreed ones (`[categories]`) is
    refused, as in secure mode it is never summed: an honest bank's loading
    scores such values as unknown and never counts them.
    """
    _records(content, set(), {NUMERIC_STATS, BANK_ROWS}, {BANK_INFO, CATEGORY_COUNTS})
    name, source, sha = read_bank_info(content)
    _keys(content.metric_records[BANK_ROWS], ("rows",), BANK_ROWS)
    rows = _count(content.metric_records[BANK_ROWS]["rows"], "rows")
    if rows == 0:
        raise ProtocolError("the bank reports no training rows")
    numeric_rec = content.metric_records[NUMERIC_STATS]
    _keys(numeric_rec, schema.numeric, NUMERIC_STATS)
    cats_rec = content.config_records[CATEGORY_COUNTS]
    _keys(cats_rec, schema.categorical, CATEGORY_COUNTS)
    numeric = {col: _numeric(col, numeric_rec[col], rows) for col in schema.numeric}
    agreed = {col: frozenset(values) for col, values in schema.known_categories.items()}
    categorical = {col: _categories(col, cats_rec[col], rows, limits, agreed.get(col)) for col in schema.categorical}
    disclosed = read_disclosed_rows(content)
    if disclosed is not None and disclosed != rows:
        raise ProtocolError(f"bank-info says {disclosed} training rows, its statistics {rows}")
    return BankStatistics(name, source, sha, Stats(numeric, categorical, rows), disclosed)


# --- train and evaluate ------------------------------------------------------------------


def variant_overrides(content: RecordDict) -> dict[str, Any]:
    """The sweep variant's run-config overrides a message carries ({} outside a sweep)."""
    record = content.config_records.get(RUN_CONFIG)
    return dict(record.items()) if record is not None else {}


def preprocessing_record(prep_json: str) -> ConfigRecord:
    """The merged preprocessing, in its own record: every message stays self-contained."""
    return ConfigRecord({"json": prep_json})


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_round(config: ConfigRecord) -> int:
    """The run's round a train message belongs to (a resumed run numbers on from its last round)."""
    return int(config["server-round"]) + int(config.get(ROUND_OFFSET, 0))


def read_preprocessing(content: RecordDict) -> str:
    """The preprocessing JSON of a train/evaluate message, checked against the digest in its config."""
    prep_json = str(content[PREPROCESSING]["json"])
    if digest(prep_json) != str(content[CONFIG][PREPROCESSING_SHA]):
        raise ProtocolError("the preprocessing record does not match the digest in the message's config")
    return prep_json


def flatten(weights: Sequence[np.ndarray]) -> np.ndarray:
    """All arrays of a model as one float64 vector."""
    return np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights])


def update_distance(weights: Sequence[np.ndarray], global_weights: Sequence[np.ndarray]) -> float:
    """L2 norm of an update: how far a bank's weights moved from the global model's."""
    return float(np.linalg.norm(flatten(weights) - flatten(global_weights)))


def train_reply(
    weights: Sequence[np.ndarray], train_loss: float, rows: int, evaluation: Mapping[str, Any] | None = None
) -> RecordDict:
    """`evaluation`: with folded evaluation, the summary of the incoming global model."""
    train_metrics = {"train-loss": float(train_loss), "num-examples": int(rows), UNIT_WEIGHT: 1}
    content = RecordDict({ARRAYS: ArrayRecord(list(weights)), METRICS: MetricRecord(train_metrics)})
    if evaluation is not None:
        content[EVALUATION] = MetricRecord({**evaluation, UNIT_WEIGHT: 1})
    return content


def evaluate_reply(summary: Mapping[str, Any]) -> RecordDict:
    return RecordDict({METRICS: MetricRecord({**summary, UNIT_WEIGHT: 1})})


def read_weights(record: ArrayRecord, reference: ArrayRecord) -> list[np.ndarray]:
    """The arrays of a reply, if they have the global model's names, shapes and dtypes and are finite."""
    if list(record.keys()) != list(reference.keys()):
        raise ProtocolError(f"weights: {len(record)} arrays named differently from the global model's {len(reference)}")
    out = []
    for key in reference.keys():
        mine, ref = record[key], reference[key]
        if tuple(mine.shape) != tuple(ref.shape) or mine.dtype != ref.dtype:
            raise ProtocolError(
                f"weights: array {key} has shape {tuple(mine.shape)} {mine.dtype}, "
                f"the global model's is {tuple(ref.shape)} {ref.dtype}"
            )
        array = mine.numpy()
        if not np.isfinite(array).all():
            raise ProtocolError(f"weights: array {key} has NaN or infinite values")
        out.append(array)
    return out


def read_train_reply(
    content: RecordDict, reference: ArrayRecord, rows: int | None, extra_keys: Sequence[str] = ()
) -> tuple[list[np.ndarray], dict[str, float]]:
    """(weights, metrics) of a train reply; `rows`: the training rows the bank reported with its statistics."""
    _records(content, {ARRAYS}, {METRICS}, set())
    record = content.metric_records[METRICS]
    _keys(record, TRAIN_KEYS, "train metrics", optional=extra_keys)
    n = _count(record["num-examples"], "num-examples")
    if rows is not None and n != rows:
        raise ProtocolError(f"num-examples={n}, but the bank reported {rows} training rows with its statistics")
    loss = _finite(record["train-loss"], "train-loss")
    if loss < 0 or record[UNIT_WEIGHT] != 1:
        raise ProtocolError("train-loss must be non-negative and unit-weight 1")
    for key in extra_keys:
        if key in record and record[key] not in (0, 1):
            raise ProtocolError(f"{key} must be 0 or 1")
    return read_weights(content.array_records[ARRAYS], reference), {k: record[k] for k in record}


def expected_validation_rows(training_rows: int, val_fraction: float, banks: int = 1) -> tuple[float, float]:
    """Bounds of a bank's validation rows (or of `banks` banks' together, from their summed training rows),
    from its training rows and the stratified split's rounding."""
    ratio = val_fraction / (1 - val_fraction)
    centre = ratio * training_rows
    slack = (2 * ratio + 2) * banks  # each of the two classes rounds by at most one row at each bank
    return centre - slack, centre + slack


def _binned_bounds(hist: np.ndarray, edges: np.ndarray, threshold: float) -> tuple[int, int]:
    """Least and most rows of a histogram that can score at or above `threshold`."""
    tol = 1e-9
    return int(hist[edges[:-1] >= threshold - tol].sum()), int(hist[edges[1:] > threshold - tol].sum())


def _consistent(
    counts: dict[str, int], hists: dict[str, list[int]], sums: dict[str, float], bins: int, threshold: float
) -> None:
    """Confusion counts and score sum must be what the histograms allow: a fabricated histogram shows."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    bad, good = np.asarray(hists["hist-bad"]), np.asarray(hists["hist-good"])
    for key, hist in (("tp", bad), ("fp", good)):
        low, high = _binned_bounds(hist, edges, threshold)
        if not low <= counts[key] <= high:
            raise ProtocolError(f"{key}={counts[key]} does not match the histogram above the threshold")
    both = bad + good
    n = int(both.sum())
    if not both @ edges[:-1] - 1e-6 * n <= sums["sum-score"] <= both @ edges[1:] + 1e-6 * n:
        raise ProtocolError("sum-score does not match the score histograms")


def read_evaluate_reply(
    content: RecordDict,
    bins: int,
    validation_rows: tuple[float, float] | None = None,
    threshold: float | None = None,
    groups: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A checked evaluation summary: counts that add up, histograms of `bins` counts, finite sums.

    With `threshold` (the run's), the confusion counts and the score sum must
    also agree with the histograms; with `groups`, the per-group histograms
    must split them.
    """
    _records(content, set(), {METRICS}, set())
    return read_summary(content.metric_records[METRICS], bins, validation_rows, threshold, groups=groups)


GROUP_PREFIX = "group:"  # a summary's per-group histograms: one key per protected attribute


def group_keys(groups: Mapping[str, int]) -> list[str]:
    """The summary keys of the protected attributes, in one order every side uses (sorted names)."""
    return [GROUP_PREFIX + attr for attr in sorted(groups)]


def group_histograms(values: np.ndarray, bins: int) -> np.ndarray:
    """A flat group list (each group: defaulted histogram, then repaid) as a (groups, 2, bins) array."""
    return np.asarray(values, dtype=np.int64).reshape(-1, 2, bins)


def _read_groups(record: Mapping[str, Any], groups: Mapping[str, int], bins: int, n: int, hists: dict) -> dict:
    """Each attribute's per-group histograms: whole counts that split the bank's own histograms exactly.

    Every validation loan is in exactly one group of each attribute (missing
    or unknown values in `undocumented`), so the groups' histograms must add
    up, bin by bin, to the summary's: a bank cannot move loans between
    groups without moving them in its overall figures too.
    """
    out = {}
    total = np.asarray([hists["hist-bad"], hists["hist-good"]], dtype=np.int64)
    for attr, key in zip(sorted(groups), group_keys(groups), strict=True):
        values = record[key]
        if not isinstance(values, list) or len(values) != groups[attr] * 2 * bins:
            raise ProtocolError(f"{key} must be a list of {groups[attr]} groups x 2 classes x {bins} bins")
        counts = [_count(v, key, n) for v in values]
        if not np.array_equal(group_histograms(np.asarray(counts), bins).sum(axis=0), total):
            raise ProtocolError(f"{key}: the groups' histograms do not add up to the bank's own histograms")
        out[key] = counts
    return out


def read_summary(
    record: Mapping[str, Any],
    bins: int,
    validation_rows: tuple[float, float] | None = None,
    threshold: float | None = None,
    what: str = "evaluate metrics",
    groups: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One score summary (see `read_evaluate_reply`), wherever it travels.

    `groups` (protected attribute -> number of groups, from the schema):
    the summary must also carry each attribute's per-group histograms.
    """
    _keys(record, [*EVALUATE_KEYS, *group_keys(groups or {})], what)
    counts = {k: _count(record[k], k) for k in metrics.COUNT_KEYS}
    n, bad = counts["num-examples"], counts["num-bad"]
    if validation_rows is not None and not validation_rows[0] <= n <= validation_rows[1]:
        raise ProtocolError(f"num-examples={n} does not fit the training rows the bank reported with its statistics")
    hists = {}
    for key in metrics.HIST_KEYS:
        values = record[key]
        if not isinstance(values, list) or len(values) != bins:
            raise ProtocolError(f"{key} must be a list of histogram-bins={bins} counts")
        hists[key] = [_count(v, key, n) for v in values]
    if sum(hists["hist-bad"]) != bad or sum(hists["hist-bad"]) + sum(hists["hist-good"]) != n:
        raise ProtocolError("histograms do not add up to num-bad and num-examples")
    if counts["tp"] + counts["fn"] != bad or counts["tp"] + counts["fp"] + counts["tn"] + counts["fn"] != n:
        raise ProtocolError("confusion counts do not add up to num-bad and num-examples")
    sums = {k: _finite(record[k], k) for k in metrics.SUM_KEYS}
    max_logloss = -math.log(metrics.EPS) * n + 1e-6
    if not (0 <= sums["sum-brier"] <= n + 1e-6 and 0 <= sums["sum-score"] <= n + 1e-6):
        raise ProtocolError("sum-brier and sum-score must lie between 0 and num-examples")
    if not 0 <= sums["sum-logloss"] <= max_logloss:
        raise ProtocolError("sum-logloss is outside what clipped probabilities allow")
    loss = _finite(record["loss"], "loss")
    auc = record["auc"]
    one_class = bad in (0, n)
    if not isinstance(auc, float) or (math.isnan(auc) and not one_class) or (not math.isnan(auc) and not 0 <= auc <= 1):
        raise ProtocolError("auc must lie between 0 and 1 (NaN only when the validation rows have one class)")
    if record[UNIT_WEIGHT] != 1 or loss < 0:
        raise ProtocolError("loss must be non-negative and unit-weight 1")
    if threshold is not None:
        _consistent(counts, hists, sums, bins, threshold)
    if not math.isnan(auc):  # the exact AUC the bank states must be one its own histograms allow
        low, high = metrics.histogram_auc_bounds(hists["hist-bad"], hists["hist-good"])
        if not low - 1e-9 <= auc <= high + 1e-9:
            raise ProtocolError(
                f"auc={auc:.4f} does not fit its own score histograms (they allow {low:.4f} to {high:.4f})"
            )
    grouped = _read_groups(record, groups, bins, n, hists) if groups else {}
    return {**counts, **hists, **sums, "loss": loss, "auc": auc, UNIT_WEIGHT: 1, **grouped}


# --- personalisation after the last round --------------------------------------------------

PERSONALISE_ACTION = "personalise"  # the ClientApp's @app.query(PERSONALISE_ACTION)
PERSONALISE = f"query.{PERSONALISE_ACTION}"  # its message type
CANDIDATES = ("global", "personalised", "local-only")
PERSONALISATION = "personalisation"
HOLDOUT_PREFIX = "holdout-"


def personalise_reply(kept: str, summaries: Mapping[str, Mapping[str, Any]]) -> RecordDict:
    """The bank's choice and the score summaries of its candidate models: no model, no row."""
    content = RecordDict({PERSONALISATION: ConfigRecord({"kept": kept})})
    for name, summary in summaries.items():
        content[name] = MetricRecord({**summary, UNIT_WEIGHT: 1})
    return content


def read_personalise_reply(
    content: RecordDict, bins: int, validation_rows: tuple[float, float] | None, threshold: float | None
) -> tuple[str, dict[str, dict[str, Any]]]:
    """(kept model, {summary name: checked summary}); own hold-out summaries are optional (simulation)."""
    names = set(content.metric_records)
    holdout = {HOLDOUT_PREFIX + c for c in CANDIDATES}
    _records(content, set(), set(CANDIDATES) | (holdout if names & holdout else set()), {PERSONALISATION})
    _keys(content.config_records[PERSONALISATION], ("kept",), PERSONALISATION)
    kept = content.config_records[PERSONALISATION]["kept"]
    if kept not in CANDIDATES:
        raise ProtocolError(f"kept must be one of {list(CANDIDATES)}")
    summaries = {}
    for name in sorted(names):
        rows = validation_rows if name in CANDIDATES else None
        summaries[name] = read_summary(content.metric_records[name], bins, rows, threshold, what=name)
    return kept, summaries


# --- reason codes and monotonicity at the banks (after the last round) ------------------------

REASONS_ACTION = "reasons"  # the ClientApp's @app.query(REASONS_ACTION)
REASONS = f"query.{REASONS_ACTION}"  # its message type
REASON_COUNTS = "reason-counts"  # the reply's one record
MONOTONE_ROWS = 100  # each bank checks the declared monotone constraints on at most this many validation rows
MAX_REASONS = 4  # reasons a declined loan gets at most (`fedcredit.risk.explain.TOP_REASONS`, checked by a test)
REASON_KEYS = ("rows", "declined", "no-reason", "first", "any", "monotone-rows", "monotone-violations")
# A PD computed on another path (the bank's evaluation, its reasons) may differ in the 8th decimal: a loan
# that scored within this of the threshold may be declined in one and approved in the other.
DECLINE_MARGIN = 1e-6


@dataclass(frozen=True)
class ReasonLayout:
    """What a reasons reply counts, in order: fixed by the run's schema, so known before any bank answers.

    `features`: the schema's features (`schema_of(cfg)`: excluded ones
    dropped); `constraints`: its declared monotone features, in its order.
    As one vector (secure mode): rows, declined, no-reason, first per
    feature, any per feature, monotone-rows, violations per constraint.
    """

    features: tuple[str, ...]
    constraints: tuple[str, ...]

    @classmethod
    def of(cls, schema: Schema) -> ReasonLayout:
        return cls(tuple(schema.features), tuple(schema.directions))

    @property
    def length(self) -> int:
        return 4 + 2 * len(self.features) + len(self.constraints)


def reasons_request(arrays: ArrayRecord, prep_json: str) -> RecordDict:
    """The final global weights and the preprocessing the bank builds the model from (its digest in the config)."""
    return RecordDict(
        {
            ARRAYS: arrays,
            CONFIG: ConfigRecord({PREPROCESSING_SHA: digest(prep_json)}),
            PREPROCESSING: preprocessing_record(prep_json),
        }
    )


def reasons_reply(counts: Mapping[str, Any]) -> RecordDict:
    """Counts only (`REASON_KEYS`; per-feature lists in the layout's order)."""
    record = {k: [int(v) for v in counts[k]] if isinstance(counts[k], list) else int(counts[k]) for k in REASON_KEYS}
    return RecordDict({REASON_COUNTS: MetricRecord(record)})


def declined_bounds(hist_bad: Sequence[float], hist_good: Sequence[float], threshold: float) -> tuple[int, int]:
    """Least and most loans of evaluation histograms the model declines (PD at or above `threshold`).

    The bins the threshold lies on or in count either way (`DECLINE_MARGIN`):
    the bank's reasons and its evaluation score the same loans on two paths.
    """
    both = np.asarray(hist_bad, dtype=np.float64) + np.asarray(hist_good, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, both.size + 1)
    low = both[edges[:-1] >= threshold + DECLINE_MARGIN].sum()
    high = both[edges[1:] > threshold - DECLINE_MARGIN].sum()
    return int(low), int(high)


def _count_list(value: Any, length: int, upper: int, what: str) -> list[int]:
    if not isinstance(value, list) or len(value) != length:
        raise ProtocolError(f"{what} must be a list of {length} counts")
    return [_count(v, f"a count of {what}", upper) for v in value]


def _reason_counts(
    record: Mapping[str, Any],
    layout: ReasonLayout,
    validation_rows: tuple[float, float] | None,
    declined: tuple[int, int] | None,
    what: str,
    banks: int = 1,
) -> dict[str, Any]:
    """One bank's (or a sum's) reason counts: the layout's keys and lengths, counts that fit each other."""
    _keys(record, REASON_KEYS, what)
    rows = _count(record["rows"], f"{what}: rows", MAX_ROWS * banks)
    if validation_rows is not None and not validation_rows[0] <= rows <= validation_rows[1]:
        raise ProtocolError(f"{what}: rows={rows} does not fit the training rows reported with the statistics")
    n = _count(record["declined"], f"{what}: declined", rows)
    if declined is not None and not declined[0] <= n <= declined[1]:
        raise ProtocolError(
            f"{what}: declined={n}, but the final evaluation's histograms put {declined[0]} to {declined[1]} of "
            "these validation loans at or above the threshold"
        )
    none = _count(record["no-reason"], f"{what}: no-reason", n)
    first = _count_list(record["first"], len(layout.features), n, f"{what}: first")
    anywhere = _count_list(record["any"], len(layout.features), n, f"{what}: any")
    if sum(first) + none != n:
        raise ProtocolError(f"{what}: first-reason counts plus no-reason must be the declined loans, {n}")
    if any(f > a for f, a in zip(first, anywhere, strict=True)):
        raise ProtocolError(f"{what}: a feature is the first reason more often than it is a reason at all")
    if sum(anywhere) > MAX_REASONS * (n - none):
        raise ProtocolError(f"{what}: more reasons than {MAX_REASONS} for each declined loan with a reason")
    checked = _count(record["monotone-rows"], f"{what}: monotone-rows", min(MONOTONE_ROWS * banks, rows))
    if banks == 1 and checked != min(MONOTONE_ROWS, rows):  # a bank checks that many of its rows, no fewer
        raise ProtocolError(f"{what}: monotone-rows must be {min(MONOTONE_ROWS, rows)}, the rows a bank checks")
    broken = _count_list(record["monotone-violations"], len(layout.constraints), checked, f"{what}: violations")
    return {
        "rows": rows,
        "declined": n,
        "no-reason": none,
        "first": dict(zip(layout.features, first, strict=True)),
        "any": dict(zip(layout.features, anywhere, strict=True)),
        "monotone-rows": checked,
        "monotone-violations": dict(zip(layout.constraints, broken, strict=True)),
    }


def read_reasons_reply(
    content: RecordDict,
    layout: ReasonLayout,
    validation_rows: tuple[float, float] | None,
    declined: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """One bank's checked reason counts; `declined`: the bounds its final evaluation's histograms give (if kept)."""
    _records(content, set(), {REASON_COUNTS}, set())
    return _reason_counts(content.metric_records[REASON_COUNTS], layout, validation_rows, declined, REASON_COUNTS)


# --- feature profiles (before round 1, once the preprocessing is fixed) ---------------------

PROFILE_ACTION = "profile"  # the ClientApp's @app.query(PROFILE_ACTION)
PROFILE = f"query.{PROFILE_ACTION}"  # its message type
PROFILE_SPLITS = {"train": "profile-train", "validation": "profile-validation"}  # split -> its reply record
# One MetricRecord per split: rows, bads, then one list per feature: its counts (the layout's slots), then missing.
KINDS = ("numeric", "categorical")


def profile_request(prep_json: str) -> RecordDict:
    """The preprocessing the bank bins its rows with (its digest in the config, as train messages carry it)."""
    return RecordDict(
        {CONFIG: ConfigRecord({PREPROCESSING_SHA: digest(prep_json)}), PREPROCESSING: preprocessing_record(prep_json)}
    )


def profile_reply(train: SplitProfile, validation: SplitProfile) -> RecordDict:
    """Counts only: rows, defaults, and per feature the rows in each global bin and the missing ones."""

    def record(split: SplitProfile) -> MetricRecord:
        values: dict[str, Any] = {"rows": int(split["rows"]), "bads": int(split["bads"])}
        for kind in KINDS:
            for col, c in split[kind].items():
                values[f"{kind}/{col}"] = [int(v) for v in c["counts"]] + [int(c["missing"])]
        return MetricRecord(values)

    return RecordDict({PROFILE_SPLITS["train"]: record(train), PROFILE_SPLITS["validation"]: record(validation)})


def _profile_keys(layout: ProfileLayout) -> list[tuple[str, str, str]]:
    """(record key, kind, column) of every feature list, in the layout's order."""
    return [(f"{kind}/{col}", kind, col) for kind in KINDS for col in getattr(layout, kind)]


def _split_profile(record: Mapping[str, Any], layout: ProfileLayout, what: str, upper: int = MAX_ROWS) -> SplitProfile:
    """One split's counts: exactly the layout's keys and lengths, whole counts that add up to its rows."""
    features = _profile_keys(layout)
    _keys(record, ["rows", "bads", *(key for key, _, _ in features)], what)
    rows = _count(record["rows"], f"{what}: rows", upper)
    split: SplitProfile = {"rows": rows, "bads": _count(record["bads"], f"{what}: bads", rows), "numeric": {}}
    split["categorical"] = {}
    for key, kind, col in features:
        values, length = record[key], layout.slots(col) + 1
        if not isinstance(values, list) or len(values) != length:
            raise ProtocolError(f"{what}: {key} must be a list of {length} counts (its bins, then missing)")
        counts = [_count(v, f"{what}: a count of {key}", rows) for v in values]
        if sum(counts) != rows:
            raise ProtocolError(f"{what}: the counts of {key} add up to {sum(counts)}, not to its {rows} rows")
        split[kind][col] = {"counts": counts[:-1], "missing": counts[-1]}
    return split


def _fits_statistics(train: SplitProfile, stats: Stats, layout: ProfileLayout, every_category: bool) -> None:
    """The training counts must be those the statistics of the same rows imply.

    Rows, numeric missing counts and vocabulary counts are exact; the z bins
    must allow the sum the statistics give (each row's z lies in its bin).
    `every_category`: the statistics count every category (plain mode), so
    the missing count is exact too; secure sums count only the agreed values.
    """
    if train["rows"] != stats.rows:
        raise ProtocolError(f"train rows={train['rows']}, but the statistics reported {stats.rows} training rows")
    lows, highs = np.array([-np.inf, *Z_EDGES]), np.array([*Z_EDGES, np.inf])
    for col in layout.numeric:
        n, total, _ = stats.numeric[col]
        feature = train["numeric"][col]
        counts, missing = np.asarray(feature["counts"], dtype=np.float64), feature["missing"]
        if missing != stats.rows - n:
            raise ProtocolError(f"'{col}' has {missing} missing training values, the statistics {stats.rows - n}")
        mean, sd = layout.mean[col], standard_deviation(layout.variance[col])
        sum_z = (total - n * mean) / sd
        filled = counts > 0  # an empty tail bin bounds nothing (0 x infinity is no number)
        low, high = float(counts[filled] @ lows[filled]), float(counts[filled] @ highs[filled])
        slack = 1e-6 * max(n, 1) + 1e-9 * (abs(total) + n * abs(mean)) / sd  # float rounding of both sides
        if not low - slack <= sum_z <= high + slack:
            raise ProtocolError(f"the z bins of '{col}' do not fit the sum of its values the statistics reported")
    for col, vocabulary in layout.categorical.items():
        reported, profile = stats.categorical[col], train["categorical"][col]
        for value, count in zip(vocabulary, profile["counts"], strict=False):
            if count != reported.get(value, 0):
                raise ProtocolError(f"a vocabulary count of '{col}' differs from the statistics'")
        rest = stats.rows - sum(reported.values())
        if profile["missing"] > rest or (every_category and profile["missing"] != rest):
            raise ProtocolError(f"'{col}' has {profile['missing']} missing training values, the statistics {rest}")


def _fits_validation(train: SplitProfile, validation: SplitProfile, val_fraction: float, banks: int) -> None:
    """Validation rows and defaults within what the stratified split of the training rows allows (per class)."""
    ratio = val_fraction / (1 - val_fraction)
    for key, slack in (("rows", 2 * ratio + 2), ("bads", ratio + 1)):  # each class rounds by at most one row
        centre = ratio * train[key]
        if not centre - slack * banks <= validation[key] <= centre + slack * banks:
            raise ProtocolError(
                f"validation {key}={validation[key]} does not fit the {train[key]} training {key} "
                f"with val-fraction={val_fraction:g}"
            )


def read_profile_reply(
    content: RecordDict, layout: ProfileLayout, stats: Stats | None, val_fraction: float
) -> dict[str, SplitProfile]:
    """{"train": ..., "validation": ...} of one bank, checked against the layout and the statistics it sent."""
    _records(content, set(), set(PROFILE_SPLITS.values()), set())
    profile = {
        split: _split_profile(content.metric_records[name], layout, name) for split, name in PROFILE_SPLITS.items()
    }
    if stats is not None:
        _fits_statistics(profile["train"], stats, layout, every_category=True)
    _fits_validation(profile["train"], profile["validation"], val_fraction, banks=1)
    return profile


# --- secure mode (privacy.secure-aggregation): only sums leave a bank ------------------------
#
# Key stages travel as query "secagg" messages with a `secagg` record {stage, session, ...};
# the statistics query, train and evaluate messages carry a `secagg` record {stage "mask",
# session, the key shares other banks encrypted for this bank, and what to put in the vector}.
# The bank's reply is then its masked vector (or the reason it withheld it), never its numbers.

SECAGG = "secagg"
SECAGG_ACTION = "secagg"  # the ClientApp's @app.query(SECAGG_ACTION)
SECAGG_QUERY = f"query.{SECAGG_ACTION}"  # its message type
KEY_STAGES = ("advertise", "share", "reveal")
MASK = "mask"
MAX_KEY_BYTES = 512  # a serialised EC public key is ~180 bytes
MAX_SHARE_BYTES = 4096
MAX_BANK_NAME = 200
SIGNATURE_BYTES = 64  # Ed25519

# What secure mode adds (docs/deployment.md, checked by a test): its key stages. Everything else a bank
# sends in secure mode travels only inside its masked vector, besides its bank-info and withholding reasons.
LEAVES_A_BANK_SECURE: dict[str, str] = {
    "advertise": (
        "two fresh public keys (one to agree masks, one to encrypt shares); with a consortium roster, the bank's "
        "name and its Ed25519 signature over them, the run, the sum and its round"
    ),
    "share": "Shamir shares of its mask secrets, each encrypted for one other bank (the coordinator cannot read them)",
    "reveal": "shares of surviving banks' self-mask seeds and of dropped banks' mask keys, never both for one bank",
}


# What a bank needs to build its vector, in the mask record beside its encrypted shares.
LAYOUT = "layout"  # statistics and profile: the vector's layout (`statistics_layout`, `ProfileLayout.to_json`)
WEIGHT_KEY = "weight-key"  # train: the reply metric the strategy weighs updates by
MAX_UPDATE_NORM = "max-update-norm"  # train: the bank withholds an update farther than this


def stage_request(stage: str, session: str, values: Mapping[str, Any]) -> RecordDict:
    return RecordDict({SECAGG: ConfigRecord({"stage": stage, "session": session, **values})})


def sum_round(content: RecordDict) -> int:
    """The server round of a message about to be summed (0 when it has none): part of what a bank's keys are for."""
    config = content.config_records.get(CONFIG)
    return int(config["server-round"]) if config is not None and "server-round" in config else 0


def mask_record(session: str, inbox: Mapping[int, bytes], collect: Mapping[str, Any]) -> ConfigRecord:
    """The record that turns a statistics/train/evaluate/personalise message into one bank's part of a secure sum."""
    return ConfigRecord(
        {"stage": MASK, "session": session, **collect, "sources": list(inbox), "ciphertexts": list(inbox.values())}
    )


def _typed_list(value: Any, kind: type, what: str, limit: int | None = None) -> list:
    if not isinstance(value, list) or any(type(v) is not kind for v in value):
        raise ProtocolError(f"{what} must be a list of {kind.__name__}")
    if limit is not None and any(len(v) > limit for v in value):
        raise ProtocolError(f"{what}: an entry is longer than {limit} bytes")
    return value


def read_stage_reply(stage: str, content: RecordDict) -> dict[str, Any]:
    """A key-stage reply, checked: advertise {pk1, pk2[, bank, signature]}; share {destinations, ciphertexts};
    reveal {owners, shares}."""
    _records(content, set(), set(), {SECAGG})
    record = content.config_records[SECAGG]
    if stage == "advertise":  # with a consortium roster, also the bank's name and its signature over its keys
        _keys(record, ("pk1", "pk2"), "advertise", ("bank", "signature"))
        for key in ("pk1", "pk2"):
            if not isinstance(record[key], bytes) or not 0 < len(record[key]) <= MAX_KEY_BYTES:
                raise ProtocolError(f"advertise: {key} must be a public key of at most {MAX_KEY_BYTES} bytes")
        keys = {"pk1": record["pk1"], "pk2": record["pk2"]}
        if "bank" in record or "signature" in record:
            bank, signature = record.get("bank"), record.get("signature")
            if not isinstance(bank, str) or not 0 < len(bank) <= MAX_BANK_NAME:
                raise ProtocolError(f"advertise: bank must be a bank name of at most {MAX_BANK_NAME} characters")
            if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
                raise ProtocolError(f"advertise: signature must be an Ed25519 signature ({SIGNATURE_BYTES} bytes)")
            keys.update(bank=bank, signature=signature)
        return keys
    first, second = {"share": ("destinations", "ciphertexts"), "reveal": ("owners", "shares")}[stage]
    _keys(record, (first, second), stage)
    nodes = _typed_list(record[first], int, f"{stage}: {first}")
    blobs = _typed_list(record[second], bytes, f"{stage}: {second}", MAX_SHARE_BYTES)
    if len(nodes) != len(blobs) or len(set(nodes)) != len(nodes):
        raise ProtocolError(f"{stage}: {first} and {second} must pair up, each node once")
    return {first: nodes, second: blobs}


def read_masked_reply(content: RecordDict, length: int, with_bank_info: bool) -> bytes | str:
    """The masked vector of a collect reply, or the bank's reason for withholding it."""
    _records(content, set(), set(), {SECAGG, BANK_INFO} if with_bank_info else {SECAGG})
    record = content.config_records[SECAGG]
    if set(record) == {"withheld"} and isinstance(record["withheld"], str):
        return " ".join(record["withheld"].split())[:500] or "no reason given"
    _keys(record, ("masked",), "masked reply")
    if not isinstance(record["masked"], bytes) or len(record["masked"]) != length * ENTRY_BYTES:
        raise ProtocolError(f"the masked vector must be {length} entries of {ENTRY_BYTES} bytes")
    return record["masked"]


# What goes into a bank's vector, in order. Layouts are fixed by the run (schema, model, bins),
# so the coordinator knows each sum's length and meaning before any bank answers.


def statistics_layout(schema: Schema) -> dict[str, Any]:
    """Rows, [count, sum, sum of squares] per numeric column, then a count per agreed category value."""
    return {"numeric": list(schema.numeric), "categories": {c: list(v) for c, v in schema.known_categories.items()}}


def statistics_length(layout: Mapping[str, Any]) -> int:
    return 1 + 3 * len(layout["numeric"]) + sum(len(v) for v in layout["categories"].values())


def statistics_vector(stats: Stats, layout: Mapping[str, Any]) -> np.ndarray:
    """A bank's statistics as one vector; categories outside the agreed values are not counted."""
    values: list[float] = [stats.rows]
    for col in layout["numeric"]:
        values.extend(stats.numeric[col])
    for col, categories in layout["categories"].items():
        counts = stats.categorical.get(col, {})
        values.extend(counts.get(value, 0) for value in categories)
    return np.asarray(values, dtype=np.float64)


def _whole(values: np.ndarray, what: str, upper: float) -> np.ndarray:
    rounded = np.rint(values)
    if not np.isfinite(values).all() or (np.abs(values - rounded) > 1e-6).any() or (rounded < 0).any():
        raise ProtocolError(f"the securely summed {what} are not whole non-negative numbers: a bank broke the protocol")
    if (rounded > upper).any():
        raise ProtocolError(f"the securely summed {what} exceed {upper:.0f}")
    return rounded


def read_statistics_sum(vector: np.ndarray, layout: Mapping[str, Any], banks: int) -> Stats:
    """The consortium's statistics from their secure sum, checked like one bank's."""
    if vector.shape != (statistics_length(layout),):
        raise ProtocolError("the summed statistics have the wrong length")
    rows = int(_whole(vector[:1], "rows", MAX_ROWS * banks)[0])
    if rows == 0:
        raise ProtocolError("the banks' summed statistics have no training rows")
    numeric, at = {}, 1
    for col in layout["numeric"]:
        n, s, ss = vector[at : at + 3]
        at += 3
        numeric[col] = _numeric(col, [float(_whole(np.array([n]), f"counts of '{col}'", rows)[0]), s, ss], rows)
    categorical = {}
    for col, categories in layout["categories"].items():
        counts = _whole(vector[at : at + len(categories)], f"category counts of '{col}'", rows)
        at += len(categories)
        if counts.sum() > rows:
            raise ProtocolError(f"the summed category counts of '{col}' exceed the rows")
        categorical[col] = {value: int(c) for value, c in zip(categories, counts, strict=True) if c}
    return Stats(numeric, categorical, rows)


def train_vector(weights: Sequence[np.ndarray], loss: float, rows: int, weight: float) -> np.ndarray:
    """weight x the bank's weights, then weight, weight x loss, rows: the sum gives the weighted mean."""
    return np.concatenate([flatten(weights) * weight, [weight, weight * loss, rows]])


def read_train_sum(
    vector: np.ndarray, reference: ArrayRecord, max_update_norm: float, banks: int
) -> tuple[list[np.ndarray], dict[str, float]]:
    """(weighted mean of the banks' weights, {train-loss, num-examples}), from their secure sum.

    The mean of updates each within `max_update_norm` of the global model is
    within it too: a mean beyond it means some bank skipped its own check.
    """
    global_weights = reference.to_numpy_ndarrays()
    size = sum(w.size for w in global_weights)
    if vector.shape != (size + 3,):
        raise ProtocolError("the summed update has the wrong length")
    weight, weighted_loss, rows = vector[size:]
    if not np.isfinite(vector).all() or weight <= 0.5 or weighted_loss < 0:
        raise ProtocolError("the summed update has no positive weight or a negative loss: a bank broke the protocol")
    rows = float(_whole(np.array([rows]), "rows", MAX_ROWS * banks)[0])
    mean = vector[:size] / weight
    distance = float(np.linalg.norm(mean - flatten(global_weights)))
    if distance > max_update_norm * (1 + 1e-6):
        raise ProtocolError(
            f"the mean update is {distance:.3g} from the global model, beyond privacy.max-update-norm="
            f"{max_update_norm:g}, which every bank checks its own update against: a bank broke the protocol"
        )
    out, at = [], 0
    for w in global_weights:
        out.append(mean[at : at + w.size].reshape(w.shape).astype(w.dtype))
        at += w.size
    return out, {"train-loss": float(weighted_loss / weight), "num-examples": int(rows)}


def summary_length(bins: int, groups: Mapping[str, int] | None = None) -> int:
    return len(metrics.COUNT_KEYS) + len(metrics.SUM_KEYS) + 2 * bins * (1 + sum((groups or {}).values()))


def summary_vector(summary: Mapping[str, Any], bins: int) -> np.ndarray:
    """Counts, sums, both histograms, then the per-group ones it carries: what pooled figures need, nothing per bank."""
    values = [float(summary[k]) for k in (*metrics.COUNT_KEYS, *metrics.SUM_KEYS)]
    values += [float(x) for k in metrics.HIST_KEYS for x in summary[k]]
    if len(values) != summary_length(bins):
        raise ValueError(f"the summary's histograms do not have histogram-bins={bins} bins")
    values += [float(x) for k in sorted(k for k in summary if k.startswith(GROUP_PREFIX)) for x in summary[k]]
    return np.asarray(values, dtype=np.float64)


def read_summary_sum(
    vector: np.ndarray, bins: int, threshold: float | None, banks: int, groups: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The pooled summary from the banks' secure sum, checked as one bank's summary is."""
    if vector.shape != (summary_length(bins, groups),):
        raise ProtocolError("the summed evaluation summary has the wrong length")
    base = summary_length(bins)
    grouped, vector = vector[base:], vector[:base]
    n_counts, n_sums = len(metrics.COUNT_KEYS), len(metrics.SUM_KEYS)
    counts = _whole(vector[:n_counts], "evaluation counts", MAX_ROWS * banks)
    hists = _whole(vector[n_counts + n_sums :], "histogram counts", MAX_ROWS * banks)
    record: dict[str, Any] = {k: float(v) for k, v in zip(metrics.COUNT_KEYS, counts, strict=True)}
    record.update({k: float(v) for k, v in zip(metrics.SUM_KEYS, vector[n_counts : n_counts + n_sums], strict=True)})
    record["hist-bad"], record["hist-good"] = [float(x) for x in hists[:bins]], [float(x) for x in hists[bins:]]
    n = max(counts[0], 1.0)
    bad, good = np.asarray(hists[:bins]), np.asarray(hists[bins:])
    auc = metrics.histogram_auc_ks(bad, good)[0] if bad.sum() and good.sum() else float("nan")
    record.update({"loss": float(max(record["sum-logloss"], 0.0) / n), "auc": float(auc), UNIT_WEIGHT: 1})
    start = 0
    for attr, key in zip(sorted(groups or {}), group_keys(groups or {}), strict=True):
        size = (groups or {})[attr] * 2 * bins
        record[key] = [float(x) for x in _whole(grouped[start : start + size], f"{key} counts", MAX_ROWS * banks)]
        start += size
    return read_summary(record, bins, None, threshold, what="summed evaluation summary", groups=groups)


def personalise_length(bins: int) -> int:
    return (len(CANDIDATES) + 1) * summary_length(bins) + len(CANDIDATES)


def personalise_vector(kept: str, summaries: Mapping[str, Mapping[str, Any]], bins: int) -> np.ndarray:
    """The three candidates' summaries, the kept model's summary, then which one was kept (one-hot)."""
    parts = [summary_vector(summaries[name], bins) for name in (*CANDIDATES, kept)]
    return np.concatenate([*parts, [float(kept == c) for c in CANDIDATES]])


def read_personalise_sum(
    vector: np.ndarray, bins: int, threshold: float | None, banks: int
) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """({model: banks that kept it}, {candidate or "kept": pooled summary}) from the banks' secure sum."""
    if vector.shape != (personalise_length(bins),):
        raise ProtocolError("the summed personalisation summaries have the wrong length")
    size = summary_length(bins)
    summaries = {
        name: read_summary_sum(vector[i * size : (i + 1) * size], bins, threshold, banks)
        for i, name in enumerate((*CANDIDATES, "kept"))
    }
    counts = _whole(vector[-len(CANDIDATES) :], "counts of kept models", banks)
    if counts.sum() != banks:
        raise ProtocolError("the counts of kept models do not add up to the banks")
    return {c: int(n) for c, n in zip(CANDIDATES, counts, strict=True)}, summaries


def profile_length(layout: Mapping[str, Any]) -> int:
    """Entries of a profile vector (`ProfileLayout.to_json`): per split rows, bads, then each feature's list."""
    numeric = len(layout["numeric"]) * (NUMERIC_BINS + 1)
    return len(PROFILE_SPLITS) * (2 + numeric + sum(len(v) + 2 for v in layout["categorical"].values()))


def profile_vector(content: RecordDict, layout: Mapping[str, Any]) -> np.ndarray:
    """A bank's profile reply as one vector, split by split, in the layout's order (counts add up over banks)."""
    values: list[float] = []
    for name in PROFILE_SPLITS.values():
        record = content[name]
        values += [float(record["rows"]), float(record["bads"])]
        for kind in KINDS:
            for col in layout[kind]:
                values += [float(v) for v in record[f"{kind}/{col}"]]
    if len(values) != profile_length(layout):
        raise ValueError("the profile does not have the layout's features and slots")
    return np.asarray(values, dtype=np.float64)


def read_profile_sum(
    vector: np.ndarray, layout: ProfileLayout, stats: Stats | None, val_fraction: float, banks: int
) -> dict[str, SplitProfile]:
    """The pooled profile from the banks' secure sum, checked as one bank's is.

    `stats`: the summed statistics of exactly these banks (None for a sum over
    some of them, as when a corrupted sum is taken again in groups).
    """
    if vector.shape != (profile_length(json.loads(layout.to_json())),):
        raise ProtocolError("the summed profile has the wrong length")
    counts = _whole(vector, "profile counts", MAX_ROWS * banks)
    profile, at = {}, 0
    for split, name in PROFILE_SPLITS.items():
        record: dict[str, Any] = {"rows": counts[at], "bads": counts[at + 1]}
        at += 2
        for key, _, col in _profile_keys(layout):
            record[key] = [float(v) for v in counts[at : at + layout.slots(col) + 1]]
            at += layout.slots(col) + 1
        profile[split] = _split_profile(record, layout, f"summed {name}", MAX_ROWS * banks)
    if stats is not None:
        _fits_statistics(profile["train"], stats, layout, every_category=False)
    _fits_validation(profile["train"], profile["validation"], val_fraction, banks)
    return profile


def reasons_vector(content: RecordDict) -> np.ndarray:
    """A bank's reasons reply as one vector in `ReasonLayout`'s order (the coordinator checks its length)."""
    record = content[REASON_COUNTS]
    values: list[float] = []
    for key in REASON_KEYS:
        values += [float(v) for v in record[key]] if isinstance(record[key], list) else [float(record[key])]
    return np.asarray(values, dtype=np.float64)


def read_reasons_sum(
    vector: np.ndarray,
    layout: ReasonLayout,
    banks: int,
    validation_rows: tuple[float, float] | None,
    declined: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The pooled reason counts from the banks' secure sum, checked as one bank's are."""
    if vector.shape != (layout.length,):
        raise ProtocolError("the summed reason counts have the wrong length")
    counts = [float(v) for v in _whole(vector, "reason counts", MAX_ROWS * banks)]
    f, c = len(layout.features), len(layout.constraints)
    record = {
        "rows": counts[0],
        "declined": counts[1],
        "no-reason": counts[2],
        "first": counts[3 : 3 + f],
        "any": counts[3 + f : 3 + 2 * f],
        "monotone-rows": counts[3 + 2 * f],
        "monotone-violations": counts[4 + 2 * f : 4 + 2 * f + c],
    }
    return _reason_counts(record, layout, validation_rows, declined, "summed reason counts", banks)
