"""Probed records into the warehouse: what is held already, shards to probe, and one batch per snapshot.

A probe returns RECORD tuples (`tasks.ingest.imageio`); `split_records` turns them into images
to load and quarantine rows, and `write_batch` loads both with anti-joins on their keys, in one
snapshot. The in-process path batches many shards per snapshot, a Dask shard writes its own.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from tasks.ingest import imageio
from warehouse.db import arrow_views, load_query

_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("image_id", pa.string()),
        ("wnid", pa.string()),
        ("split", pa.string()),
        ("bytes", pa.int64()),
        ("mtime", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("format", pa.string()),
        ("mode", pa.string()),
        ("sha256", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)
_QUARANTINE_COLUMNS = ["path", "reason", "detail", "bytes", "mtime"]
_IMAGE_COLUMNS = [c for c in _SCHEMA.names if c not in ("reason", "detail")]


def read_known(con, prefix: str) -> pl.DataFrame:
    """(path, bytes, mtime, reason) of the images and quarantined inputs already under `prefix`."""
    return con.execute(load_query("ingest_known"), [prefix]).pl()


def drop_unchanged(items: list[tuple], known: pl.DataFrame) -> tuple[list[tuple], int]:
    """The listed items whose (path, bytes, mtime) the warehouse does not hold yet, and how many were skipped."""
    if not items or known.is_empty():
        return items, 0
    listing = pl.DataFrame(
        items,
        schema=[
            ("path", pl.String),
            ("image_id", pl.String),
            ("wnid", pl.String),
            ("split", pl.String),
            ("bytes", pl.Int64),
            ("mtime", pl.Float64),
        ],
        orient="row",
    )
    todo = listing.join(known.select("path", "bytes", "mtime"), on=["path", "bytes", "mtime"], how="anti")
    return todo.rows(), len(items) - todo.height


def shard(items: list, workers: int, smallest: int = 32, largest: int = 1000) -> list[list]:
    """Cut items into shards: about 16 per worker, so the pool stays busy to the end."""
    if not items:
        return []
    size = max(smallest, min(largest, -(-len(items) // max(1, workers * 16))))
    return [items[i : i + size] for i in range(0, len(items), size)]


def records_frame(records: list[tuple]) -> pl.DataFrame:
    """RECORD tuples as a typed frame."""
    if not records:
        return pl.from_arrow(_SCHEMA.empty_table())
    columns = list(zip(*records, strict=True))
    table = pa.table(
        [pa.array(col, type=f.type) for col, f in zip(columns, _SCHEMA, strict=True)], schema=_SCHEMA
    )
    return pl.from_arrow(table)


def split_records(frame: pl.DataFrame, known: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Images to load and quarantine rows to write, from probed records.

    An image_id seen twice is kept once (the first path in order) and the other copies are
    quarantined; a quarantine row identical to one the warehouse holds is dropped (no new snapshot).
    """
    images = frame.filter(pl.col("reason").is_null()).sort("path")
    first = images.unique("image_id", keep="first", maintain_order=True)
    if first.height < images.height:
        kept = first.select("image_id", pl.col("path").alias("kept"))
        dups = (
            images.join(first.select("path"), on="path", how="anti")
            .join(kept, on="image_id")
            .with_columns(
                reason=pl.lit(imageio.DUPLICATE),
                detail=pl.format("image_id {} is also at {}", "image_id", "kept"),
            )
            .drop("kept")
        )
        frame = pl.concat([frame.filter(pl.col("reason").is_not_null()), dups])
        images = first
    quarantine = frame.filter(pl.col("reason").is_not_null()).select(_QUARANTINE_COLUMNS)
    if known is not None and not known.is_empty():
        quarantine = quarantine.join(
            known.filter(pl.col("reason").is_not_null()).select("path", "reason", "bytes", "mtime"),
            on=["path", "reason", "bytes", "mtime"],
            how="anti",
            nulls_equal=True,
        )
    return images.select(_IMAGE_COLUMNS), quarantine


def write_batch(
    wh,
    images: pl.DataFrame,
    quarantine: pl.DataFrame,
    archives: list[dict],
    source: str,
    run_id: str,
    known: pl.DataFrame | None = None,
) -> dict:
    """Load one batch in one snapshot: new images, changed images, quarantine rows, archives done."""
    if images.is_empty() and quarantine.is_empty() and not archives:
        return {"added": 0, "updated": 0, "quarantined": 0}
    needs_update = needs_clear = False
    if known is not None and not known.is_empty():
        known_images = known.filter(pl.col("reason").is_null())["path"]
        known_quarantine = known.filter(pl.col("reason").is_not_null())["path"]
        needs_update = bool(images["path"].is_in(known_images).any())
        needs_clear = bool(
            images["path"].is_in(known_quarantine).any() or quarantine["path"].is_in(known_quarantine).any()
        )

    def load(con) -> dict:
        with arrow_views(con, staged_images=_arrow(images)):
            dups = con.execute(load_query("ingest_duplicates")).pl()
        q, imgs = quarantine, images
        if not dups.is_empty():
            moved = imgs.join(dups, on="path").with_columns(
                reason=pl.lit(imageio.DUPLICATE),
                detail=pl.format("image_id {} is already ingested from {}", "image_id", "kept"),
            )
            q = pl.concat([q, moved.select(_QUARANTINE_COLUMNS)])
            imgs = imgs.join(dups, on="path", how="anti")
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
        try:
            with arrow_views(con, staged_images=_arrow(imgs), staged_quarantine=_arrow(q)):
                # DuckDB's parallel Parquet writer spends twice the CPU for little gain on a few
                # cores; one thread loads a million rows in about a second.
                if imgs.height > 100_000 and threads <= 4:
                    con.execute("SET threads = 1")
                if needs_clear:
                    con.execute(load_query("ingest_clear_quarantine"))
                updated = (
                    con.execute(load_query("ingest_update_images"), [source, run_id]).fetchone()[0]
                    if needs_update
                    else 0
                )
                added = (
                    con.execute(load_query("ingest_insert_images"), [source, run_id]).fetchone()[0]
                    if imgs.height
                    else 0
                )
                if q.height:
                    con.execute(load_query("ingest_insert_quarantine"), [source, run_id])
                if archives:
                    with arrow_views(con, staged_archives=pa.Table.from_pylist(archives)):
                        con.execute(load_query("ingest_clear_archives"))
                        con.execute(load_query("ingest_record_archives"), [source, run_id])
        finally:
            con.execute(f"SET threads = {int(threads)}")
        return {"added": int(added), "updated": int(updated), "quarantined": q.height}

    return wh.write(load)


def _arrow(frame: pl.DataFrame) -> pa.Table:
    """The frame as Arrow with polars' newest types (string views: no copy of the strings)."""
    return frame.to_arrow(compat_level=pl.CompatLevel.newest())
