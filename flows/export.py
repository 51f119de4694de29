"""The export flow: write the curated dataset as Parquet, a Hugging Face DatasetDict or WebDataset shards."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.runtime import FLOW_RETRY, final_on_user_error
from tasks.export import options as export_options
from tasks.export.read import read_curated_task
from tasks.export.target import (
    CARD,
    MANIFEST,
    check_target,
    record_export,
    unchanged_export_task,
    write_export_task,
)


@flow(name="export", **FLOW_RETRY)
@final_on_user_error()
def export_flow(
    format: Annotated[str, Field(description="parquet, webdataset or hf")] = "parquet",
    out: Annotated[
        str | None,
        Field(
            description="output folder (default $IMTEXT_HOME/exports/<format>); only a folder an earlier "
            "imtext export wrote is replaced"
        ),
    ] = None,
    shard_size: Annotated[
        int, Field(ge=1, description="samples per tar shard / parquet file / HF shard, at most")
    ] = export_options.DEFAULT_SHARD_SIZE,
    shard_max_mb: Annotated[
        float, Field(gt=0, description="size of a tar shard / parquet file / HF shard in MB, at most")
    ] = export_options.DEFAULT_SHARD_MAX_MB,
    seed: Annotated[
        int, Field(description="seed of the sample order within each split")
    ] = export_options.DEFAULT_SEED,
    only_with_text: Annotated[
        bool, Field(description="export only the images with at least one kept text")
    ] = False,
    force: Annotated[
        bool,
        Field(
            description="write the export again even when the one in the folder is of the same options and "
            "nothing it reads changed since"
        ),
    ] = False,
) -> dict:
    """Export the curated dataset with a dataset card and a manifest naming the snapshot, models and policy.

    An export already in the folder, of the same format and options, whose files are all there and
    whose tables are unchanged since the snapshot its manifest names, is kept as it is (`force`
    writes it again).
    """
    from flows.runtime import Progress, open_warehouse, run_id
    from flows.settings import load_settings
    from tasks.common.errors import InputError

    if format not in export_options.FORMATS:
        raise InputError(f"--format must be one of {', '.join(export_options.FORMATS)}, not {format!r}")
    options = export_options.options_from(shard_size, shard_max_mb, seed, only_with_text)
    logger = get_run_logger()
    settings = load_settings()
    target = str(check_target(out or settings.home / "exports" / format))
    rid = run_id()
    wh = open_warehouse(settings)
    try:
        reader = wh.reader()
        try:
            kept, why = (None, "--force") if force else unchanged_export_task(reader, target, format, options)
            if kept is not None:
                logger.info(
                    "export in %s unchanged (%s): kept as it is; --force writes it again", target, why
                )
                return unchanged_summary(kept, rid, target)
            data = read_curated_task(reader, only_with_text)
        finally:
            reader.close()
        logger.info("writing the export in %s: %s", target, why)
        progress = Progress(data.images.height, f"exporting {format}")
        result = write_export_task(data, format, target, options, rid, on_sample=progress.advance)
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
        record_export(wh, row)
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
        "splits": result.splits,
        "files": len(result.files),
        "unreadable_images": len(data.unreadable),
        "snapshot": data.snapshot,
        "curation_run": data.curation["run_id"],
        "seed": seed,
        "manifest": str(result.out / MANIFEST),
        "card": str(result.out / CARD),
        "unchanged": False,
    }


def unchanged_summary(manifest: dict, rid: str, out: str) -> dict:
    """The flow's summary of an export kept as it was: the figures its manifest records."""
    counts = manifest.get("counts", {})
    folder = Path(out)
    return {
        "run_id": rid,
        "format": manifest["format"],
        "out": out,
        "images": counts.get("images", 0),
        "texts": counts.get("texts", 0),
        "classes": counts.get("classes", 0),
        "splits": manifest.get("splits", {}),
        "files": counts.get("files", len(manifest.get("files", []))),
        "unreadable_images": counts.get("unreadable_images", 0),
        "snapshot": manifest["warehouse_snapshot"],
        "curation_run": manifest.get("curation", {}).get("run_id"),
        "seed": manifest.get("seed"),
        "manifest": str(folder / MANIFEST),
        "card": str(folder / CARD),
        "unchanged": True,
        "export_run": manifest.get("export_run_id"),
    }
