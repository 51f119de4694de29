"""The validation flow: every Great Expectations suite over one warehouse snapshot."""

from __future__ import annotations

import uuid
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from expectations import runner
from expectations.tasks import build_data_docs_task, reusable_task, store_results_task, validate_suite_task
from flows.artifacts import publish_link, publish_markdown
from flows.runtime import FLOW_RETRY, final_on_user_error, open_warehouse, run_id
from flows.settings import load_settings


@flow(name="validate", **FLOW_RETRY)
@final_on_user_error()
def validate_flow(
    suite: Annotated[
        str | None,
        Field(
            description="one suite (classes, images, class_texts, image_texts, text_scores, models) "
            "or a comma-separated list; all of them when empty"
        ),
    ] = None,
    force: Annotated[
        bool,
        Field(
            description="evaluate every suite again, even one whose tables and definition are unchanged "
            "since its last validation"
        ),
    ] = False,
) -> dict:
    """Validate the warehouse at one snapshot, store every outcome, publish Data Docs and a summary.

    A suite whose definition and tables are unchanged since its latest validation is not evaluated
    again: its stored outcome stands (a failure stays one) and the run records that it reused it.
    """
    logger = get_run_logger()
    settings = load_settings()
    names = runner.suite_names(suite)  # an unknown name stops here, before anything is opened
    rid = run_id()
    docs_dir = settings.reports_dir / "data_docs"
    staging = settings.reports_dir / f".data_docs-{uuid.uuid4().hex[:8]}"
    context = None
    wh = open_warehouse(settings)
    try:
        # Every suite reads the same snapshot, pinned now, through a read-only connection.
        reader = wh.reader()
        try:
            snapshot = wh.current_snapshot(reader)
            reused = {} if force else reusable_task(reader, names, snapshot)
            runs = dict(reused)
            todo = [n for n in names if n not in reused]
            if todo:  # Great Expectations loads only now
                context = runner.gx_context(staging)
                for s in runner.suites(todo):
                    runs[s.name] = validate_suite_task(reader, context, s, snapshot, rid)
        finally:
            reader.close()
        report = runner.Report(run_id=rid, snapshot=snapshot, runs=[runs[n] for n in names])
        store_results_task(wh, report)
        if context is not None:
            report.data_docs = build_data_docs_task(context, docs_dir, staging)
        elif (docs_dir / "index.html").exists():  # nothing evaluated: the Data Docs still hold
            report.data_docs = str(docs_dir / "index.html")
        publish_summary_task(report)
    finally:
        wh.close()
    emit_outcome(report, suite)
    if report.reused:
        logger.info(
            "unchanged since their last validation, outcome reused: %s (--force evaluates them again)",
            ", ".join(report.reused),
        )
    if report.failed_blocking:
        logger.warning("validation failed: %s", ", ".join(report.failed_blocking))
    if report.failed_warnings:
        logger.info("warnings: %s", ", ".join(report.failed_warnings))
    return report.summary()


# Events a Prefect automation can react to (README, "Alerts"): `imtext.validation.failed` when a
# blocking expectation fails, `imtext.validation.passed` otherwise; resource `imtext.warehouse`.
VALIDATION_FAILED = "imtext.validation.failed"
VALIDATION_PASSED = "imtext.validation.passed"
WAREHOUSE_RESOURCE = "imtext.warehouse"


def emit_outcome(report: runner.Report, suite: str | None):
    """Emit the validation's outcome as a Prefect event (related to this flow run); the event or None."""
    from prefect.events import emit_event

    failed = bool(report.failed_blocking)
    try:
        return emit_event(
            event=VALIDATION_FAILED if failed else VALIDATION_PASSED,
            resource={"prefect.resource.id": WAREHOUSE_RESOURCE, "prefect.resource.name": "imtext warehouse"},
            payload={
                "run_id": report.run_id,
                "snapshot": report.snapshot,
                "suites": suite or "all",
                "failed_blocking": list(report.failed_blocking),
                "failed_warnings": list(report.failed_warnings),
            },
        )
    except Exception as exc:  # an event is never worth failing the validation for
        get_run_logger().warning("validation event not emitted: %s", exc)
        return None


@task(name="publish-validation-summary", cache_policy=NO_CACHE)
def publish_summary_task(report: runner.Report) -> str:
    """Publish the run's markdown summary, and a link to its Data Docs, as artifacts of the flow run."""
    markdown = runner.summary_markdown(report)
    outcome = "passed" if report.success else f"{len(report.failed_blocking)} blocking failures"
    publish_markdown(
        markdown, key="validation-summary", description=f"validation of snapshot {report.snapshot}: {outcome}"
    )
    if report.data_docs:
        publish_link(report.data_docs, "Great Expectations Data Docs", key="validation-data-docs")
    return markdown
