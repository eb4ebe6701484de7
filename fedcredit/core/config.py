"""Typed, checked view of `[tool.flwr.app.config]`, from one table.

Every `RunConfig` field carries a `Key` (its run-config name, bounds, choices,
the strategies or privacy modes that use it, the Flower keyword it is passed
as, and its meaning). That one table drives parsing and validation here, the
strategy factory (`fedcredit.federation.strategies`) and the key
table of docs/configuration.md, so they cannot drift apart.

The run config is parsed once, in the ServerApp before round 1 and in each
ClientApp, so a wrong value stops the run with a message naming the key and
the valid range instead of failing somewhere in round 3. A key the chosen
strategy or privacy mode does not use never fails parsing (editing a default
in pyproject.toml must not break runs): `ignored_keys` lists such keys for a
warning, and `check_overrides` refuses them only when they were set on the
command line, where they are most likely a mistake.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from fedcredit.core.limits import MAX_CATEGORIES, MAX_CATEGORY_LENGTH, MAX_OFF_SCHEMA_SHARE, Limits
from fedcredit.core.partition import SCHEMES

STRATEGIES = (
    "fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedavgm",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "qfedavg",
)
# Client-level DP (one bank is the unit), Flower's wrappers; borrower-level DP-SGD is its own key (privacy.dp-sgd).
PRIVACY_MODES = ("none", "server-fixed", "client-fixed", "server-adaptive", "client-adaptive")
_FEDOPT = ("fedadam", "fedyogi", "fedadagrad")
_ADAM = ("fedadam", "fedyogi")
# Strategies whose aggregate is the FedAvg weighted mean of the banks' updates (the robust ones replace it).
_MEAN_FAMILY = ("fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad", "fedavgm")
_FIXED = ("server-fixed", "client-fixed")
# Secure aggregation hides each bank's update: only strategies and DP modes that need nothing but the sum.
SECURE_STRATEGIES = _MEAN_FAMILY
# Secure mode hides each bank's update: client-level modes that need one bank's update at the coordinator cannot
# run with it (DP-SGD noises at the bank, before anything leaves it, so it combines with secure mode).
SECURE_PRIVACY_MODES = ("none", "client-fixed")
_ADAPTIVE = ("server-adaptive", "client-adaptive")
_DP_SGD = ("dp-sgd",)  # the mechanism name the keys of privacy.dp-sgd are used with


class ConfigError(ValueError):
    """A run-config value is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class Key:
    """What one run-config key means and which values it takes (metadata of its RunConfig field)."""

    name: str  # run-config key, e.g. "strategy.eta"
    meaning: str  # one line, rendered into docs/configuration.md
    low: float | None = None
    low_closed: bool = True  # True: the value may equal `low` (>=); False: it must exceed it (>)
    high: float | None = None
    high_closed: bool = True
    choices: tuple[str, ...] = ()
    strategies: tuple[str, ...] | None = None  # strategies that use the key; None: not strategy-specific
    modes: tuple[str, ...] | None = None  # privacy modes that use the key; None: not mode-specific
    flower: str | None = None  # keyword of the Flower strategy / DP wrapper constructor it is passed as
    statistics: bool = False  # it decides what the banks' statistics are: a sweep gathers them once per combination
    operational: bool = False  # it says how long, where or what else to report, not what to train: resume may change it

    def valid_text(self) -> str:
        """The valid values in words, as messages and docs/configuration.md state them."""
        if self.choices:
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        parts = []
        if self.low is not None:
            parts.append(f"{'>=' if self.low_closed else '>'} {_number(self.low)}")
        if self.high is not None:
            parts.append(f"{'<=' if self.high_closed else '<'} {_number(self.high)}")
        return " and ".join(parts)

    def check(self, value: Any) -> None:
        """Raise ConfigError naming the key and its valid values if `value` is not one of them."""
        if self.choices and value not in self.choices:
            raise ConfigError(
                f"run config '{self.name}' = {value!r} is not a {self.name} value: choose one of {list(self.choices)}"
            )
        if isinstance(value, (str, bool)):
            return
        too_low = self.low is not None and (value < self.low or (value == self.low and not self.low_closed))
        too_high = self.high is not None and (value > self.high or (value == self.high and not self.high_closed))
        if too_low or too_high:
            raise ConfigError(f"run config '{self.name}' = {value} is out of range: it must be {self.valid_text()}")

    def used_with(self, strategy: str, mechanisms: Collection[str]) -> bool:
        """Whether a run with this strategy and these privacy mechanisms (its mode, and dp-sgd if on) reads the key."""
        return (self.strategies is None or strategy in self.strategies) and (
            self.modes is None or any(m in self.modes for m in mechanisms)
        )


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _key(
    name: str,
    default: Any,
    meaning: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] = (),
    strategies: tuple[str, ...] | None = None,
    modes: tuple[str, ...] | None = None,
    flower: str | None = None,
    statistics: bool = False,
    operational: bool = False,
) -> Any:
    """A RunConfig field with its Key; ge/gt and le/lt say whether each bound is closed or open."""
    if (ge is not None and gt is not None) or (le is not None and lt is not None):
        raise TypeError(f"{name}: give each bound once, closed (ge/le) or open (gt/lt)")
    spec = Key(
        name,
        meaning,
        low=gt if ge is None else ge,
        low_closed=gt is None,
        high=lt if le is None else le,
        high_closed=lt is None,
        choices=choices,
        strategies=strategies,
        modes=modes,
        flower=flower,
        statistics=statistics,
        operational=operational,
    )
    return field(default=default, metadata={"key": spec})


