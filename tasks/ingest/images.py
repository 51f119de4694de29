"""Image ingestion: find a source's layout, list its inputs, probe them in parallel, load `images`.

The work is split in four steps so that nothing is written before the input is known to be sound:

1. `locate_source` checks the layout (class folders are ImageNet-1k wnids, val labels parse) and
   raises `InputError` naming the bad path; no warehouse is opened yet.
2. `list_folder` (or `tasks.ingest.archives.scan_archives`) walks the inputs; files that cannot be used
   are recorded as quarantine records with a reason, never dropped.
3. `plan_*` reads what the warehouse already holds under the source (path, size, mtime) once and
   keeps only the new or changed inputs, cut into shards.
4. `load_images` probes the shards on a process pool (`tasks.fanout.shards.run_shards`) (header without pixel decoding, sha256) and
   writes `images` and `quarantine` with anti-joins on their keys, one snapshot per
   `COMMIT_ROWS` records: one snapshot for any run under that size; a larger run commits in
   batches and a re-run after an interruption resumes where it stopped (committed inputs are
   unchanged, so step 3 skips them).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.errors import InputError
from tasks.common.retrying import RETRY
from tasks.fanout.shards import probe_shard, run_shards
from tasks.ingest import archives, imageio
from tasks.ingest.folders import list_folder, locate_bare_folder, locate_split_folders, plan_folder
from tasks.ingest.layout import SPLITS, Listing, Plan, Source
from tasks.ingest.load import records_frame, split_records, write_batch

# Records per warehouse commit; a run with more commits in batches (see the module docstring).
COMMIT_ROWS = 250_000
# Below this many inputs an automatic worker count probes in-process: a pool costs more than it saves.
POOL_MIN_ITEMS = 512


def locate_source(source: str, split: str = "auto", val_labels: str | None = None) -> Source:
    """Find and validate the layout under `source`; raises `InputError` naming the offending path."""
    if split not in SPLITS:
        raise InputError(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    root = Path(source).expanduser()
    if not root.exists():
        raise InputError(f"{root}: no such file or folder")
    root = root.resolve()
    labels_path = Path(val_labels).expanduser().resolve() if val_labels else None
    if labels_path is not None and not labels_path.is_file():
        raise InputError(f"{labels_path}: no such val labels file")
    if root.is_file():
        if archives.is_tar(root) or archives.is_parquet(root):
            return archives.locate_archives(root, [root], split, labels_path)
        raise InputError(f"{root}: not a folder, an ILSVRC .tar or a .parquet shard")
    located = locate_split_folders(root, split, labels_path)
    if located is not None:
        return located
    found = archives.find_archives(root)
    if found:
        return archives.locate_archives(root, found, split, labels_path)
    return locate_bare_folder(root, split, labels_path)


@task(name="locate-source", cache_policy=NO_CACHE)
def locate_source_task(source: str, split: str, val_labels: str | None) -> Source:
    """Check the source's layout and labels before anything is written."""
    return locate_source(source, split, val_labels)


@task(name="list-inputs", cache_policy=NO_CACHE)
def list_inputs_task(source: Source, workers: int = 1) -> Listing:
    """Walk the source: image inputs to probe and the inputs rejected while listing."""
    if source.kind == "folder":
        return Listing(*list_folder(source, workers))
    return Listing(archives=archives.scan_archives(source))


@task(name="plan-ingest", cache_policy=NO_CACHE)
def plan_task(wh, source: Source, listing: Listing, workers: int) -> Plan:
    """Skip what the warehouse already holds unchanged and cut the rest into shards."""
    if source.kind == "folder":
        return plan_folder(wh.con, source, listing.items, listing.rejects, workers)
    return archives.plan_archives(wh.con, source, listing.archives, workers)


@task(name="probe-and-load", cache_policy=NO_CACHE, **RETRY)
def load_images(
    wh, plan: Plan, workers: int, run_id: str, progress=None, parallel: bool | None = None
) -> dict:
    """Probe the planned shards (in parallel) and load `images` and `quarantine` in batches."""
    if parallel is None:
        parallel = plan.total >= POOL_MIN_ITEMS
    totals = {"added": 0, "updated": 0, "quarantined": 0, "skipped": plan.skipped, "snapshots": 0}
    pending: list[tuple] = []
    per_archive = {a["path"]: a for a in plan.archives}

    def take(records: list[tuple]) -> None:
        pending.extend(records)
        if per_archive:  # images and rejects per archive, recorded in ingested_archives
            for rec in records:
                archive = per_archive.get(rec[0].split(imageio.SEP, 1)[0])
                if archive is not None:
                    archive["quarantined" if rec[11] else "images"] += 1

    def flush(archives: list[dict]) -> None:
        images, quarantine = split_records(records_frame(pending), plan.known)
        before = wh.current_snapshot()
        counts = write_batch(wh, images, quarantine, archives, plan.source, run_id, plan.known)
        totals["snapshots"] += int(wh.current_snapshot() != before)
        for key in ("added", "updated", "quarantined"):
            totals[key] += counts[key]
        pending.clear()

    take(plan.rejects)

    def tally(i: int, result: tuple[list[tuple], int]) -> None:
        records, skipped = result
        take(records)
        totals["skipped"] += skipped
        if len(pending) >= COMMIT_ROWS:
            flush([])

    shards = [{"probe": fn, "args": args} for fn, args, _ in plan.units]
    weights = [weight for _, _, weight in plan.units]
    run_shards(
        None,
        probe_shard,
        shards,
        tally=tally,
        workers=workers if parallel else 1,
        progress=progress,
        weights=weights,
    )
    flush(plan.archives)
    return totals
