"""The columns a bank's loan file must have, and what each one means.

Every schema is a small TOML file (see ``Schema.from_toml``), the built-in
LendingClub one included (`fedcredit/data/lending_club.toml`). A relative
`schema-path` resolves against the app directory: a schema placed in the app
travels inside the FAB to every SuperNode, so every bank validates its file
against the identical contract, and the SHA-256 of the parsed schema
(`Schema.sha256`) that each bank reports proves it.

A schema may also declare protected attributes (`[protected.<column>]`: sex,
age, marital status): columns a bank's file must carry for the fair-lending
analysis of outcomes by group, and which may never be a model input, so they
can be neither a feature nor the target or partition column.

Besides the columns, a schema may declare what the model must respect and how
its reasons read (all optional): `[order]` ranks a categorical column's values
(the model reads them as steps along that order, not as unrelated labels),
`[monotone]` says in which direction the probability of default must move as a
feature rises (the model holds it by construction, `fedcredit.core.model`),
`[reasons]` gives each feature the plain statement a notice prints when it is a
reason (`fedcredit.risk.explain`), and `[bounds]` the values a numeric feature
can take, which bound the range reasons and the monotonicity check compare
against.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

# The group of a protected attribute's rows whose value is missing or not a declared group: always the last one.
UNDOCUMENTED = "undocumented"
DIRECTIONS = {"increasing": 1, "decreasing": -1}  # [monotone] values: +1 PD rises with the feature, -1 it falls
MAX_REASON_TEXT = 120  # characters of one reason statement: a line of a notice
# Fields added after the first schemas: left out of the digest while empty, so older schemas keep theirs.
_OPTIONAL_FIELDS = ("order", "monotone", "reasons", "bounds", "protected")


class SchemaError(ValueError):
    """A schema file is missing a key or contradicts itself."""


def _band_name(low: float | None, high: float | None) -> str:
    """A band's default name: `<25`, `25-39`, `>=62` for whole-number edges, `0.5 to <1.5` otherwise."""
    whole = all(e is None or float(e).is_integer() for e in (low, high))

    def num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else repr(float(x))

    if low is None:
        return f"<{num(high)}"  # type: ignore[arg-type]
    if high is None:
        return f">={num(low)}"
    return f"{num(low)}-{num(high - 1)}" if whole and high - low >= 1 else f"{num(low)} to <{num(high)}"


