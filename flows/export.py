"""The export flow: write the curated dataset as Parquet, a Hugging Face folder or WebDataset shards."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from tasks import export as exporting


@task(name="read-curated", cache_policy=NO_CACHE)
def read_curated_task(con, only_with_text: bool) -> exporting.CuratedData:
    """Read images, kept texts and class texts of the latest curation at one snapshot."""
    return exporting.read_curated(con, only_with_text)


@task(name="write-export", cache_policy=NO_CACHE)
def write_export_task(data, format: str, out: str, shard_size: int, run_id: str, extra: dict):
    """Write the dataset files and the manifest."""
    from flows.runtime import Progress

    progress = Progress(data.images.height, f"exporting {format}")
    try:
        return exporting.export_dataset(
            data, format, out, shard_size=shard_size, run_id=run_id, extra=extra, on_sample=progress.advance
        )
    finally:
        progress.close()


@flow(name="export")
def export_flow(
    format: Annotated[str, Field(description="parquet, webdataset or hf")] = "parquet",
    out: Annotated[
        str | None, Field(description="output folder (default $IMTEXT_HOME/exports/<format>)")
    ] = None,
    shard_size: Annotated[
        int, Field(ge=1, description="samples per tar shard / rows per parquet file / rows per HF shard")
    ] = exporting.DEFAULT_SHARD_SIZE,
    only_with_text: Annotated[
        bool, Field(description="leave out images none of whose texts were kept")
    ] = False,
) -> dict:
    """Export the curated dataset with a manifest naming the snapshot, the models and the policy."""
    from flows.runtime import open_warehouse, run_id
    from flows.settings import load_settings
    from tasks.errors import InputError
    from warehouse.db import load_query

    if format not in exporting.FORMATS:
        raise InputError(f"--format must be one of {', '.join(exporting.FORMATS)}, not {format!r}")
    logger = get_run_logger()
    settings = load_settings()
    target = out or str(settings.home / "exports" / format)
    rid = run_id()
    wh = open_warehouse(settings)
    try:
        reader = wh.reader()
        try:
            data = read_curated_task(reader, only_with_text)
        finally:
            reader.close()
        result = write_export_task(data, format, target, shard_size, rid, {"only_with_text": only_with_text})
        row = {
            "run_id": rid,
            "format": format,
            "out": str(result.out),
            "snapshot": data.snapshot,
            "curation_run": data.curation["run_id"],
            "images": result.images,
            "texts": result.texts,
            "manifest": json.dumps({k: v for k, v in result.manifest.items() if k != "files"}, default=str),
            "exported_at": dt.datetime.now(dt.UTC),
        }

        def record(con):
            import pyarrow as pa

            con.register("export_row", pa.Table.from_pylist([row]))
            try:
                con.execute(load_query("curate_insert_export"))
            finally:
                con.unregister("export_row")

        wh.write(record)
    finally:
        wh.close()
    logger.info(
        "exported %d images and %d texts as %s to %s", result.images, result.texts, format, result.out
    )
    return {
        "run_id": rid,
        "format": format,
        "out": str(result.out),
        "images": result.images,
        "texts": result.texts,
        "classes": result.classes,
        "files": len(result.files),
        "snapshot": data.snapshot,
        "curation_run": data.curation["run_id"],
        "manifest": str(result.out / exporting.MANIFEST),
    }
