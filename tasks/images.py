"""Image ingestion: find a source's layout, list its inputs, probe them in parallel, load `images`.

The work is split in four steps so that nothing is written before the input is known to be sound:

1. `locate_source` checks the layout (class folders are ImageNet-1k wnids, val labels parse) and
   raises `InputError` naming the bad path; no warehouse is opened yet.
2. `list_folder` (or `tasks.archives.scan_archives`) walks the inputs; files that cannot be used
   are recorded as quarantine records with a reason, never dropped.
3. `plan_*` reads what the warehouse already holds under the source (path, size, mtime) once and
   keeps only the new or changed inputs, cut into shards.
4. `load_images` probes the shards on a process pool (header without pixel decoding, sha256) and
   writes `images` and `quarantine` with anti-joins on their keys, one snapshot per
   `COMMIT_ROWS` records: one snapshot for any run under that size; a larger run commits in
   batches and a re-run after an interruption resumes where it stopped (committed inputs are
   unchanged, so step 3 skips them).
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import imageio
from tasks.errors import InputError
from tasks.retrying import RETRY
from warehouse.db import load_query

SPLITS = ("train", "val", "auto")
LABEL_FILE = "LOC_val_solution.csv"
KAGGLE_BASE = Path("ILSVRC", "Data", "CLS-LOC")
# Records per warehouse commit; a run with more commits in batches (see the module docstring).
COMMIT_ROWS = 250_000
# Below this many inputs an automatic worker count probes in-process: a pool costs more than it saves.
POOL_MIN_ITEMS = 512
# From this many class folders on (full ImageNet has 1000), the listing runs on the pool too: a
# stat per file is what a re-run costs, and on network or spinning disks it waits on latency. On a
# small tree in the page cache, forking the pool costs more than it saves.
POOL_MIN_FOLDERS = 200

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


# --------------------------------------------------------------------------------------------------
# 1. Layout


# The holders below are passed between the ingest tasks. Prefect walks a task's parameters (lists,
# tuples, dicts, dataclasses) item by item, about 10 µs an item: minutes for a million listed
# inputs. The flow hands them over wrapped in `prefect.utilities.annotations.opaque()`, which
# Prefect resolves without walking into.


@dataclass(slots=True)
class SplitFolder:
    """One split's folder: class folders (labels from their names) or flat val images with labels.

    classes: (wnid, folder) pairs; labels: image_id -> wnid of flat val images; labels_file: their file.
    """

    split: str
    path: Path
    classes: tuple | list = ()
    labels: dict | None = None
    labels_file: Path | None = None


@dataclass(slots=True)
class Source:
    """A located, validated source: kind "folder" (folders), "tar" or "parquet" (files, labels)."""

    kind: str
    root: Path
    split: str
    folders: tuple = ()
    files: tuple = ()
    labels: dict | None = None


@dataclass(slots=True, repr=False)
class Listing:
    """What walking a source found: folder items and rejects, or scanned archives."""

    items: list = field(default_factory=list)
    rejects: list = field(default_factory=list)
    archives: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.items, self.rejects, self.archives = list(self.items), list(self.rejects), list(self.archives)

    def __repr__(self) -> str:
        return f"Listing({len(self.items)} items, {len(self.rejects)} rejects, {len(self.archives)} archives)"


def _scan_dir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the folder ({exc.strerror or exc})") from None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def class_folders(path: Path) -> tuple[tuple[str, Path], ...]:
    """The (wnid, folder) pairs under a split folder; any other folder is an `InputError`."""
    from warehouse.catalog import wnid_set

    wnids = wnid_set()
    classes, bad = [], []
    for entry in _scan_dir(path):
        if _is_dir(entry):
            (classes if entry.name in wnids else bad).append((entry.name, Path(entry.path)))
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputError(
            f"{bad[0][1]}: not an ImageNet-1k class folder (expected a wnid such as n01440764){more}"
        )
    return tuple(classes)


def read_val_labels(path: Path) -> dict[str, str]:
    """image_id -> wnid from LOC_val_solution.csv, or from the devkit's ground truth (txt or tar.gz)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such val labels file")
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")) or name.endswith(".txt"):
        from tasks.archives import read_devkit_labels

        return read_devkit_labels(path)
    return _read_solution_csv(path)


