"""The columns a bank's loan file must have, and what each one means.

Every schema is a small TOML file (see ``Schema.from_toml``), the built-in
LendingClub one included (`fedcredit/data/lending_club.toml`). A relative
`schema-path` resolves against the app directory: a schema placed in the app
travels inside the FAB to every SuperNode, so every bank validates its file
against the identical contract, and the SHA-256 of the parsed schema
(`Schema.sha256`) that each bank reports proves it.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DIRECTIONS = {"increasing": 1, "decreasing": -1}  # [monotone] values: +1 PD rises with the feature, -1 it falls
MAX_REASON_TEXT = 120  # characters of one reason statement: a line of a notice
# Fields added after the first schemas: left out of the digest while empty, so older schemas keep theirs.
_OPTIONAL_FIELDS = ("order", "monotone", "reasons", "bounds")


class SchemaError(ValueError):
    """A schema file is missing a key or contradicts itself."""


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
    def columns(self) -> tuple[str, ...]:
        """Every column a bank's file must carry (the partition column is optional)."""
        return self.features + (self.target,)

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
                order=tuple((str(c), tuple(str(v) for v in vals)) for c, vals in _table(raw, "order", list).items()),
                monotone=tuple((str(c), str(d)) for c, d in _table(raw, "monotone", str).items()),
                reasons=tuple((str(c), str(t)) for c, t in _table(raw, "reasons", str).items()),
                bounds=tuple((str(c), _pair(c, b)) for c, b in _table(raw, "bounds", list).items()),
            )
        except SchemaError as err:
            raise SchemaError(f"schema file {path}: {err}") from err


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
