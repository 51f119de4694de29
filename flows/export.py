"""The export flow: write the curated dataset as Parquet, a Hugging Face folder or WebDataset shards."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.runtime import FLOW_RETRY, final_on_user_error
from tasks import export as exporting


@flow(name="export", **FLOW_RETRY)
@final_on_user_error()
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
    from flows.runtime import Progress, open_warehouse, run_id
    from flows.settings import load_settings
    from tasks.errors import InputError

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
            data = exporting.read_curated_task(reader, only_with_text)
        finally:
            reader.close()
        progress = Progress(data.images.height, f"exporting {format}")
        result = exporting.write_export_task(
            data,
            format,
            target,
            shard_size,
            rid,
            {"only_with_text": only_with_text},
            on_sample=progress.advance,
        )
        progress.close()
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
        exporting.record_export(wh, row)
    finally:
        wh.close()
    if data.unreadable:
        logger.warning(
            "%d images could not be read and were left out (listed in the manifest), e.g. %s",
            len(data.unreadable),
            data.unreadable[0],
        )
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
        "unreadable_images": len(data.unreadable),
        "snapshot": data.snapshot,
        "curation_run": data.curation["run_id"],
        "manifest": str(result.out / exporting.MANIFEST),
    }