@dataclass(frozen=True)
class Protected:
    """How one protected attribute's values form groups: a value map or numeric bands (one of the two).

    `groups`: (value as the CSV cell's text, stripped; group name) pairs, as
    `groups = { "1" = "male", "2" = "female" }` declares them; several values
    may share a group. `bands`: ascending edges e1 < e2 < ... of numeric bands
    value < e1, e1 <= value < e2, ..., value >= ek, named by `band_names`
    (default `<e1`, `e1-(e2-1)`, ..., `>=ek`). Rows whose value is missing or
    undeclared (for bands: not a number) fall into `undocumented`, the last group.
    """

    column: str
    groups: tuple[tuple[str, str], ...] = ()
    bands: tuple[float, ...] = ()
    band_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"protected column '{self.column}'"
        if bool(self.groups) == bool(self.bands):
            raise SchemaError(
                f"{where}: give either `groups` (value -> group name) or `bands` (ascending numeric edges), "
                "exactly one of the two"
            )
        if self.band_names and not self.bands:
            raise SchemaError(f"{where}: `names` names the bands of `bands`; a value map names its groups itself")
        for value, _ in self.groups:
            if not value or value != value.strip():
                raise SchemaError(
                    f"{where}: group value {value!r} is empty or has surrounding spaces; values are matched "
                    "against the CSV cell's text with spaces stripped (and a missing value is always "
                    f"'{UNDOCUMENTED}')"
                )
        values = [v for v, _ in self.groups]
        if len(set(values)) < len(values):
            raise SchemaError(f"{where}: a value is mapped to more than one group")
        edges = self.bands
        if any(not math.isfinite(e) for e in edges) or any(a >= b for a, b in zip(edges, edges[1:])):
            raise SchemaError(f"{where}: `bands` must be finite numbers in strictly ascending order, got {list(edges)}")
        if self.band_names and len(self.band_names) != len(edges) + 1:
            raise SchemaError(
                f"{where}: {len(edges)} band edges make {len(edges) + 1} bands, but `names` gives "
                f"{len(self.band_names)} names"
            )
        names = self.names
        if any(not n.strip() for n in names):
            raise SchemaError(f"{where}: a group name is empty")
        if UNDOCUMENTED in (n.strip().lower() for n in names):
            raise SchemaError(
                f"{where}: '{UNDOCUMENTED}' is the reserved group of missing and undeclared values: do not declare "
                "it (leave such values out of the map) and name the other groups differently"
            )
        if self.bands and len(set(names)) < len(names):
            raise SchemaError(f"{where}: band names must differ, got {list(names)}")

    @property
    def names(self) -> tuple[str, ...]:
        """The declared groups in order (value map: first appearance; bands: ascending), without `undocumented`."""
        if self.groups:
            return tuple(dict.fromkeys(name for _, name in self.groups))
        if self.band_names:
            return self.band_names
        edges: list[float | None] = [None, *self.bands, None]
        return tuple(_band_name(lo, hi) for lo, hi in zip(edges, edges[1:]))

    @property
    def group_names(self) -> tuple[str, ...]:
        """Every group a row can fall into: the declared ones, then `undocumented`."""
        return (*self.names, UNDOCUMENTED)

    @classmethod
    def from_table(cls, column: str, table: Any) -> Protected:
        """One `[protected.<column>]` table: `groups = {...}`, or `bands = [...]` with optional `names = [...]`."""
        where = f"[protected.{column}]"
        if not isinstance(table, dict):
            raise SchemaError(f'{where} must be a table with `groups` or `bands`, e.g. groups = {{ "1" = "male" }}')
        unknown = sorted(set(table) - {"groups", "bands", "names"})
        if unknown:
            raise SchemaError(f"{where}: unknown keys {unknown}; valid keys are ['bands', 'groups', 'names']")
        groups = table.get("groups", {})
        if not isinstance(groups, dict) or not all(isinstance(n, str) for n in groups.values()):
            raise SchemaError(
                f'{where}: `groups` maps values to group names, e.g. groups = {{ "1" = "male", "2" = "female" }} '
                "(quote the values: 1.0 unquoted would be a dotted key)"
            )
        bands = table.get("bands", [])
        if not isinstance(bands, list) or not all(
            isinstance(e, (int, float)) and not isinstance(e, bool) for e in bands
        ):
            raise SchemaError(f"{where}: `bands` is a list of numbers, e.g. bands = [25, 40, 62]")
        names = table.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SchemaError(f'{where}: `names` is a list of texts, e.g. names = ["<=24", "25-39", "40-61", ">=62"]')
        return cls(
            column=column,
            groups=tuple((str(v), n) for v, n in groups.items()),
            bands=tuple(float(e) for e in bands),
            band_names=tuple(names),
        )


