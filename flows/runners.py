"""Where a flow's fan-out runs: in the flow's own process pools (default) or on a Dask cluster.

A flow that fans out (ingest, harvest images --embedded, curate) takes `task_runner`:

- `default`: the work runs as before, in process/thread pools of the flow run's own process.
- `dask`: each shard becomes a Prefect task run submitted through `prefect-dask`'s
  `DaskTaskRunner` to the cluster at `IMTEXT_DASK_ADDRESS` (a scheduler started with
  `dask scheduler`, workers on any number of machines), or, without an address, to a temporary
  local cluster of `workers` processes that lives as long as the fan-out.

Every shard task gets a detached warehouse handle (catalog and data path, no connection), opens
its own connection on the worker, writes its shard in one snapshot under the warehouse writer
lock, and closes it: several processes (and machines, with a Postgres catalog) write at once.
The flow's own steps before and after the fan-out (planning, bookkeeping) stay in the flow run.
Both ways run through one function, `tasks.fanout.shards.run_shards`: the shards, a tally, the progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from enum import Enum

from flows.settings import load_settings
from tasks.fanout.shards import cluster_threads, run_shards

TASK_RUNNERS = ("default", "dask")


class TaskRunnerName(str, Enum):
    """The choices of the commands' --task-runner option."""

    default = "default"
    dask = "dask"


TASK_RUNNER_HELP = (
    "where the fan-out runs: default (process pools in the flow run) or dask (one Prefect task per "
    "shard on the Dask cluster at IMTEXT_DASK_ADDRESS, else a temporary local one) "
    "[default: IMTEXT_TASK_RUNNER, else default]"
)


def choose(task_runner: str | None) -> str:
    """The task runner name: the flow parameter when given, else IMTEXT_TASK_RUNNER, else 'default'."""
    from tasks.common.errors import InputError

    name = (task_runner or load_settings().task_runner).strip().lower()
    if name not in TASK_RUNNERS:
        where = "--task-runner" if task_runner else "IMTEXT_TASK_RUNNER"
        raise InputError(f"{where} must be one of {', '.join(TASK_RUNNERS)}, not {name!r}")
    return name


def dask_task_runner(address: str | None = None, workers: int = 1):
    """A `DaskTaskRunner`: on the cluster at `address`, else on a temporary local cluster.

    The local cluster has `workers` single-threaded processes (the shards are CPU-bound Python)
    and no dashboard (nothing to bind a port for in a flow run).
    """
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": max(1, workers),
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )


@contextlib.contextmanager
def fan_out(task_runner: str | None, workers: int = 1) -> Iterator[object | None]:
    """Yield a started task runner for the shards, or None for the flow's default in-process path.

    Worker processes create their task runs through the Prefect API the flow run uses: when that
    is the ephemeral server of a plain CLI run, its URL is handed to them (otherwise each worker
    would start an ephemeral server of its own).
    """
    if choose(task_runner) == "default":
        yield None
        return
    address = load_settings().dask_address
    with _quiet_dask(), _api_url_for_workers(), dask_task_runner(address, workers) as runner:
        yield runner


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """Dask's scheduler and nanny log every start and stop at INFO: warnings only on the terminal."""
    import distributed  # noqa: F401 - sets up its loggers on import; the level is changed after

    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _api_url_for_workers() -> Iterator[None]:
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ctx = FlowRunContext.get()
    if PREFECT_API_URL.value() or ctx is None or ctx.client is None:
        yield
        return
    with temporary_settings(updates={PREFECT_API_URL: str(ctx.client.api_url).rstrip("/")}):
        yield


def detached(wh):
    """A copy of the warehouse handle without its connection, to send to a worker (opens lazily there)."""
    return dataclasses.replace(wh, _con=None, _pg=None)


