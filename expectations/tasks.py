"""Thin Prefect tasks around the runner, for the validation flow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from expectations import reuse, runner
from tasks.common.retrying import RETRY

if TYPE_CHECKING:  # Great Expectations loads only when a suite is evaluated
    from expectations.base import Suite


@task(name="validate-suite", task_run_name="validate-{suite.name}", cache_policy=NO_CACHE)
def validate_suite_task(con, context, suite: Suite, snapshot: int, run_id: str) -> runner.SuiteRun:
    """Read one suite's frame at the pinned snapshot and evaluate its expectations."""
    frame = runner.read_frame(con, suite, snapshot)
    return runner.run_suite(context, suite, frame, run_id)


@task(name="find-reusable-outcomes", cache_policy=NO_CACHE)
def reusable_task(con, names: list[str], snapshot: int) -> dict[str, runner.SuiteRun]:
    """The suites whose latest outcome still holds: same definition, nothing they read changed since."""
    return reuse.reusable(con, names, snapshot)


@task(name="store-validation-results", cache_policy=NO_CACHE, **RETRY)
def store_results_task(wh, report: runner.Report) -> int:
    """Insert the outcomes evaluated into `validation_results` and a `validation_runs` row per suite
    (repeat-safe); returns the `validation_results` rows added."""
    return runner.store(wh, report)


@task(name="build-data-docs", cache_policy=NO_CACHE)
def build_data_docs_task(context, docs_dir: Path, staging: Path) -> str:
    """Render Great Expectations Data Docs of this run under the reports folder."""
    return str(runner.build_data_docs(context, docs_dir, staging))
