"""The Prefect shard tasks that `tasks.fanout.shards.run_shards` submits to a Dask task runner.

Each receives a detached warehouse handle, opens its own connection where it runs, writes its
shard under the warehouse writer lock and closes the connection before returning. The work is the
code the in-process path runs (`tasks.ingest`, `tasks.harvest.embedded`, `tasks.curate.score`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.retrying import RETRY
from tasks.fanout.shards import probe_shard


@task(name="ingest-shard", cache_policy=NO_CACHE, **RETRY)
def ingest_shard(wh, probe: Callable, args: tuple, source: str, run_id: str) -> dict:
    """Probe one shard of inputs and load its images and quarantine rows in one snapshot."""
    from tasks.ingest import imageio
    from tasks.ingest.load import read_known, records_frame, split_records, write_batch

    records, skipped = probe_shard(probe, args)
    containers: dict[str, list[int]] = {}
    for rec in records:  # per archive: images and rejects, for `ingested_archives`
        container, sep, _ = rec[0].partition(imageio.SEP)
        if sep:
            tally = containers.setdefault(container, [0, 0])
            tally[1 if rec[11] else 0] += 1
    frame = records_frame(records)
    try:
        # What the warehouse holds under this shard's common path prefix: the same incremental
        # decisions as the whole-source read of the in-process path, for a few rows.
        known = read_known(wh.con, os.path.commonprefix(frame["path"].to_list())) if frame.height else None
        images, quarantine = split_records(frame, known)
        wrote = not (images.is_empty() and quarantine.is_empty())
        counts = write_batch(wh, images, quarantine, [], source, run_id, known)
    finally:
        wh.close()
    return {**counts, "skipped": skipped, "wrote": wrote, "containers": containers, "pid": os.getpid()}


@task(name="embedded-shard", cache_policy=NO_CACHE, **RETRY)
def embedded_shard(wh, images: pl.DataFrame, run_id: str, concurrency: int) -> dict:
    """Extract the embedded texts of one shard of images, writing texts and state in batches."""
    from tasks.harvest.embedded import harvest_embedded

    try:
        return harvest_embedded(wh, images, run_id, concurrency=concurrency)
    finally:
        wh.close()


@task(name="score-shard", tags=["gpu"], cache_policy=NO_CACHE, **RETRY)
def score_shard(wh, plan, pending: pl.DataFrame, policy, run_id: str, options: dict) -> int:
    """Score one shard of pending texts with their out-of-fold scorer, writing each chunk as it is done."""
    from tasks.curate.score import score_pending

    try:
        return score_pending(wh, plan, pending, policy, run_id, **options)
    finally:
        wh.close()
