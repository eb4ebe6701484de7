"""The columns a bank's loan file must have, and what each one means.

The built-in data set carries its schema in code; any other data set describes
its columns in a small TOML file (see ``Schema.from_toml``) so that every bank
validates its file against the same contract before it joins a federation.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path


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

    @property
    def known_categories(self) -> dict[str, tuple[str, ...]]:
        return dict(self.categories)

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
        """
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise SchemaError(f"schema file {path} does not exist: set 'schema-path' to an existing TOML file") from err
        except tomllib.TOMLDecodeError as err:
            raise SchemaError(f"schema file {path} is not valid TOML: {err}") from err
        known = {"target", "positive-label", "negative-label", "numeric", "categorical", "partition", "categories"}
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
                categories=tuple((str(c), tuple(str(v) for v in vals)) for c, vals in raw.get("categories", {}).items()),
            )
        except SchemaError as err:
            raise SchemaError(f"schema file {path}: {err}") from err


LENDING_CLUB = Schema(
    target="Class",
    positive_label="bad",
    negative_label="good",
    numeric=(
        "funded_amnt", "int_rate", "annual_inc", "delinq_2yrs", "inq_last_6mths",
        "revol_util", "acc_now_delinq", "open_il_6m", "open_il_12m", "open_il_24m",
        "total_bal_il", "all_util", "inq_fi", "inq_last_12m", "delinq_amnt",
        "num_il_tl", "total_il_high_credit_limit",
    ),
    categorical=("term", "sub_grade", "verification_status", "emp_length"),
    # The borrower's state only defines the simulated banks: using it as a
    # feature would let the model key on geography (a fair-lending risk).
    partition="addr_state",
    categories=(
        ("term", ("term_36", "term_60")),
        ("sub_grade", tuple(f"{g}{n}" for g in "ABCDEFG" for n in range(1, 6))),
        ("verification_status", ("Not_Verified", "Source_Verified", "Verified")),
        ("emp_length", ("emp_lt_1", *(f"emp_{n}" for n in range(1, 10)), "emp_ge_10", "emp_unk")),
    ),
)


def load_schema(schema_path: str) -> Schema:
    """The schema named by the run config: the built-in one when the path is empty."""
    return Schema.from_toml(schema_path) if schema_path else LENDING_CLUB
