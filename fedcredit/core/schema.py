"""The columns a bank's loan file must have, and what each one means.

Every schema is a small TOML file (see ``Schema.from_toml``), the built-in
LendingClub one included (`fedcredit/data/lending_club.toml`). A relative
`schema-path` resolves against the app directory: a schema placed in the app
travels inside the FAB to every SuperNode, so every bank validates its file
against the identical contract, and the SHA-256 of the parsed schema
(`Schema.sha256`) that each bank reports proves it.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass
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
    def sha256(self) -> str:
        """Digest of the parsed schema: the same contract gives the same digest, whatever the comments."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode("utf-8")).hexdigest()

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
                categories=tuple(
                    (str(c), tuple(str(v) for v in vals)) for c, vals in raw.get("categories", {}).items()
                ),
            )
        except SchemaError as err:
            raise SchemaError(f"schema file {path}: {err}") from err


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