def _read_solution_csv(path: Path) -> dict[str, str]:
    from warehouse.catalog import wnid_set

    wnids = wnid_set()
    labels: dict[str, str] = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
                raise InputError(
                    f"{path}: malformed val labels: the header must be 'ImageId,PredictionString', got {header!r}"
                )
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                tokens = row[1].split() if len(row) >= 2 else []
                if not row[0].strip() or not tokens:
                    raise InputError(f"{path}:{line}: malformed val labels row {row!r}")
                if tokens[0] not in wnids:
                    raise InputError(f"{path}:{line}: {tokens[0]!r} is not an ImageNet-1k wnid")
                labels[row[0].strip()] = tokens[0]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: malformed val labels: {exc}") from None
    if not labels:
        raise InputError(f"{path}: the val labels file holds no rows")
    return labels


def _val_folder(path: Path, label_candidates: list[Path | None]) -> SplitFolder:
    entries = _scan_dir(path)
    if any(_is_dir(e) for e in entries):
        return SplitFolder("val", path, classes=class_folders(path))
    candidates = [p for p in label_candidates if p is not None]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        looked = ", ".join(str(p) for p in dict.fromkeys(candidates))
        raise InputError(
            f"{path}: val images are flat but no {LABEL_FILE} was found (looked at {looked}); "
            "pass --val-labels FILE"
        )
    return SplitFolder("val", path, labels=read_val_labels(found), labels_file=found)


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

    from tasks import archives

    if root.is_file():
        if archives.is_tar(root) or archives.is_parquet(root):
            return archives.locate_archives(root, [root], split, labels_path)
        raise InputError(f"{root}: not a folder, an ILSVRC .tar or a .parquet shard")

    base = root / KAGGLE_BASE if (root / KAGGLE_BASE).is_dir() else root
    train, val = base / "train", base / "val"
    if train.is_dir() or val.is_dir():
        folders = []
        if split in ("train", "auto") and train.is_dir():
            folders.append(SplitFolder("train", train, classes=class_folders(train)))
        if split in ("val", "auto") and val.is_dir():
            folders.append(
                _val_folder(val, [labels_path, root / LABEL_FILE, val / LABEL_FILE, base / LABEL_FILE])
            )
        if not folders:
            raise InputError(f"{base}: no {split}/ folder")
        return Source("folder", root, split, tuple(folders))

    found = archives.find_archives(root)
    if found:
        return archives.locate_archives(root, found, split, labels_path)

    if split == "val" or (split == "auto" and root.name in ("val", "validation")):
        folder = _val_folder(root, [labels_path, root / LABEL_FILE, root.parent / LABEL_FILE])
        return Source("folder", root, "val", (folder,))
    entries = _scan_dir(root)
    if not any(_is_dir(e) for e in entries):
        raise InputError(
            f"{root}: no train/ or val/ folder, class folders, ILSVRC tars or parquet shards here"
        )
    return Source("folder", root, "train", (SplitFolder("train", root, classes=class_folders(root)),))


# --------------------------------------------------------------------------------------------------
# 2. Listing


def _reject(path: str, reason: str, detail: str, st: os.stat_result | None = None) -> tuple:
    return imageio.reject_record(
        path, reason, detail, st.st_size if st else None, st.st_mtime if st else None
    )


