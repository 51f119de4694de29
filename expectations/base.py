"""What a suite is made of: named checks (a Great Expectations expectation marked blocking or
warning) and the narrow frame they are evaluated on.

Each suite reads its table through one query (`warehouse/queries/validate_<suite>.sql`) at a pinned
snapshot. The query returns only the columns the checks look at, plus per-row facts that need the
whole table or another table, computed by DuckDB where that is cheap: a `duplicate_<key>` column
holds the key when another row has the same key, an `unknown_<ref>` column holds a reference that
points at nothing, `<col>_length` the length of a long text (so the text itself never travels).
They are NULL when the row is fine, so Great Expectations evaluates "this column is null" row by row
and reports how many rows break the rule and which keys they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import great_expectations.expectations as gxe
from great_expectations.expectations import Expectation
from great_expectations.expectations.metadata_types import FailureSeverity


@dataclass(frozen=True)
class Check:
    """One expectation of a suite. A failed blocking check fails the validation and closes the gate."""

    name: str
    expectation: Expectation
    blocking: bool = True
    why: str = ""

    def build(self, suite: str) -> Expectation:
        """A fresh copy of the expectation, tagged with the suite, the check name and its severity."""
        copy = self.expectation.copy(deep=True)
        copy.id = None
        copy.meta = {**(copy.meta or {}), "suite": suite, "check": self.name, "blocking": self.blocking}
        copy.severity = FailureSeverity.CRITICAL if self.blocking else FailureSeverity.WARNING
        # Data Docs show this line in place of GX's generic sentence (the column is the heading).
        kind = "blocking" if self.blocking else "warning"
        copy.description = f"{self.name} [{kind}]" + (f": {self.why}" if self.why else "")
        return copy


def blocking(name: str, expectation: Expectation, why: str = "") -> Check:
    """A check whose failure fails `imtext validate` and blocks training."""
    return Check(name, expectation, True, why)


def warning(name: str, expectation: Expectation, why: str = "") -> Check:
    """A check whose failure is reported but blocks nothing."""
    return Check(name, expectation, False, why)


@dataclass(frozen=True)
class Suite:
    """The checks of one table and how to read the frame they look at."""

    name: str
    table: str
    checks: tuple[Check, ...]
    # Name of the query in warehouse/queries/ (bound parameter: $snapshot).
    query: str = ""
    # Low-cardinality text columns handed to pandas as categoricals (cheap to hash and to match).
    categorical: tuple[str, ...] = ()
    # Skip the suite (store nothing) while its table is empty: tables filled by later stages.
    skip_when_empty: bool = False
    # Columns the checks need, derived from the checks (for the docs and the tests).
    columns: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        if not self.query:
            object.__setattr__(self, "query", f"validate_{self.name}")
        names = [c.name for c in self.checks]
        if len(names) != len(set(names)):
            raise ValueError(f"suite {self.name}: duplicate check names")
        columns: list[str] = []
        for check in self.checks:
            kwargs = check.expectation.configuration.kwargs
            for col in [kwargs.get("column"), *(kwargs.get("column_list") or [])]:
                if col and col not in columns:
                    columns.append(col)
        object.__setattr__(self, "columns", tuple(columns))

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)


# -- the checks every table needs, spelled once -------------------------------------------------
def present(column: str, *, is_blocking: bool = True, why: str = "") -> Check:
    """`<column>_present`: no NULL in the column."""
    return Check(f"{column}_present", gxe.ExpectColumnValuesToNotBeNull(column=column), is_blocking, why)


def unique(key: str, why: str = "") -> Check:
    """`<key>_unique`: the query's `duplicate_<key>` column (the key of rows sharing it) is all NULL."""
    return blocking(f"{key}_unique", gxe.ExpectColumnValuesToBeNull(column=f"duplicate_{key}"), why)


def natural_key(column: str, why: str = "") -> tuple[Check, Check]:
    """The key of a row: present and unique."""
    return present(column), unique(column, why)


def known(name: str, ref: str, why: str = "", *, is_blocking: bool = True) -> Check:
    """`name`: the query's `unknown_<ref>` column (a reference that points at nothing) is all NULL."""
    return Check(name, gxe.ExpectColumnValuesToBeNull(column=f"unknown_{ref}"), is_blocking, why)


def one_of(column: str, values: tuple[str, ...]) -> Check:
    """`<column>_known`: every value is one of `values`."""
    return blocking(
        f"{column}_known",
        gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values)),
        "one of " + ", ".join(values),
    )


def has_rows(hint: str) -> Check:
    """A warning while the table is empty: not harvested yet is a state, not a defect."""
    return warning("has_rows", gxe.ExpectTableRowCountToBeBetween(min_value=1), hint)


def text_checks(max_chars: int, key: str) -> tuple[Check, ...]:
    """Texts: present, not blank after cleaning, not longer than the cleaner allows, no duplicate."""
    return (
        blocking(
            "text_present",
            gxe.ExpectColumnValuesToNotBeNull(column="text_length"),
            "the length is NULL exactly when the text is",
        ),
        blocking(
            "text_not_empty",
            gxe.ExpectColumnValuesToBeBetween(column="text_length", min_value=1),
            "characters left after trimming the cleaned text",
        ),
        warning(
            "text_length_within_bounds",
            gxe.ExpectColumnValuesToBeBetween(column="text_length", max_value=max_chars),
            "the cleaner cuts longer texts; a longer one skipped cleaning",
        ),
        blocking(
            "no_duplicate_text",
            gxe.ExpectColumnValuesToBeNull(column="duplicate_key"),
            f"one row per {key}: a repeated harvest must never add a row twice",
        ),
    )


def provenance_checks() -> tuple[Check, ...]:
    """Where every row came from: its source, when it was fetched, and the run that stored it."""
    return (present("source"), present("fetched_at"), present("run_id"))