@dataclass(frozen=True)
class Schema:
    """Target, labels and feature columns of a loan table."""

    target: str
    positive_label: str
    negative_label: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    # A column used only to split the built-in data into "banks" (never a feature).
    partition: str | None = None
    # Category values the consortium agreed on, per categorical column (optional):
    # `fedcredit validate` lists a bank's other values (typos, new codes).
    categories: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Protected attributes (`[protected.<column>]`): read at the bank for the fairness analysis only.
    protected: tuple[Protected, ...] = ()
    # Categorical columns whose values are ranked, lowest first: the model encodes them as steps.
    order: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Feature -> "increasing" / "decreasing": how the PD must move as the feature rises (or goes up its order).
    monotone: tuple[tuple[str, str], ...] = ()
    # Feature -> the statement a notice prints when the feature is a reason ("Annual income is low").
    reasons: tuple[tuple[str, str], ...] = ()
    # Numeric feature -> (lowest, highest) value it can take (-inf / inf: unbounded).
    bounds: tuple[tuple[str, tuple[float, float]], ...] = ()

    def __post_init__(self) -> None:
        features = list(self.numeric) + list(self.categorical)
        if not features:
            raise SchemaError("schema has no feature columns: list at least one in 'numeric' or 'categorical'")
        dupes = sorted({c for c in features if features.count(c) > 1})
        if dupes:
            raise SchemaError(f"schema lists these columns more than once: {dupes}")
        stray = sorted(set(dict(self.categories)) - set(self.categorical))
        if stray:
            raise SchemaError(f"schema lists categories for {stray}, which are not categorical columns")
        for special in (self.target, self.partition):
            if special is not None and special in features:
                raise SchemaError(f"column '{special}' cannot be both a feature and the target/partition column")
        if self.positive_label == self.negative_label:
            raise SchemaError(f"positive and negative label are both '{self.positive_label}'")
        protected = list(self.protected_columns)
        if len(set(protected)) < len(protected):
            raise SchemaError(f"schema declares a protected column twice: {protected}")
        used = sorted(set(protected) & ({*features, self.target, self.partition} - {None}))
        if used:
            raise SchemaError(
                f"protected column(s) {used} are also listed as a feature, the target or the partition column: "
                "a protected attribute may never be a model input (nor decide the split); remove it from "
                "'numeric'/'categorical' (or 'target'/'partition') and keep it under [protected] only"
            )
        self._check_order()
        self._check_monotone()
        self._check_reasons()
        self._check_bounds()

    def _not_features(self, table: str, columns: Any) -> None:
        stray = sorted(set(columns) - set(self.features))
        if stray:
            raise SchemaError(
                f"[{table}] names {stray}, which are not feature columns: features are {list(self.features)}"
            )

    def _check_order(self) -> None:
        orders = dict(self.order)
        if len(orders) != len(self.order):
            raise SchemaError("[order] lists a column more than once")
        self._not_features("order", orders)
        numeric = sorted(set(orders) & set(self.numeric))
        if numeric:
            raise SchemaError(f"[order] names numeric columns {numeric}: only categorical columns take an order")
        declared = dict(self.categories)
        for col, levels in orders.items():
            if not levels:
                raise SchemaError(f"[order] {col} is empty: list its values, lowest first")
            twice = sorted({v for v in levels if levels.count(v) > 1})
            if twice:
                raise SchemaError(f"[order] {col} lists {twice} more than once")
            if col in declared and set(levels) != set(declared[col]):
                missing = sorted(set(declared[col]) - set(levels))
                extra = sorted(set(levels) - set(declared[col]))
                raise SchemaError(
                    f"[order] {col} must list exactly its [categories] values, each once: "
                    f"missing {missing}, not among its categories {extra}"
                )

    def _check_monotone(self) -> None:
        directions = dict(self.monotone)
        if len(directions) != len(self.monotone):
            raise SchemaError("[monotone] lists a feature more than once")
        self._not_features("monotone", directions)
        for col, direction in directions.items():
            if direction not in DIRECTIONS:
                raise SchemaError(
                    f"[monotone] {col} = {direction!r}: give one of {list(DIRECTIONS)} "
                    "(how the probability of default moves as the feature rises)"
                )
        unordered = sorted(c for c in directions if c in self.categorical and c not in dict(self.order))
        if unordered:
            raise SchemaError(
                f"[monotone] names categorical columns {unordered} without an [order]: "
                "a direction needs the order of their values, lowest first"
            )

    def _check_reasons(self) -> None:
        texts = dict(self.reasons)
        if len(texts) != len(self.reasons):
            raise SchemaError("[reasons] lists a feature more than once")
        self._not_features("reasons", texts)
        for col, text in texts.items():
            if not text.strip() or len(text) > MAX_REASON_TEXT or any(ord(ch) < 32 for ch in text):
                raise SchemaError(
                    f"[reasons] {col}: give one line of at most {MAX_REASON_TEXT} characters "
                    f"(no tabs or line breaks), got {text!r}"
                )

    def _check_bounds(self) -> None:
        bounds = dict(self.bounds)
        if len(bounds) != len(self.bounds):
            raise SchemaError("[bounds] lists a column more than once")
        self._not_features("bounds", bounds)
        categorical = sorted(set(bounds) & set(self.categorical))
        if categorical:
            raise SchemaError(f"[bounds] names categorical columns {categorical}: only numeric columns take bounds")
        for col, (low, high) in bounds.items():
            if math.isnan(low) or math.isnan(high) or not low < high:
                raise SchemaError(f"[bounds] {col} = [{low}, {high}]: give [lowest, highest] with lowest < highest")

    @property
    def sha256(self) -> str:
        """Digest of the parsed schema: the same contract gives the same digest, whatever the comments."""
        fields = {k: v for k, v in asdict(self).items() if k not in _OPTIONAL_FIELDS or v}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode("utf-8")).hexdigest()

    @property
    def known_categories(self) -> dict[str, tuple[str, ...]]:
        """The agreed values per categorical column: its [categories], else its [order]."""
        return {**dict(self.order), **dict(self.categories)}

    @property
    def orders(self) -> dict[str, tuple[str, ...]]:
        """Ordered categorical column -> its values, lowest first."""
        return dict(self.order)

    @property
    def directions(self) -> dict[str, int]:
        """Monotone feature -> +1 (PD rises with it) or -1 (PD falls as it rises)."""
        return {col: DIRECTIONS[d] for col, d in self.monotone}

    def reason_text(self, feature: str) -> str:
        """The statement a notice prints when `feature` is a reason: the schema's, else one made from the name."""
        return dict(self.reasons).get(feature) or default_reason_text(feature, self.directions.get(feature))

    def bound(self, feature: str) -> tuple[float, float]:
        """(lowest, highest) value a numeric feature can take; (-inf, inf) unless [bounds] says otherwise."""
        return dict(self.bounds).get(feature, (-math.inf, math.inf))

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def protected_columns(self) -> tuple[str, ...]:
        """The protected attributes' columns: never features, never sent, never passed through by predict."""
        return tuple(p.column for p in self.protected)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a bank's file must carry (the partition column is optional), protected ones last."""
        return self.features + (self.target,) + self.protected_columns

    def without(self, columns: tuple[str, ...] | list[str]) -> Schema:
        """The schema less some features (run config `excluded-features`): the model and statistics omit them.

        Its SHA-256 differs from the full schema's (it is another feature set),
        the same on every side that applies the same run config.
        """
        columns = tuple(columns)
        if not columns:
            return self
        for col in columns:
            if col in self.protected_columns:
                raise SchemaError(f"'{col}' is a protected attribute, never a feature: there is nothing to exclude")
        unknown = sorted(set(columns) - set(self.features))
        if unknown:
            raise SchemaError(f"{unknown} are not features of the schema; its features are {list(self.features)}")
        if set(self.features) <= set(columns):
            raise SchemaError("excluding every feature leaves the model no input: keep at least one")
        return replace(
            self,
            numeric=tuple(c for c in self.numeric if c not in columns),
            categorical=tuple(c for c in self.categorical if c not in columns),
            categories=tuple((c, v) for c, v in self.categories if c not in columns),
            order=tuple((c, v) for c, v in self.order if c not in columns),
            monotone=tuple((c, d) for c, d in self.monotone if c not in columns),
            reasons=tuple((c, t) for c, t in self.reasons if c not in columns),
            bounds=tuple((c, b) for c, b in self.bounds if c not in columns),
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> Schema:
        """Read a schema file such as::

        target = "Class"
        positive-label = "bad"
        negative-label = "good"
        numeric = ["funded_amnt", "int_rate"]
        categorical = ["term"]

        [categories]            # optional: the agreed values per categorical column
        term = ["36 months", "60 months"]

        [protected.SEX]         # optional: protected attributes, never features
        groups = { "1" = "male", "2" = "female" }
        [protected.AGE]
        bands = [25, 40, 62]    # <25, 25-39, 40-61, >=62 (or name them: names = [...])
        [order]                 # optional: ranked categorical columns, lowest first
        term = ["36 months", "60 months"]

        [monotone]              # optional: how the PD must move as the feature rises
        int_rate = "increasing"
        term = "increasing"     # a categorical column needs an [order]

        [reasons]               # optional: what a notice says when the feature is a reason
        int_rate = "Interest rate on the loan is high"

        [bounds]                # optional: the values a numeric feature can take
        int_rate = [0, 100]     # inf for no upper bound
        """
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise SchemaError(f"schema file {path} does not exist: set 'schema-path' to an existing TOML file") from err
        except tomllib.TOMLDecodeError as err:
            raise SchemaError(f"schema file {path} is not valid TOML: {err}") from err
        known = {
            "target",
            "positive-label",
            "negative-label",
            "numeric",
            "categorical",
            "partition",
            "categories",
            *_OPTIONAL_FIELDS,
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SchemaError(f"schema file {path}: unknown keys {unknown}; valid keys are {sorted(known)}")
        missing = sorted({"target", "positive-label", "negative-label"} - set(raw))
        if missing:
            raise SchemaError(f"schema file {path}: missing keys {missing}")
        try:
            return cls(
                target=str(raw["target"]),
                positive_label=str(raw["positive-label"]),
                negative_label=str(raw["negative-label"]),
                numeric=tuple(str(c) for c in raw.get("numeric", [])),
                categorical=tuple(str(c) for c in raw.get("categorical", [])),
                partition=str(raw["partition"]) if raw.get("partition") else None,
                categories=tuple(
                    (str(c), tuple(str(v) for v in vals)) for c, vals in raw.get("categories", {}).items()
                ),
                protected=_protected(raw.get("protected", {})),
                order=tuple((str(c), tuple(str(v) for v in vals)) for c, vals in _table(raw, "order", list).items()),
                monotone=tuple((str(c), str(d)) for c, d in _table(raw, "monotone", str).items()),
                reasons=tuple((str(c), str(t)) for c, t in _table(raw, "reasons", str).items()),
                bounds=tuple((str(c), _pair(c, b)) for c, b in _table(raw, "bounds", list).items()),
            )
        except SchemaError as err:
            raise SchemaError(f"schema file {path}: {err}") from err


def _protected(table: Any) -> tuple[Protected, ...]:
    if not isinstance(table, dict):
        raise SchemaError('`protected` holds one table per protected column: [protected.SEX] groups = { "1" = "male" }')
    return tuple(Protected.from_table(str(col), spec) for col, spec in table.items())


def default_reason_text(feature: str, direction: int | None) -> str:
    """A plain statement made from the column name: "Int rate is high", or one that claims no direction."""
    label = feature.replace("_", " ").strip().capitalize()
    if not direction:
        return f"{label} raises the estimated risk"
    return f"{label} is {'high' if direction > 0 else 'low'}"


def _table(raw: dict[str, Any], name: str, kind: type) -> dict[str, Any]:
    """An optional `[name]` table whose every value is of `kind` (a SchemaError names the first that is not)."""
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise SchemaError(f"'{name}' must be a table ([{name}] with one line per column)")
    for col, value in table.items():
        if not isinstance(value, kind):
            what = "a list" if kind is list else "a string in quotes"
            raise SchemaError(f"[{name}] {col} must be {what}, got {value!r}")
    return table


def _pair(col: str, value: list[Any]) -> tuple[float, float]:
    if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise SchemaError(f"[bounds] {col} must be [lowest, highest] (two numbers, inf for none), got {value!r}")
    return float(value[0]), float(value[1])


BUILTIN_SCHEMA_FILE = Path(__file__).resolve().parents[1] / "data" / "lending_club.toml"
LENDING_CLUB = Schema.from_toml(BUILTIN_SCHEMA_FILE)


def resolve_schema_path(schema_path: str, app_dir: str | Path | None) -> str:
    """An absolute path for `schema-path`: relative ones are relative to the app directory."""
    if not schema_path or Path(schema_path).is_absolute() or app_dir is None:
        return schema_path
    return str((Path(app_dir) / schema_path).resolve())


def load_schema(schema_path: str) -> Schema:
    """The schema named by the run config: the built-in one when the path is empty."""
    return Schema.from_toml(schema_path) if schema_path else LENDING_CLUB