# -- the fan-outs: each one the shards, a tally and `run_shards` ------------------------------------
def ingest_on(runner, wh, plan, run_id: str, progress=None) -> dict:
    """Ingest a plan's shards on `runner`: the same totals as `tasks.ingest.images.load_images`.

    The rejects found while listing and the archive bookkeeping are written by the flow run; each
    shard probes its inputs and loads them in its own snapshot. An image_id found in two shards is
    kept from the shard that commits first (the other is quarantined as a duplicate), where the
    in-process path keeps the first path in sorted order.
    """
    from tasks.fanout.shard_tasks import ingest_shard
    from tasks.ingest import imageio
    from tasks.ingest.load import records_frame, split_records, write_batch

    totals = {"added": 0, "updated": 0, "quarantined": 0, "skipped": plan.skipped, "snapshots": 0}

    def add(counts: dict) -> None:
        for key in ("added", "updated", "quarantined"):
            totals[key] += counts[key]
        totals["snapshots"] += int(counts.get("wrote", True))

    per_archive = {a["path"]: a for a in plan.archives}
    if plan.rejects:
        images, quarantine = split_records(records_frame(plan.rejects), plan.known)
        if not quarantine.is_empty():
            add(write_batch(wh, images, quarantine, [], plan.source, run_id, plan.known))
        for rec in plan.rejects:
            archive = per_archive.get(rec[0].split(imageio.SEP, 1)[0])
            if archive is not None:
                archive["quarantined"] += 1

    def tally(i: int, counts: dict) -> None:
        add(counts)
        totals["skipped"] += counts["skipped"]
        for container, (images, quarantined) in counts["containers"].items():
            archive = per_archive.get(container)
            if archive is not None:
                archive["images"] += images
                archive["quarantined"] += quarantined

    shards = [{"probe": fn, "args": args} for fn, args, _ in plan.units]
    weights = [weight for _, _, weight in plan.units]
    common = {"wh": detached(wh), "source": plan.source, "run_id": run_id}
    run_shards(runner, ingest_shard, shards, common, tally, progress=progress, weights=weights)
    if plan.archives:  # recorded last: an archive counts as done once all its shards are in
        no_images, no_quarantine = split_records(records_frame([]), None)
        add(write_batch(wh, no_images, no_quarantine, plan.archives, plan.source, run_id, plan.known))
    return totals


def embedded_on(runner, wh, todo, run_id: str, concurrency: int, progress=None) -> dict:
    """Extract embedded texts of `todo` (image_id, path) in shards on `runner`; summed counts."""
    from tasks.fanout.shard_tasks import embedded_shard

    size = max(64, min(5000, -(-todo.height // (cluster_threads(runner) * 4))))
    shards = [{"images": todo.slice(start, size)} for start in range(0, todo.height, size)]
    totals: dict = {}

    def tally(i: int, counts: dict) -> None:
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value

    common = {"wh": detached(wh), "run_id": run_id, "concurrency": concurrency}
    weights = [shard["images"].height for shard in shards]
    run_shards(runner, embedded_shard, shards, common, tally, progress=progress, weights=weights)
    return totals or {"done": 0, "gone": 0, "failed": 0, "texts_added": 0, "images_with_text": 0}


def score_on(runner, wh, plan, pending, policy, run_id: str, progress=None, **kwargs) -> int:
    """Score pending texts on `runner`: one shard per scorer model (split further when large); rows added.

    A shard loads its model once, so shards are large: at most about two per worker and model.
    """
    import polars as pl

    from tasks.fanout.shard_tasks import score_shard

    workers = cluster_threads(runner)
    shards = []
    for model_id in sorted(pending["model_id"].unique().to_list()):
        texts = pending.filter(pl.col("model_id") == model_id)
        size = max(2000, -(-texts.height // max(1, workers * 2)))
        shards += [{"pending": texts.slice(s, size)} for s in range(0, texts.height, size)]
    added = [0] * len(shards)
    common = {"wh": detached(wh), "plan": plan, "policy": policy, "run_id": run_id, "options": kwargs}
    weights = [shard["pending"].height for shard in shards]
    run_shards(runner, score_shard, shards, common, added.__setitem__, progress=progress, weights=weights)
    return sum(added)
