"""Earlier outcomes that still hold: a suite is not evaluated again when its definition is the one
it was last checked with and no snapshot since changed a table its query reads.

The suite's outcome then stands as stored (a failure stays a failure), and the run records that it
relied on it (`validation_runs`, source `reused`). Deciding this reads the catalog's snapshot log
and a few stored rows, never a table's data, and imports neither Great Expectations nor pandas.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from expectations.runner import Outcome, SuiteRun
from tasks.common.fingerprint import source_fingerprint
from warehouse.changes import changed_since, tables_read
from warehouse.db import QUERY_DIR, load_query

log = logging.getLogger(__name__)

HERE = Path(__file__).parent


def query_name(suite: str) -> str:
    """The query that reads a suite's frame (`Suite.query`'s default, which every suite keeps)."""
    return f"validate_{suite}"


def definition(suite: str) -> str:
    """A fingerprint of what decides a suite's outcome: its module (the checks), the shared check
    builders, the runner, its query and the Great Expectations version.

    The suites are code, so their source is their definition; any edit to one of these files counts
    as a new definition, which at worst evaluates a suite once more than needed.
    """
    files = (
        HERE / f"{suite}.py",
        HERE / "base.py",
        HERE / "runner.py",
        QUERY_DIR / f"{query_name(suite)}.sql",
    )
    return source_fingerprint(files, ("great_expectations",))[:32]


def reusable(con, names: list[str], snapshot: int) -> dict[str, SuiteRun]:
    """The suites of `names` whose latest outcome still holds at `snapshot`, each as a reused SuiteRun."""
    previous = con.execute(load_query("validate_previous"), {"suites": list(names)}).fetchall()
    reused: dict[str, SuiteRun] = {}
    for suite, checked, fingerprint, outcome_run, outcome_snapshot, skipped, rows, validated_at in previous:
        if fingerprint != definition(suite):
            log.info("%s: its definition changed since run %s, validating it again", suite, outcome_run)
            continue
        changed = changed_since(con, tables_read(con, load_query(query_name(suite))), checked)
        if changed:
            log.info(
                "%s: %s changed since snapshot %d, validating it again",
                suite,
                ", ".join(sorted(changed)),
                checked,
            )
            continue
        outcomes = stored_outcomes(con, outcome_run, suite)
        if not outcomes and not skipped:
            continue  # nothing stored to stand for it
        reused[suite] = SuiteRun(
            suite=suite,
            rows=rows or 0,
            outcomes=outcomes,
            skipped=skipped,
            validated_at=validated_at,
            reused_from=outcome_run,
            snapshot=outcome_snapshot,
        )
        log.info("%s: unchanged since snapshot %d, outcome of run %s reused", suite, checked, outcome_run)
    return reused


def stored_outcomes(con, run_id: str, suite: str) -> list[Outcome]:
    """The outcomes of `suite` that run `run_id` stored in `validation_results`."""
    rows = con.execute(load_query("validate_outcomes"), {"run_id": run_id, "suite": suite}).fetchall()
    return [
        Outcome(suite, expectation, bool(blocking), bool(success), unexpected, elements, _details(details))
        for expectation, blocking, success, unexpected, elements, details in rows
    ]


def _details(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"details": text}
    return value if isinstance(value, dict) else {"details": value}
