"""The validation gate: flows that consume validated tables refuse to start on bad data.

The gate reads what `imtext validate` stored (view `validation_latest`), never re-validates, and
never imports Great Expectations. It is closed when, for any suite asked for:

- the latest validation of that suite failed a blocking expectation, or
- the suite was never validated (nothing says the data is good, so it is not assumed to be).

Each suite's latest validation counts, whatever snapshot it read: `imtext validate` before
training (the pipeline flow does this) makes it describe the data being trained on.
"""

from __future__ import annotations

from tasks.common.errors import InputError
from warehouse.db import load_query


class GateError(InputError):
    """The latest validation of a needed table failed (or never ran); the message names what failed."""

    def __init__(self, message: str, failed: list[str] | None = None, missing: list[str] | None = None):
        super().__init__(message)
        self.failed = failed or []
        self.missing = missing or []


def gate_status(con, suites: list[str]) -> dict:
    """{"failed": ["suite.expectation (N unexpected)", ...], "missing": [suite, ...], "runs": {suite: run}}."""
    rows = con.execute(load_query("validate_gate"), {"suites": list(suites)}).fetchall()
    seen: dict[str, dict] = {}
    failed: list[str] = []
    for suite, run_id, snapshot, validated_at, expectation, unexpected in rows:
        seen[suite] = {"run_id": run_id, "snapshot": snapshot, "validated_at": validated_at}
        if expectation is not None:
            count = "" if unexpected is None else f" ({unexpected:,} unexpected)"
            failed.append(f"{suite}.{expectation}{count}")
    missing = [s for s in suites if s not in seen]
    return {"failed": failed, "missing": missing, "runs": seen}


def check_gate(con, suites: list[str]) -> None:
    """Raise GateError unless the latest validation of every suite in `suites` passed its blocking checks."""
    status = gate_status(con, suites)
    problems = []
    if status["failed"]:
        problems.append("the latest validation failed " + ", ".join(status["failed"]))
    if status["missing"]:
        problems.append("never validated: " + ", ".join(status["missing"]))
    if problems:
        raise GateError(
            "validation gate closed: "
            + "; ".join(problems)
            + ". Fix the data and run `imtext validate`, or pass --allow-invalid.",
            failed=[f.split(" ", 1)[0] for f in status["failed"]],
            missing=status["missing"],
        )