@dataclass(frozen=True)
class RunConfig:
    # rounds and reproducibility
    num_server_rounds: int = _key("num-server-rounds", 5, "federated rounds", ge=1, operational=True, le=10_000)
    seed: int = _key(
        "seed", 42, "seeds splits, initial weights, shuffling and dropout", ge=0, le=2**32 - 1, statistics=True
    )
    # data
    data_path: str = _key(
        "data-path",
        "",
        "simulation data: empty (or `builtin:lending_club`) the embedded LendingClub set, "
        "`builtin:taiwan_credit_card` the embedded Taiwan set (with its `schema-path`), else a CSV file "
        "(an absolute path: a CSV does not travel in the app bundle)",
        statistics=True,
    )
    schema_path: str = _key(
        "schema-path", "", "empty: built-in LendingClub schema; else a TOML schema file (below)", statistics=True
    )
    excluded_features: str = _key(
        "excluded-features",
        "",
        "schema features the model and the banks' statistics leave out (a less discriminatory alternative): "
        "names separated by commas, or by `+` inside a `sweep` (whose commas separate variants: "
        "`excluded-features=,int_rate,int_rate+sub_grade`); each must be a feature of the schema and one must "
        "remain; empty: every feature",
        statistics=True,
    )
    partitioning: str = _key(
        "partitioning",
        "region",
        "simulation split: `region` (geographic: 4 banks are the census regions, 9 the divisions, any other "
        "count balanced groups of states), `iid`, `dirichlet` (label skew)",
        choices=SCHEMES,
        statistics=True,
    )
    dirichlet_alpha: float = _key(
        "dirichlet-alpha", 0.5, "concentration for `dirichlet`; smaller is more skewed", gt=0, statistics=True
    )
    test_fraction: float = _key(
        "test-fraction", 0.2, "hold-out share kept out of every bank (simulation)", gt=0, lt=1, statistics=True
    )
    val_fraction: float = _key(
        "val-fraction", 0.2, "share of each bank's rows used for validation", gt=0, lt=1, statistics=True
    )
    min_category_count: int = _key(
        "min-category-count", 10, "categories rarer than this (over all banks) score as unknown", ge=1
    )
    # model
    hidden_units: str = _key("hidden-units", "64,32", "hidden layer sizes, separated by commas")
    dropout: float = _key("dropout", 0.2, "dropout after each hidden layer", ge=0, lt=1)
    l2: float = _key("l2", 1e-4, "L2 penalty on hidden weights", ge=0)
    monotone_constraints: bool = _key(
        "monotone-constraints",
        True,
        "build the schema's category orders and monotone constraints (`[order]`, `[monotone]`) into the model: "
        "its PD can only move in each declared direction; false: the plain MLP with one-hot categories "
        "(to measure what the constraints cost)",
    )
    learning_rate: float = _key("learning-rate", 1e-3, "Adam learning rate", gt=0)
    batch_size: int = _key("batch-size", 64, "local batch size", ge=1, le=1_000_000)
    local_epochs: int = _key("local-epochs", 3, "epochs per bank per round", ge=1, le=1_000)
    positive_weight: float = _key(
        "positive-weight",
        1.0,
        "loss weight of a defaulted loan; 1.0 keeps predicted PDs calibrated, ~18 balances the 5 % default rate",
        gt=0,
    )
    # evaluation
    threshold: float = _key(
        "threshold", 0.1, "PD at or above which a loan counts as flagged (accuracy, precision, recall, F1)", gt=0, le=1
    )
    histogram_bins: int = _key("histogram-bins", 2000, "score histogram bins for pooled AUC/KS", ge=10, le=100_000)
    holdout_eval: bool = _key(
        "holdout-eval",
        True,
        "ServerApp scores the hold-out set each round (simulation only: set false in deployment)",
        operational=True,
    )
    # the validation pack's headline: thresholds the consortium sets (read by `fedcredit report`)
    validation_min_auc: float = _key(
        "validation.min-auc",
        0.65,
        "headline verdict: pooled validation AUC must reach this (its 95 % interval decides pass or borderline)",
        ge=0,
        le=1,
        operational=True,
    )
    validation_max_psi: float = _key(
        "validation.max-psi",
        0.25,
        "headline verdict: no bank's score PSI against the other banks may exceed this (plain mode)",
        gt=0,
        operational=True,
    )
    validation_max_calibration_gap: float = _key(
        "validation.max-calibration-gap",
        0.02,
        "headline verdict: |observed default rate - mean PD| of the pooled validation rows may not exceed this",
        gt=0,
        le=1,
        operational=True,
    )
    fairness_min_group_size: int = _key(
        "fairness.min-group-size",
        30,
        "fair lending: a protected group with fewer loans is flagged too small to judge, and a bank's own group "
        "figures below it are never kept",
        ge=1,
        le=1_000_000,
        operational=True,
    )
    # federation
    fraction_train: float = _key(
        "fraction-train", 1.0, "share of connected banks asked to train each round", gt=0, le=1
    )
    fraction_evaluate: float = _key(
        "fraction-evaluate", 1.0, "share asked to evaluate (0 skips federated evaluation)", ge=0, le=1
    )
    evaluation: str = _key(
        "evaluation",
        "auto",
        "`folded`: each bank scores the incoming global model before training and sends the summary with its "
        "update (one message per bank per round, one final evaluation); `separate`: an evaluate message per "
        "round; `auto`: folded when banks read their own files (deployment), separate in simulation",
        choices=("auto", "folded", "separate"),
    )
    min_banks: int = _key(
        "min-banks",
        2,
        "banks needed to start; a training round with fewer usable replies is not aggregated; "
        "the run stops if fewer stay connected for `node-wait-timeout`",
        ge=1,
    )
    round_timeout: float = _key(
        "round-timeout", 600.0, "seconds to wait for replies in a round", gt=0, statistics=True, operational=True
    )
    node_wait_timeout: float = _key(
        "node-wait-timeout",
        300.0,
        "seconds to wait for `min-banks` SuperNodes (before round 1, and whenever too few are connected)",
        gt=0,
        operational=True,
    )
    output_dir: str = _key(
        "output-dir",
        "outputs",
        "where run directories go (relative to the directory the SuperLink was started from; "
        "the log prints the absolute path)",
        operational=True,
    )
    resume_from: str = _key(
        "resume-from",
        "",
        "a run directory whose run the coordinator's crash cut short: continue it from its last checkpoint "
        "(new run directory, rounds numbered on)",
        operational=True,
    )
    sweep: str = _key(
        "sweep",
        "",
        "variants run one after the other in this one run, over the same warm banks: `key=v1,v2; key2=v3` "
        "(every combination; each variant gets its own run directory); empty: one run",
    )
    # protection against a hostile or broken bank
    max_categories: int = _key(
        "max-categories",
        MAX_CATEGORIES,
        "distinct category values one bank may report per categorical column",
        ge=1,
        statistics=True,
    )
    max_category_length: int = _key(
        "max-category-length", MAX_CATEGORY_LENGTH, "characters of one category value", ge=1, statistics=True
    )
    max_off_schema_share: float = _key(
        "max-off-schema-share",
        MAX_OFF_SCHEMA_SHARE,
        "share of a bank's rows that may hold, in one categorical column, a value outside the schema's "
        "`[categories]` (such values score as unknown and are never counted); beyond it the bank's file is refused",
        ge=0,
        le=1,
        statistics=True,
    )
    update_clip: float = _key(
        "update-clip",
        2.0,
        "a bank's model update farther from the global model than this multiple of the "
        "round's median distance is scaled down to it; 0 switches it off",
        ge=0,
        strategies=_MEAN_FAMILY,
    )
    update_direction: str = _key(
        "update-direction",
        "exclude",
        "a bank's update that points away from the others' (cosine below 0 with the coordinate-wise median of "
        "their updates) is recorded as `suspicious` and, with `exclude`, three banks or more and no noise at the banks (client-side DP, DP-SGD), "
        "left out of the round (a round where half or more point away is not aggregated); `record` only records it",
        choices=("record", "exclude", "off"),
    )
    # aggregation strategy (keys "strategy.*")
    strategy_name: str = _key(
        "strategy.name", "fedavg", "aggregation strategy (Flower class in the table below)", choices=STRATEGIES
    )
    strategy_proximal_mu: float = _key(
        "strategy.proximal-mu",
        0.1,
        "mu of the proximal term mu/2 * (distance to the global model)^2 that each bank adds to its Keras loss",
        ge=0,
        strategies=("fedprox",),
        flower="proximal_mu",
    )
    strategy_eta: float = _key("strategy.eta", 0.01, "server learning rate", gt=0, strategies=_FEDOPT, flower="eta")
    strategy_beta_1: float = _key(
        "strategy.beta-1",
        0.9,
        "first-moment decay of the server optimiser",
        ge=0,
        lt=1,
        strategies=_ADAM,
        flower="beta_1",
    )
    strategy_beta_2: float = _key(
        "strategy.beta-2",
        0.99,
        "second-moment decay of the server optimiser",
        ge=0,
        lt=1,
        strategies=_ADAM,
        flower="beta_2",
    )
    strategy_tau: float = _key(
        "strategy.tau", 0.001, "adaptivity (smaller adapts more)", gt=0, strategies=_FEDOPT, flower="tau"
    )
    strategy_server_learning_rate: float = _key(
        "strategy.server-learning-rate",
        1.0,
        "server learning rate",
        gt=0,
        strategies=("fedavgm",),
        flower="server_learning_rate",
    )
    strategy_server_momentum: float = _key(
        "strategy.server-momentum",
        0.9,
        "server momentum",
        ge=0,
        le=1,
        strategies=("fedavgm",),
        flower="server_momentum",
    )
    strategy_trim_beta: float = _key(
        "strategy.trim-beta",
        0.2,
        "fraction of updates cut at each end",
        ge=0,
        lt=0.5,
        strategies=("fedtrimmedavg",),
        flower="beta",
    )
    strategy_num_malicious_nodes: int = _key(
        "strategy.num-malicious-nodes",
        0,
        "f, banks that may be hostile; krum and multikrum need at least 2f+3 banks, bulyan 4f+3",
        ge=0,
        strategies=("krum", "multikrum", "bulyan"),
        flower="num_malicious_nodes",
    )
    strategy_num_nodes_to_select: int = _key(
        "strategy.num-nodes-to-select",
        1,
        "updates averaged after selection",
        ge=1,
        strategies=("multikrum",),
        flower="num_nodes_to_select",
    )
    strategy_q: float = _key(
        "strategy.q",
        0.1,
        "fairness: larger weighs banks with a high loss more",
        ge=0,
        strategies=("qfedavg",),
        flower="q",
    )
    strategy_client_learning_rate: float = _key(
        "strategy.client-learning-rate",
        0.1,
        "the banks' learning rate as q-FedAvg assumes it",
        gt=0,
        strategies=("qfedavg",),
        flower="client_learning_rate",
    )
    # differential privacy (keys "privacy.*")
    privacy_mode: str = _key(
        "privacy.mode",
        "none",
        "client-level differential privacy: Flower's wrapper around the strategy (one bank, all its rows, is the "
        "unit); combines with privacy.dp-sgd",
        choices=PRIVACY_MODES,
    )
    privacy_dp_sgd: bool = _key(
        "privacy.dp-sgd",
        False,
        "borrower-level differential privacy: every bank trains with DP-SGD (per-example clipping and noise; one "
        "borrower is the unit), accounted per bank; combines with privacy.mode (both guarantees are reported)",
        modes=PRIVACY_MODES,  # with any of them
        statistics=True,  # a bank then states its training rows with its statistics (its epsilon's denominator)
    )
    privacy_noise_multiplier: float = _key(
        "privacy.noise-multiplier",
        0.1,
        "Gaussian noise, in multiples of the clipping norm",
        ge=0,
        modes=_FIXED + _ADAPTIVE,
        flower="noise_multiplier",
    )
    privacy_clipping_norm: float = _key(
        "privacy.clipping-norm",
        1.0,
        "each bank's update is clipped to this norm",
        gt=0,
        modes=_FIXED,
        flower="clipping_norm",
    )
    privacy_initial_clipping_norm: float = _key(
        "privacy.initial-clipping-norm",
        0.1,
        "clipping norm of round 1",
        gt=0,
        modes=_ADAPTIVE,
        flower="initial_clipping_norm",
    )
    privacy_target_clipped_quantile: float = _key(
        "privacy.target-clipped-quantile",
        0.5,
        "quantile of update norms the clipping norm adapts to",
        ge=0,
        le=1,
        modes=_ADAPTIVE,
        flower="target_clipped_quantile",
    )
    privacy_clip_norm_lr: float = _key(
        "privacy.clip-norm-lr", 0.2, "how fast the clipping norm adapts", gt=0, modes=_ADAPTIVE, flower="clip_norm_lr"
    )
    privacy_delta: float = _key(
        "privacy.delta",
        1e-5,
        "delta of the reported epsilon; `dp-sgd`: each bank uses min(privacy.delta, 1/(10 x its training rows))",
        gt=0,
        lt=1,
        modes=_FIXED + _DP_SGD,
    )
    privacy_example_clipping_norm: float = _key(
        "privacy.example-clipping-norm",
        1.0,
        "`dp-sgd`: each training row's gradient (L2 over all trainable weights) is clipped to this norm",
        gt=0,
        modes=_DP_SGD,
    )
    privacy_example_noise_multiplier: float = _key(
        "privacy.example-noise-multiplier",
        1.0,
        "`dp-sgd`: Gaussian noise added to each step's sum of clipped gradients, in multiples of the clipping norm",
        ge=0.1,
        le=100,
        modes=_DP_SGD,
    )
    privacy_target_epsilon: float = _key(
        "privacy.target-epsilon",
        0.0,
        "`dp-sgd`: the budget: a run whose last round would take any bank beyond this epsilon is refused before "
        "round 1 (and a bank refuses such a round itself); 0: no budget",
        ge=0,
        modes=_DP_SGD,
    )
    # secure aggregation (SecAgg+): the coordinator learns only sums
    privacy_secure_aggregation: bool = _key(
        "privacy.secure-aggregation",
        False,
        "SecAgg+: the coordinator sees only the sums of the banks' statistics, updates and evaluation "
        "summaries, never one bank's (strategies of the FedAvg family; privacy.mode `none` or `client-fixed`, "
        "with or without privacy.dp-sgd)",
        strategies=SECURE_STRATEGIES,
        modes=SECURE_PRIVACY_MODES,
        statistics=True,
    )
    privacy_secure_threshold: float = _key(
        "privacy.secure-threshold",
        0.6,
        "secure mode: share of the asked banks whose key shares rebuild a sum (always more than half): "
        "a sum survives banks dropping out down to it",
        gt=0.5,
        le=1,
        strategies=SECURE_STRATEGIES,
        modes=SECURE_PRIVACY_MODES,
        statistics=True,
    )
    privacy_max_update_norm: float = _key(
        "privacy.max-update-norm",
        5.0,
        "secure mode: each bank refuses to send an update farther than this (L2) from the global model, "
        "and a summed mean beyond it is not aggregated",
        gt=0,
        strategies=SECURE_STRATEGIES,
        modes=SECURE_PRIVACY_MODES,
    )
    # personalisation after the last round (keys "personalize.*")
    personalize_epochs: int = _key(
        "personalize.epochs",
        10,
        "epochs each bank fine-tunes the final global model on its own rows; it keeps the fine-tuned or a "
        "local-only model instead of the global one only if clearly better on its validation rows; 0: off",
        ge=0,
        operational=True,
        le=1_000,
    )
    personalize_layers: str = _key(
        "personalize.layers",
        "head",
        "what fine-tuning trains: `head` (the output layer) or `all`",
        choices=("head", "all"),
        operational=True,
    )
    personalize_learning_rate: float = _key(
        "personalize.learning-rate", 1e-3, "Adam learning rate of the fine-tuning", gt=0, operational=True
    )

    @property
    def limits(self) -> Limits:
        """What one bank may contribute to the preprocessing: its loading and the coordinator apply them."""
        return Limits(self.max_categories, self.max_category_length, self.max_off_schema_share)

    @property
    def excluded(self) -> tuple[str, ...]:
        """The `excluded-features` names, in order (`,` or `+` separate them; spaces around a name are dropped)."""
        return tuple(n.strip() for n in self.excluded_features.replace("+", ",").split(",") if n.strip())

    @property
    def privacy_mechanisms(self) -> tuple[str, ...]:
        """The run's privacy mode, and `dp-sgd` when on: what the privacy keys are used with."""
        return (self.privacy_mode, *(_DP_SGD if self.privacy_dp_sgd else ()))

    @property
    def hidden_layers(self) -> tuple[int, ...]:
        return tuple(int(u) for u in self.hidden_units.replace(" ", "").split(",") if u)

    def to_flower(self) -> dict[str, Any]:
        """The config under its run-config key names (for history and outputs)."""
        return {key_of(f.name): v for f, v in zip(fields(self), asdict(self).values())}


