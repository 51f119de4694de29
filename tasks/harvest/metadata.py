"""The embedded-metadata harvest of ingested images: which images a run reads, and its Prefect task.

The extraction itself (EXIF, IPTC, XMP, JPEG comment) is `tasks.harvest.embedded`, which the fan-out's
shard task (`tasks.fanout.shard_tasks.embedded_shard`) runs too.
"""

from __future__ import annotations

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.retrying import RETRY
from tasks.harvest.embedded import SOURCE, harvest_embedded
from tasks.harvest.text import keys_to_fetch, register_pending, state_frame
from warehouse.db import load_query


def queue_images(wh, run_id: str, retry_failed: bool = False) -> tuple[pl.DataFrame, int]:
    """The (image_id, path) of ingested images to read now, registered `pending` first, and how
    many images were skipped (settled before, or, with `retry_failed`, not failed)."""
    images = wh.con.execute(load_query("harvest_image_paths")).pl()
    todo = keys_to_fetch(wh.con, images, SOURCE, retry_failed)
    pending = state_frame(todo["image_id"], SOURCE, "pending", run_id).drop("status")
    wh.write(lambda con: register_pending(con, pending))
    return todo, images.height - todo.height


# -- Prefect tasks (thin wrappers the harvest flows call) -----------------------------------------


@task(name="harvest-embedded", cache_policy=NO_CACHE, **RETRY)
def harvest_embedded_task(wh, images: pl.DataFrame, run_id: str, concurrency: int, progress):
    """Extract EXIF/IPTC/XMP/COM texts from image files, writing texts and state in batches."""
    return harvest_embedded(wh, images, run_id, concurrency=concurrency, on_done=progress.advance)