def _walk(
    top: str,
    wnid: str | None,
    split: str,
    labels: dict[str, str] | None,
    items: list[tuple],
    rejects: list[tuple],
    ancestors: frozenset,
    skip: frozenset = frozenset(),
    strays: bool = False,
) -> None:
    """List the image files under `top` (a class folder, or a flat val folder with `labels`).

    `strays`: `top` is a split folder whose own files belong to no class.
    """
    try:
        with os.scandir(top) as it:
            entries = [e for e in it if not e.name.startswith(".")]
    except OSError as exc:
        rejects.append(_reject(top, imageio.os_error_reason(exc), f"cannot list the folder: {exc.strerror}"))
        return
    for entry in entries:
        path = entry.path
        if path in skip:
            continue
        try:
            st = entry.stat()  # follows symlinks: a loop or a dangling link fails here
        except OSError as exc:
            rejects.append(_reject(path, imageio.os_error_reason(exc), exc.strerror or str(exc)))
            continue
        if stat.S_ISDIR(st.st_mode):
            if strays:
                continue  # class folders are walked by the caller
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                rejects.append(
                    _reject(path, imageio.SYMLINK_LOOP, "the folder links back to a folder above it")
                )
                continue
            _walk(path, wnid, split, labels, items, rejects, ancestors | {key})
            continue
        if not stat.S_ISREG(st.st_mode):
            rejects.append(_reject(path, imageio.NOT_AN_IMAGE, "not a regular file", st))
            continue
        if strays:
            rejects.append(
                _reject(path, imageio.OUTSIDE, f"the file is not inside a class folder of {top}", st)
            )
            continue
        image_id = imageio.stem(entry.name)
        label = wnid if labels is None else labels.get(image_id)
        if label is None:
            rejects.append(_reject(path, imageio.NO_LABEL, f"{image_id} has no row in the val labels", st))
            continue
        items.append((path, image_id, label, split, st.st_size, st.st_mtime))


def list_dir(
    top: str,
    wnid: str | None,
    split: str,
    labels: dict[str, str] | None,
    ancestors: frozenset,
    skip: frozenset = frozenset(),
    strays: bool = False,
) -> tuple[list[tuple], list[tuple]]:
    """One unit of listing: a class folder, a split folder's stray files, or a flat val folder."""
    items: list[tuple] = []
    rejects: list[tuple] = []
    _walk(top, wnid, split, labels, items, rejects, ancestors, skip, strays)
    return items, rejects