KEYS: dict[str, Key] = {f.name: f.metadata["key"] for f in fields(RunConfig)}  # field name -> Key
STATISTICS_KEYS = tuple(k.name for k in KEYS.values() if k.statistics)
OPERATIONAL_KEYS = tuple(k.name for k in KEYS.values() if k.operational)
_TYPES: dict[str, type] = get_type_hints(RunConfig)
_FIELD_OF: dict[str, str] = {spec.name: name for name, spec in KEYS.items()}  # run-config key -> field name


def _params(prefix: str, users: str, choices: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Which `prefix.*` parameters (field names without the prefix) each strategy / privacy mode takes."""
    return {
        choice: tuple(
            name[len(prefix) + 1 :]
            for name, spec in KEYS.items()
            if name.startswith(prefix + "_") and choice in (getattr(spec, users) or ())
        )
        for choice in choices
    }


# Derived from the table; compare.py and the tests read them.
STRATEGY_PARAMS: dict[str, tuple[str, ...]] = _params("strategy", "strategies", STRATEGIES)
PRIVACY_PARAMS: dict[str, tuple[str, ...]] = _params("privacy", "modes", PRIVACY_MODES + _DP_SGD)


def key_of(field_name: str) -> str:
    """Run-config key of a RunConfig field: strategy_eta -> "strategy.eta", batch_size -> "batch-size"."""
    return KEYS[field_name].name


def _coerce(spec: Key, value: Any, kind: type) -> Any:
    key = spec.name
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return value.lower() == "true"
        raise ConfigError(f"run config '{key}' must be true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"run config '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(
                f"run config '{key}' must be a finite number ({spec.valid_text() or 'any'}), got {value!r}"
            )
        if kind is int:
            if int(value) != value:
                raise ConfigError(f"run config '{key}' must be a whole number, got {value!r}")
            return int(value)
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"run config '{key}' must be a string, got {value!r}")
    return value


# A typo must not make every bank build a model without limit (each bank also sets its own: `BankLimits`).
MAX_LAYERS = 16
MAX_LAYER_UNITS = 4096


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Check every key; unknown keys are rejected so typos do not go unnoticed.

    Keys the chosen strategy or privacy mode does not use are accepted (see `ignored_keys`).
    """
    if raw.get("privacy.mode") == "dp-sgd":
        raise ConfigError(
            "run config 'privacy.mode' = 'dp-sgd' is now its own key: set privacy.dp-sgd = true (and privacy.mode to "
            "'none', or to a client-level mode to have both guarantees)"
        )
    unknown = sorted(set(raw) - set(_FIELD_OF))
    if unknown:
        raise ConfigError(f"unknown run-config keys {unknown}; valid keys: {sorted(_FIELD_OF)}")
    names = {key: _FIELD_OF[key] for key in raw}
    values = {names[key]: _coerce(KEYS[names[key]], value, _TYPES[names[key]]) for key, value in raw.items()}
    cfg = RunConfig(**values)
    for name, spec in KEYS.items():
        spec.check(getattr(cfg, name))
    try:
        layers = cfg.hidden_layers
    except ValueError as err:
        raise ConfigError(
            f"run config 'hidden-units' = {cfg.hidden_units!r}: give layer sizes separated by commas, e.g. \"64,32\""
        ) from err
    if not layers or min(layers) < 1:
        raise ConfigError(
            f"run config 'hidden-units' = {cfg.hidden_units!r}: give at least one positive layer size, e.g. \"32\""
        )
    if len(layers) > MAX_LAYERS or max(layers) > MAX_LAYER_UNITS:
        raise ConfigError(
            f"run config 'hidden-units' = {cfg.hidden_units!r}: at most {MAX_LAYERS} layers of at most "
            f"{MAX_LAYER_UNITS} units each"
        )
    excluded = cfg.excluded
    if len(set(excluded)) < len(excluded):
        raise ConfigError(
            f"run config 'excluded-features' = {cfg.excluded_features!r} names a feature twice: list each once"
        )
    if cfg.privacy_secure_aggregation:
        check_secure(cfg)
    if cfg.privacy_dp_sgd and cfg.personalize_epochs > 0:
        raise ConfigError(
            f"privacy.dp-sgd = true with personalize.epochs = {cfg.personalize_epochs}: personalisation trains "
            "two more models on each bank's rows without DP-SGD and its summaries would leave the bank outside the "
            "privacy accounting; set personalize.epochs = 0"
        )
    if cfg.evaluation == "folded" and cfg.privacy_mode == "client-adaptive":
        raise ConfigError(
            "evaluation = 'folded' cannot run with privacy.mode = 'client-adaptive': Flower's adaptive clipping mod "
            "allows one metric record per train reply; use evaluation = 'separate' (or 'auto')"
        )
    return cfg


@dataclass(frozen=True)
class BankLimits:
    """What one run may ask of a bank's machine, set by the bank (node config), whatever the coordinator sends.

    A hostile or mistyped run config could otherwise make every bank train for
    days or allocate without bound; beyond these a bank refuses the message with
    the reason. The defaults leave room for any sensible run.
    """

    max_rounds: int = 1_000  # num-server-rounds
    max_local_epochs: int = 100  # local-epochs
    max_personalize_epochs: int = 100  # personalize.epochs
    max_histogram_bins: int = 100_000  # histogram-bins
    max_hidden_units: int = 4_096  # hidden-units, summed over the layers
    max_batch_size: int = 100_000  # batch-size

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> BankLimits:
        values = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key in node_config:
                value = node_config[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(f"node config '{key}' = {value!r}: give a whole number of at least 1")
                values[f.name] = value
        return cls(**values)

    def check(self, cfg: RunConfig) -> None:
        """Raise ConfigError naming the key and the bank's limit if the run asks for more."""
        asked = (
            ("num-server-rounds", cfg.num_server_rounds, self.max_rounds, "max-rounds"),
            ("local-epochs", cfg.local_epochs, self.max_local_epochs, "max-local-epochs"),
            ("personalize.epochs", cfg.personalize_epochs, self.max_personalize_epochs, "max-personalize-epochs"),
            ("histogram-bins", cfg.histogram_bins, self.max_histogram_bins, "max-histogram-bins"),
            ("hidden-units", sum(cfg.hidden_layers), self.max_hidden_units, "max-hidden-units"),
            ("batch-size", cfg.batch_size, self.max_batch_size, "max-batch-size"),
        )
        for key, value, limit, node_key in asked:
            if value > limit:
                raise ConfigError(
                    f"the run asks for {key} = {value}, more than this bank allows ({limit}; node config "
                    f"'{node_key}'): lower it in the run config, or raise the bank's limit"
                )


def check_secure(cfg: RunConfig) -> None:
    """Secure mode shows the coordinator only sums: what needs one bank's numbers cannot run with it."""
    if cfg.strategy_name not in SECURE_STRATEGIES:
        raise ConfigError(
            f"privacy.secure-aggregation = true: strategy.name = {cfg.strategy_name!r} needs each bank's own "
            f"update, which secure aggregation hides; choose one of {list(SECURE_STRATEGIES)}"
        )
    if cfg.privacy_mode not in SECURE_PRIVACY_MODES:
        raise ConfigError(
            f"privacy.secure-aggregation = true: privacy.mode = {cfg.privacy_mode!r} needs each bank's own "
            f"update (or its clipping bit) at the coordinator; choose one of {list(SECURE_PRIVACY_MODES)}"
        )


def _unused(cfg: RunConfig) -> list[str]:
    """Field names of the keys this run's strategy and privacy mode do not read."""
    return [name for name, spec in KEYS.items() if not spec.used_with(cfg.strategy_name, cfg.privacy_mechanisms)]


def ignored_keys(cfg: RunConfig) -> list[str]:
    """Keys whose value differs from the RunConfig default but that the chosen strategy / privacy mode ignores.

    The ServerApp warns about each one: the value has no effect on this run.
    """
    default = RunConfig()
    return [key_of(name) for name in _unused(cfg) if getattr(cfg, name) != getattr(default, name)]


def _users(spec: Key, cfg: RunConfig) -> str:
    """Why a key is unused by this run, naming the strategies or modes that use it."""
    if spec.strategies is not None and cfg.strategy_name not in spec.strategies:
        return f"is a parameter of {list(spec.strategies)}, but strategy.name = {cfg.strategy_name!r}"
    return f"is a parameter of {list(spec.modes or ())}, but privacy.mode = {cfg.privacy_mode!r}"


def check_overrides(raw: Mapping[str, Any], app_defaults: Mapping[str, Any], cfg: RunConfig) -> None:
    """Refuse keys set for this run (differing from the app's pyproject defaults) that the run does not use.

    `raw` is the run config the run received, `app_defaults` the app's own defaults (`app_defaults()`), `cfg`
    the parsed `raw`. Such a key was most likely meant for another strategy or privacy mode.
    """
    wrong = []
    for name in _unused(cfg):
        spec = KEYS[name]
        if spec.name not in raw:
            continue
        default = _coerce(spec, app_defaults.get(spec.name, getattr(RunConfig(), name)), _TYPES[name])
        if getattr(cfg, name) != default:
            wrong.append(f"'{spec.name}' = {getattr(cfg, name)!r} {_users(spec, cfg)}")
    if wrong:
        raise ConfigError(
            "run config sets keys this run does not use: "
            + "; ".join(wrong)
            + ". Remove them from --run-config or choose a strategy / privacy mode that uses them"
        )


def strategy_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """Keyword arguments of the chosen Flower strategy's constructor, from the table."""
    return {
        spec.flower: getattr(cfg, name)
        for name, spec in KEYS.items()
        if spec.flower and spec.strategies is not None and cfg.strategy_name in spec.strategies
    }


def privacy_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """Keyword arguments of the chosen DP wrapper's constructor, from the table."""
    return {
        spec.flower: getattr(cfg, name)
        for name, spec in KEYS.items()
        if spec.flower and spec.modes is not None and cfg.privacy_mode in spec.modes
    }


def app_defaults(app_dir: Path) -> dict[str, Any]:
    """`[tool.flwr.app.config]` of `app_dir/pyproject.toml`, nested tables flattened to dotted keys as Flower does."""
    path = Path(app_dir) / "pyproject.toml"
    try:
        table = tomllib.loads(path.read_text())["tool"]["flwr"]["app"]["config"]
    except FileNotFoundError as err:
        raise ConfigError(f"{path} does not exist: give the app directory (the one holding pyproject.toml)") from err
    except KeyError as err:
        raise ConfigError(
            f"{path} has no [tool.flwr.app.config] table: it holds the app's run-config defaults"
        ) from err

    def flatten(node: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    return flatten(table, "")


def _toml(value: Any) -> str:
    """A default as pyproject.toml writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, float) and "e" in repr(value):
        return f"{value:.12f}".rstrip("0")
    return repr(value)


def config_table() -> str:
    """The Markdown table of docs/configuration.md of every key: default, valid values, the strategies or modes using it, meaning."""
    rows = ["| key | default | valid values | strategy / privacy mode | meaning |", "| --- | --- | --- | --- | --- |"]
    default = RunConfig()
    for name, spec in KEYS.items():
        kind = _TYPES[name]
        valid = "true, false" if kind is bool else spec.valid_text() or ("text" if kind is str else "any")
        users = spec.strategies if spec.strategies is not None else spec.modes
        used = ", ".join(f"`{u}`" for u in users) if users is not None else "any"
        rows.append(f"| `{spec.name}` | {_toml(getattr(default, name))} | {valid} | {used} | {spec.meaning} |")
    return "\n".join(rows) + "\n"


def sweep_variants(text: str) -> list[dict[str, Any]]:
    """The run-config overrides of every variant of a `sweep` (every combination of the listed values)."""
    axes: list[tuple[str, list[Any]]] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        key, sep, values = part.partition("=")
        key = key.strip()
        if not sep or key not in _FIELD_OF or key in ("sweep", "resume-from"):
            raise ConfigError(
                f"sweep: {part!r} is not `key=value1,value2` with a run-config key (not sweep or resume-from); "
                "separate keys with ';', e.g. \"strategy.name=fedavg,fedprox; seed=42,1\""
            )
        if any(k == key for k, _ in axes):
            raise ConfigError(f"sweep: key {key!r} appears twice: list all its values once")
        field_name = _FIELD_OF[key]
        kind = _TYPES[field_name]
        parsed = []
        for raw in (v.strip() for v in values.split(",")):
            try:
                value: Any = raw if kind in (str, bool) else float(raw)
            except ValueError:
                raise ConfigError(f"sweep: {key} = {raw!r} is not a number") from None
            parsed.append(_coerce(KEYS[field_name], value, kind))
        axes.append((key, parsed))
    if not axes:
        raise ConfigError('sweep: no variants: give `key=value1,value2`, e.g. "strategy.name=fedavg,fedprox"')
    variants: list[dict[str, Any]] = [{}]
    for key, values in axes:
        variants = [{**v, key: value} for v in variants for value in values]
    return variants
