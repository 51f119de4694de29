"""ImageNet-Captions import: the Flickr title, description and tags of ImageNet images, from one JSON.

The file is a list of `{"filename", "wnid", "title", "description", "tags": [...]}` (JSON Lines works
too). Records are matched to `images` by file stem; records of images not ingested are registered in
`harvest_state` as `pending` with the reason, counted, and imported by a later run once their images
are there. Everything is vectorised with polars: half a million records take seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.errors import InputError
from tasks.common.retrying import RETRY
from tasks.harvest.text import (
    prepare_image_texts,
    record_outcomes,
    register_pending,
    state_frame,
    state_keys,
    store_image_texts,
    tags_expr,
)
from warehouse.db import load_query

SOURCE = "imagenet-captions"
NOT_INGESTED = "image not ingested"
SCHEMA = {
    "filename": pl.String,
    "wnid": pl.String,
    "title": pl.String,
    "description": pl.String,
    "tags": pl.List(pl.String),
}


def read_captions(path: str | Path) -> pl.DataFrame:
    """Records as (image_id, wnid, title, description, tags); image_id is the file name's stem."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such captions file: {path}")
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            frame = pl.read_ndjson(path, schema=SCHEMA)
        else:
            frame = pl.read_json(path, schema=SCHEMA)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{path}: not an ImageNet-Captions file (a JSON list of {{filename, wnid, title, description, "
            f"tags}}): {first}"
        ) from None
    if frame.height and frame["filename"].null_count() == frame.height:
        raise InputError(f"{path}: no record has a 'filename'")
    return frame.filter(pl.col("filename").is_not_null()).select(
        pl.col("filename").str.replace(r"^.*[/\\]", "").str.replace(r"\.[A-Za-z0-9]+$", "").alias("image_id"),
        "wnid",
        "title",
        "description",
        "tags",
    )


def caption_rows(records: pl.DataFrame) -> pl.DataFrame:
    """Long rows (image_id, source, field, raw_text): title, then description, then joined tags."""
    wide = records.select(
        "image_id",
        pl.col("title"),
        pl.col("description"),
        tags_expr("tags").alias("tags"),
        pl.int_range(pl.len()).alias("_order"),
    )
    long = wide.unpivot(
        index=["image_id", "_order"],
        on=["title", "description", "tags"],
        variable_name="field",
        value_name="raw_text",
    )
    rank = pl.col("field").replace_strict({"title": 0, "description": 1, "tags": 2}, return_dtype=pl.Int8)
    return (
        long.filter(pl.col("raw_text").is_not_null())
        .sort(["_order", rank])
        .select("image_id", pl.lit(SOURCE).alias("source"), "field", "raw_text")
    )


def import_captions(
    wh,
    path: str | Path,
    run_id: str,
    batch_size: int = 100_000,
    on_done: Callable[[int], None] | None = None,
    records: pl.DataFrame | None = None,
) -> dict:
    """Import an ImageNet-Captions file (or its `read_captions` frame): texts of ingested images,
    state per image, in batches."""
    records = read_captions(path) if records is None else records
    con = wh.con
    images = con.execute(load_query("harvest_image_wnids")).pl()
    done = state_keys(con, SOURCE, ("done",)).select(pl.col("key").alias("image_id"))
    matched = records.join(images, on="image_id", how="inner")
    missing = records.join(images, on="image_id", how="anti")
    counts = {
        "records": records.height,
        "images": records["image_id"].n_unique(),
        "not_ingested": missing["image_id"].n_unique(),
        "wnid_mismatch": matched.filter(
            pl.col("wnid").is_not_null() & (pl.col("wnid") != pl.col("image_wnid"))
        )["image_id"].n_unique(),
        "already_done": matched.join(done, on="image_id", how="semi")["image_id"].n_unique(),
        "done": 0,
        "texts_added": 0,
    }
    if missing.height:
        pending = missing.select(
            pl.col("image_id").unique(maintain_order=True).alias("key"),
        ).with_columns(
            pl.lit(SOURCE).alias("source"),
            pl.lit(NOT_INGESTED).alias("last_error"),
            pl.lit(run_id).alias("run_id"),
        )
        wh.write(lambda c: register_pending(c, pending))
    todo = matched.join(done, on="image_id", how="anti").drop("image_wnid")
    todo_ids = todo["image_id"].unique(maintain_order=True)
    # Batch k is written on a second thread while batch k+1 is cleaned: polars and DuckDB both
    # release the GIL, and the warehouse connection is only ever used by the writer thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imtext-captions-writer") as writer:
        pending = None
        for start in range(0, todo_ids.len(), batch_size):
            ids = todo_ids.slice(start, batch_size)
            part = todo.filter(pl.col("image_id").is_in(ids.implode()))
            texts = prepare_image_texts(caption_rows(part), run_id)
            outcomes = state_frame(ids, SOURCE, "done", run_id)
            if pending is not None:
                _finish(pending, counts, on_done)
            pending = (writer.submit(wh.write, _writer(texts, outcomes)), ids.len())
        if pending is not None:
            _finish(pending, counts, on_done)
    return counts


def _writer(texts: pl.DataFrame, outcomes: pl.DataFrame):
    def write(con) -> int:
        added = store_image_texts(con, texts)
        record_outcomes(con, outcomes)
        return added

    return write


def _finish(pending, counts: dict, on_done) -> None:
    future, n = pending
    counts["texts_added"] += future.result()
    counts["done"] += n
    if on_done:
        on_done(n)


# -- Prefect tasks (thin wrappers the harvest flows call) -----------------------------------------


@task(name="import-imagenet-captions", cache_policy=NO_CACHE, **RETRY)
def import_captions_task(wh, path: str, records: pl.DataFrame, run_id: str, progress):
    """Import an ImageNet-Captions file into image_texts."""
    return import_captions(wh, path, run_id, on_done=progress.advance, records=records)
