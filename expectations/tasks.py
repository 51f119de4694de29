"""Thin Prefect tasks around the runner, for the validation flow."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from expectations import runner
from expectations.base import Suite
from tasks.retrying import RETRY


@task(name="validate-suite", task_run_name="validate-{suite.name}", cache_policy=NO_CACHE)
def validate_suite_task(con, context, suite: Suite, snapshot: int, run_id: str) -> runner.SuiteRun:
    """Read one suite's frame at the pinned snapshot and evaluate its expectations."""
    frame = runner.read_frame(con, suite, snapshot)
    return runner.run_suite(context, suite, frame, run_id)


@task(name="store-validation-results", cache_policy=NO_CACHE, **RETRY)
def store_results_task(wh, report: runner.Report) -> int:
    """Insert every outcome into `validation_results` (repeat-safe); returns the rows added."""
    return runner.store(wh, report)


@task(name="build-data-docs", cache_policy=NO_CACHE)
def build_data_docs_task(context, docs_dir: Path, staging: Path) -> str:
    """Render Great Expectations Data Docs of this run under the reports folder."""
    return str(runner.build_data_docs(context, docs_dir, staging))


@task(name="publish-validation-summary", cache_policy=NO_CACHE)
def publish_summary_task(report: runner.Report) -> str:
    """Publish the run's markdown summary, and a link to its Data Docs, as artifacts of the flow run."""
    from flows.artifacts import publish_link, publish_markdown

    markdown = runner.summary_markdown(report)
    outcome = "passed" if report.success else f"{len(report.failed_blocking)} blocking failures"
    publish_markdown(
        markdown, key="validation-summary", description=f"validation of snapshot {report.snapshot}: {outcome}"
    )
    if report.data_docs:
        publish_link(report.data_docs, "Great Expectations Data Docs", key="validation-data-docs")
    return markdown
