"""The ingest flow: ImageNet images (folder, ILSVRC tars, Hugging Face parquet shards) into `images`."""

from __future__ import annotations

import time
from typing import Annotated

from prefect import flow
from prefect.utilities.annotations import opaque
from pydantic import Field

from flows import runners
from flows.runtime import FLOW_RETRY, Progress, final_on_user_error, open_warehouse, run_id
from flows.settings import load_settings
from tasks.fanout.shards import cpu_count
from tasks.ingest.images import list_inputs_task, load_images, locate_source_task, plan_task


@flow(name="ingest", **FLOW_RETRY)
@final_on_user_error()
def ingest_flow(
    source: Annotated[
        str,
        Field(
            description="ImageNet folder (train/<wnid>/, val/), its Kaggle root, an ILSVRC .tar, "
            "or a folder of Hugging Face parquet shards"
        ),
    ],
    split: Annotated[
        str, Field(description="train, val, or auto (every split found under the source)")
    ] = "auto",
    val_labels: Annotated[
        str | None,
        Field(
            description="labels of flat val images: LOC_val_solution.csv or the devkit's ground truth; "
            "by default LOC_val_solution.csv is looked for beside val/"
        ),
    ] = None,
    workers: Annotated[int, Field(description="worker processes; 0 means one per CPU core")] = 0,
    task_runner: Annotated[str | None, Field(description=runners.TASK_RUNNER_HELP)] = None,
) -> dict:
    """Ingest ImageNet images into `images` (bad inputs into `quarantine`); incremental and repeat-safe.

    Args:
        source: ImageNet folder (train/<wnid>/, val/), its Kaggle root, an ILSVRC .tar, or a folder
            of Hugging Face parquet shards.
        split: train, val, or auto (every split found under the source).
        val_labels: labels of flat val images (LOC_val_solution.csv or the devkit's ground truth);
            by default LOC_val_solution.csv is looked for beside val/.
        workers: worker processes; 0 means one per CPU core.
        task_runner: default (process pool here) or dask (shards on a Dask cluster, see flows.runners).
    """
    started = time.monotonic()
    settings = load_settings()
    rid = run_id()
    n_workers = workers or settings.workers or cpu_count()
    # The layout is checked, and the inputs listed, before the warehouse is opened: a bad input
    # folder or labels file stops the run with nothing written. The holders go to the next task
    # wrapped in opaque(): Prefect would otherwise walk a million listed inputs item by item.
    located = locate_source_task(source, split, val_labels)
    listing = list_inputs_task(opaque(located), n_workers)
    wh = open_warehouse(settings)
    try:
        plan = plan_task(wh, opaque(located), opaque(listing), n_workers)
        progress = Progress(plan.total, f"ingest {located.root.name}")
        parallel = None if not workers else workers > 1
        with runners.fan_out(task_runner, n_workers) as runner:
            if runner is None:
                totals = load_images(wh, opaque(plan), n_workers, rid, progress, parallel)
            else:
                totals = runners.ingest_on(runner, wh, plan, rid, progress)
        progress.close()
        compacted = wh.compact()  # merges small data files once enough runs have left them
        snapshot = wh.current_snapshot()
    finally:
        wh.close()
    seconds = time.monotonic() - started
    return {
        "source": str(located.root),
        "kind": located.kind,
        "seen": plan.seen,
        "added": totals["added"],
        "updated": totals["updated"],
        "skipped": totals["skipped"],
        "skipped_archives": plan.skipped_archives,
        "quarantined": totals["quarantined"],
        "snapshot": snapshot,
        "snapshots_created": totals["snapshots"],
        "compacted": compacted,
        "run_id": rid,
        "workers": n_workers,
        "seconds": round(seconds, 3),
    }