def _key(path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def list_folder(source: Source, workers: int = 1) -> tuple[list[tuple], list[tuple]]:
    """Every input file of a folder source: (path, image_id, wnid, split, bytes, mtime) items and rejects.

    A stat per file is what a re-run over an unchanged tree costs, so trees of many class folders
    are listed on the process pool, one class folder per unit.
    """
    units = []
    for folder in source.folders:
        top = str(folder.path)
        root = frozenset({_key(top)})
        if folder.labels is not None:
            skip = frozenset({str(folder.labels_file)}) if folder.labels_file else frozenset()
            units.append((list_dir, (top, None, folder.split, folder.labels, root, skip), 1))
            continue
        units.append((list_dir, (top, None, folder.split, None, root, frozenset(), True), 1))
        for wnid, path in folder.classes:
            units.append((list_dir, (str(path), wnid, folder.split, None, root | {_key(path)}), 1))
    results: list = [None] * len(units)
    for i, result in run_units(units, workers if len(units) >= POOL_MIN_FOLDERS else 1):
        results[i] = result
    items = [item for found, _ in results for item in found]
    rejects = [reject for _, rejected in results for reject in rejected]
    return items, rejects


# --------------------------------------------------------------------------------------------------
# 3. Planning


@dataclass(slots=True, repr=False)
class Plan:
    """What a run has to do: shards to probe, rejects already known, and what it skips.

    units: (fn, args, weight) shards for the pool; rejects: records found while listing; known:
    what the warehouse held under the source; seen/skipped: inputs found / unchanged;
    skipped_archives: archives unchanged since their ingest; archives: `ingested_archives` rows.
    """

    source: str
    kind: str
    units: list = field(default_factory=list)
    rejects: list = field(default_factory=list)
    known: pl.DataFrame | None = None
    seen: int = 0
    skipped: int = 0
    skipped_archives: int = 0
    archives: list = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Plan({self.kind} {self.source!r}: {len(self.units)} shards, {self.seen} seen, {self.skipped} skipped)"

    @property
    def total(self) -> int:
        return sum(weight for _, _, weight in self.units)


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


def plan_folder(con, source: Source, items: list[tuple], rejects: list[tuple], workers: int) -> Plan:
    """Skip the unchanged files of a folder source and cut the rest into probe shards."""
    known = read_known(con, str(source.root))
    todo, skipped = drop_unchanged(items, known)
    units = [(imageio.probe_files, (chunk,), len(chunk)) for chunk in shard(todo, workers)]
    return Plan(str(source.root), "folder", units, rejects, known, len(items) + len(rejects), skipped)


# --------------------------------------------------------------------------------------------------
# 4. Probing and loading


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _pool_context():
    """fork where the platform has it: workers start in milliseconds, without importing anything.

    The workers run only `tasks.imageio` code (files, Pillow, hashlib): they never touch the
    threads (Prefect's) or the warehouse connection that the parent holds, and they leave with
    os._exit, so a fork is safe here. Other platforms get spawn, which re-imports `__main__`.
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def run_units(units: list[tuple[Callable, tuple, int]], workers: int) -> Iterator[tuple[int, object]]:
    """Run (fn, args, weight) units, on a process pool when `workers` > 1; yields (index, result) as they finish."""
    if workers <= 1 or len(units) <= 1:
        for i, (fn, args, _) in enumerate(units):
            yield i, fn(*args)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(units)), mp_context=_pool_context()) as pool:
        pending = {}
        queue = iter(enumerate(units))
        # Keep a bounded number of shards in flight so results never pile up in memory.
        for i, (fn, args, _) in queue:
            pending[pool.submit(fn, *args)] = i
            if len(pending) >= workers * 4:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                yield i, fut.result()
                nxt = next(queue, None)
                if nxt is not None:
                    j, (fn, args, _) = nxt
                    pending[pool.submit(fn, *args)] = j


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
        con.register("staged_images", images.to_arrow(compat_level=pl.CompatLevel.newest()))
        q = quarantine
        dups = con.execute(load_query("ingest_duplicates")).pl()
        imgs = images
        if not dups.is_empty():
            moved = imgs.join(dups, on="path").with_columns(
                reason=pl.lit(imageio.DUPLICATE),
                detail=pl.format("image_id {} is already ingested from {}", "image_id", "kept"),
            )
            q = pl.concat([q, moved.select(_QUARANTINE_COLUMNS)])
            imgs = imgs.join(dups, on="path", how="anti")
            con.register("staged_images", imgs.to_arrow(compat_level=pl.CompatLevel.newest()))
        con.register("staged_quarantine", q.to_arrow(compat_level=pl.CompatLevel.newest()))
        threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
        try:
            # DuckDB's parallel Parquet writer spends twice the CPU for little gain on a few cores;
            # one thread loads a million rows in about a second.
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
                con.register("staged_archives", pa.Table.from_pylist(archives))
                con.execute(load_query("ingest_clear_archives"))
                con.execute(load_query("ingest_record_archives"), [source, run_id])
                con.unregister("staged_archives")
        finally:
            con.execute(f"SET threads = {int(threads)}")
            con.unregister("staged_images")
            con.unregister("staged_quarantine")
        return {"added": int(added), "updated": int(updated), "quarantined": q.height}

    return wh.write(load)


@task(name="locate-source", cache_policy=NO_CACHE)
def locate_source_task(source: str, split: str, val_labels: str | None) -> Source:
    """Check the source's layout and labels before anything is written."""
    return locate_source(source, split, val_labels)


@task(name="list-inputs", cache_policy=NO_CACHE)
def list_inputs_task(source: Source, workers: int = 1) -> Listing:
    """Walk the source: image inputs to probe and the inputs rejected while listing."""
    if source.kind == "folder":
        return Listing(*list_folder(source, workers))
    from tasks.archives import scan_archives

    return Listing(archives=scan_archives(source))


@task(name="plan-ingest", cache_policy=NO_CACHE)
def plan_task(wh, source: Source, listing: Listing, workers: int) -> Plan:
    """Skip what the warehouse already holds unchanged and cut the rest into shards."""
    if source.kind == "folder":
        return plan_folder(wh.con, source, listing.items, listing.rejects, workers)
    from tasks.archives import plan_archives

    return plan_archives(wh.con, source, listing.archives, workers)


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
    for i, (records, skipped) in run_units(plan.units, workers if parallel else 1):
        take(records)
        totals["skipped"] += skipped
        if progress is not None:
            progress.advance(plan.units[i][2])
        if len(pending) >= COMMIT_ROWS:
            flush([])
    flush(plan.archives)
    return totals
