"""The validation flow: every Great Expectations suite over one warehouse snapshot."""

from __future__ import annotations

import uuid
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from expectations import runner
from expectations.tasks import (
    build_data_docs_task,
    publish_summary_task,
    store_results_task,
    validate_suite_task,
)
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
) -> dict:
    """Validate the warehouse at one snapshot, store every outcome, publish Data Docs and a summary."""
    logger = get_run_logger()
    settings = load_settings()
    suites = runner.suites(suite)  # an unknown name stops here, before anything is opened
    rid = run_id()
    wh = open_warehouse(settings)
    try:
        # Every suite reads the same snapshot, pinned now, through a read-only connection.
        reader = wh.reader()
        try:
            snapshot = wh.current_snapshot(reader)
            docs_dir = settings.reports_dir / "data_docs"
            staging = settings.reports_dir / f".data_docs-{uuid.uuid4().hex[:8]}"
            context = runner.gx_context(staging)
            runs = [validate_suite_task(reader, context, s, snapshot, rid) for s in suites]
        finally:
            reader.close()
        report = runner.Report(run_id=rid, snapshot=snapshot, runs=runs)
        store_results_task(wh, report)
        report.data_docs = build_data_docs_task(context, docs_dir, staging)
        publish_summary_task(report)
    finally:
        wh.close()
    if report.failed_blocking:
        logger.warning("validation failed: %s", ", ".join(report.failed_blocking))
    if report.failed_warnings:
        logger.info("warnings: %s", ", ".join(report.failed_warnings))
    return report.summary()
