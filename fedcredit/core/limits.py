"""What one bank's data may contribute: the limits and rules both sides apply.

A bank's loading (`fedcredit.core.loading`, which `fedcredit validate`, the
bank's statistics and its training all go through) refuses a file that breaks
them, naming the line and column; the coordinator refuses a statistics reply
that breaks them (`fedcredit.federation.protocol.read_statistics`). Both take
the values and the rules from here, so a file `validate` passes is never
refused by the coordinator for them.

* Category values: at most `max-categories` distinct values per categorical
  column, each at most `max-category-length` characters and printable
  (`str.isprintable`: no control characters, tabs or line breaks). Both are
  run-config keys; their defaults are `MAX_CATEGORIES` and `MAX_CATEGORY_LENGTH`.
* The schema's agreed categories (`[categories]`): a value outside them never
  enters a bank's statistics (it scores as unknown), and a column in which more
  than `max-off-schema-share` of a bank's rows hold such values is refused: at
  that share it is a different coding (`36 months` for `term_36`), not a typo.
  Default `MAX_OFF_SCHEMA_SHARE`.
* Numbers: finite and of magnitude at most `MAX_ABS_VALUE` (1e18). The model
  computes in float32 (largest value 3.4e38): a value's square, and so the
  variance it adds, stays finite there; in float64 a bank's sum of squares
  over `MAX_ROWS` rows stays far from overflowing. No credit figure is that
  large; a larger one is a unit or decimal-point mistake.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_CATEGORIES = 200
MAX_CATEGORY_LENGTH = 64
MAX_OFF_SCHEMA_SHARE = 0.02
MAX_ABS_VALUE = 1e18
# A bank claiming more loans than this is not a bank's validation or training set.
MAX_ROWS = 100_000_000
# Relative slack for float rounding when a sum is compared with its bound.
_ROUNDING = 1e-9


@dataclass(frozen=True)
class Limits:
    """What one bank may contribute to the shared preprocessing (run config `max-categories`, ...)."""

    max_categories: int = MAX_CATEGORIES
    max_category_length: int = MAX_CATEGORY_LENGTH
    max_off_schema_share: float = MAX_OFF_SCHEMA_SHARE

    def category_fault(self, value: str) -> str | None:
        """Why a category value is refused (None: it is acceptable); never quotes the value."""
        if len(value) > self.max_category_length:
            return f"is longer than max-category-length={self.max_category_length} characters"
        if not value.isprintable():
            return "has control characters (a tab, a line break or another character that does not print)"
        return None

    def too_many_categories(self, distinct: int) -> bool:
        return distinct > self.max_categories

    def too_many_off_schema(self, off_schema: int, rows: int) -> bool:
        """Whether `off_schema` of `rows` rows outside the agreed categories is more than the share allowed."""
        return off_schema > self.max_off_schema_share * rows


def sums_fault(count: int, total: float, squares: float) -> str | None:
    """Why the (count, sum, sum of squares) of a numeric column cannot come from values within MAX_ABS_VALUE."""
    if abs(total) > count * MAX_ABS_VALUE * (1 + _ROUNDING) or squares > count * MAX_ABS_VALUE**2 * (1 + _ROUNDING):
        return f"are larger than {count} value(s) of magnitude at most {MAX_ABS_VALUE:g} can give"
    return None
