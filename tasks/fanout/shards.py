"""The fan-out: one work function over many shards, on a process pool or a Dask task runner.

`run_shards` is the one way work fans out (the way img2dataset hands one function to every
distributor): with no runner the shards run on a process pool of the flow run's own process (or
in it, for one worker); with a `prefect-dask` task runner (`flows.runners.fan_out`) each shard is
a Prefect task run on the cluster. Either way results come back as shards finish, in any order,
through the same tally and progress.

The shard tasks (`tasks.fanout.shard_tasks`, kept apart so that importing the fan-out does not import
Prefect) run on any worker. Each receives a detached warehouse handle (catalog and
data path, no open connection), opens its own connection where it runs, writes its shard under
the warehouse writer lock, and closes the connection before returning. The work itself is the same
code the in-process path runs (`tasks.ingest`, `tasks.harvest.embedded`, `tasks.curate.score`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait


def run_shards(
    runner,
    work: Callable,
    shards: list[dict],
    common: dict | None = None,
    tally: Callable[[int, object], None] | None = None,
    *,
    workers: int = 1,
    progress=None,
    weights: list[int] | None = None,
) -> None:
    """Run `work(**common, **shard)` for every shard; `tally(index, result)` as each one finishes.

    `runner` is a started Dask task runner (`work` is then a Prefect task), or None for a process
    pool of `workers` processes (in this process when `workers` is 1 or there is one shard). A
    bounded number of shards is in flight, so a million inputs never wait in memory at once.
    `progress.advance(weights[index])` (1 without weights) follows each finished shard.
    """
    common = common or {}
    if runner is None:
        finished = _on_pool(work, shards, common, workers)
    else:
        finished = _on_dask(runner, work, shards, common)
    for i, result in finished:
        if progress is not None:
            progress.advance(weights[i] if weights is not None else 1)
        if tally is not None:
            tally(i, result)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _pool_context():
    """fork where the platform has it: workers start in milliseconds, without importing anything.

    The pool's work functions (file listing, probing with Pillow, hashlib) never touch the threads
    (Prefect's) or the warehouse connection that the parent holds, and the workers leave with
    os._exit, so a fork is safe here. Other platforms get spawn, which re-imports `__main__`.
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _on_pool(work: Callable, shards: list[dict], common: dict, workers: int) -> Iterator[tuple[int, object]]:
    """(index, result) of each shard as it finishes; the first failure is raised at once."""
    if workers <= 1 or len(shards) <= 1:
        for i, shard in enumerate(shards):
            yield i, work(**common, **shard)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(shards)), mp_context=_pool_context()) as pool:
        pending = {}
        queue = iter(enumerate(shards))
        # Keep a bounded number of shards in flight so results never pile up in memory.
        for i, shard in queue:
            pending[pool.submit(work, **common, **shard)] = i
            if len(pending) >= workers * 4:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                yield i, fut.result()
                nxt = next(queue, None)
                if nxt is not None:
                    j, shard = nxt
                    pending[pool.submit(work, **common, **shard)] = j


def cluster_threads(runner, fallback: int = 1) -> int:
    """How many shards the runner's cluster runs at once (its worker threads), to size the shards."""
    try:
        return max(1, sum(runner.client.nthreads().values()))
    except Exception:
        return max(1, fallback)


def _on_dask(runner, work, shards: list[dict], common: dict) -> Iterator[tuple[int, object]]:
    """(index, result) of each shard as it finishes on the Dask task runner.

    Four shards per worker thread are in flight. After a failed shard no new shard starts; the ones
    in flight finish (their writes are whole snapshots) and are yielded, then the failure is raised.
    """
    from distributed import as_completed

    queue = iter(enumerate(shards))
    in_flight: dict[str, tuple[int, object]] = {}
    failure: BaseException | None = None

    def submit_next():
        nxt = None if failure is not None else next(queue, None)
        if nxt is None:
            return None
        i, shard = nxt
        # No opaque()/quote() here: Dask rebuilds the tuples they are made of as plain tuples on
        # the way to the worker, so the task would get (value,) instead of value.
        future = runner.submit(work, parameters={**common, **shard})
        in_flight[future.wrapped_future.key] = (i, future)
        return future.wrapped_future

    first = [submit_next() for _ in range(cluster_threads(runner) * 4)]
    finished = as_completed([f for f in first if f is not None], loop=runner.client.loop)
    for wrapped in finished:
        i, future = in_flight.pop(wrapped.key)
        try:
            result = future.result()
        except BaseException as exc:
            failure = failure or exc
        else:
            yield i, result
        following = submit_next()
        if following is not None:
            finished.add(following)
    if failure is not None:
        raise failure


# -- the shard functions ------------------------------------------------------------------------------
def probe_shard(probe: Callable, args: tuple) -> tuple[list[tuple], int]:
    """Probe one shard of inputs on the pool: (records, members skipped as already ingested)."""
    return probe(*args)
