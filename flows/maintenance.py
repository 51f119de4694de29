"""The maintenance flow: compact small files, expire old snapshots, delete the files nobody needs."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.runtime import FLOW_RETRY, final_on_user_error


@flow(name="maintenance", **FLOW_RETRY)
@final_on_user_error()
def maintenance_flow(
    older_than_days: Annotated[
        float,
        Field(
            ge=0,
            description="expire snapshots older than this many days (those a model, training run, "
            "curation or export names are always kept)",
        ),
    ] = 30.0,
    grace_hours: Annotated[
        float,
        Field(ge=0, description="delete a data file only once it has been unused for this many hours"),
    ] = 24.0,
    compact: Annotated[bool, Field(description="first merge small adjacent Parquet files")] = True,
    dry_run: Annotated[bool, Field(description="only report what would be expired and deleted")] = False,
) -> dict:
    """Compact, expire snapshots and clean up old Parquet files of the DuckLake warehouse."""
    from flows import artifacts
    from flows.runtime import open_warehouse, run_id
    from flows.settings import load_settings

    logger = get_run_logger()
    rid = run_id()
    wh = open_warehouse(load_settings())
    try:
        compacted = bool(compact and not dry_run and wh.compact(min_files=2))
        result = wh.expire_and_clean(older_than_days, grace_hours, dry_run)
        snapshot = wh.current_snapshot()
    finally:
        wh.close()
    summary = {
        "run_id": rid,
        "snapshot": snapshot,
        "compacted": compacted,
        "expired_snapshots": len(result["expired_snapshots"]),
        "deleted_files": len(result["deleted_files"]),
        "dry_run": dry_run,
    }
    logger.info("warehouse at snapshot %d%s", snapshot, ", small files compacted" if compacted else "")
    artifacts.publish_summary("Warehouse maintenance", summary, key="maintenance-summary")
    return summary
