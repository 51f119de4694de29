"""Folder sources: class folders named by wnid, flat val folders with labels, listed on a process pool.

A tree of many class folders is listed one class folder per shard: a stat per file is what a
re-run over an unchanged tree costs, and on network or spinning disks it waits on latency.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tasks.common.errors import InputError
from tasks.fanout.shards import run_shards
from tasks.ingest import imageio
from tasks.ingest.layout import KAGGLE_BASE, LABEL_FILE, Plan, Source, SplitFolder, read_val_labels
from tasks.ingest.load import drop_unchanged, read_known, shard

# From this many class folders on (full ImageNet has 1000), the listing runs on the pool too: a
# stat per file is what a re-run costs, and on network or spinning disks it waits on latency. On a
# small tree in the page cache, forking the pool costs more than it saves.
POOL_MIN_FOLDERS = 200


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


def locate_split_folders(root: Path, split: str, labels_path: Path | None) -> Source | None:
    """The train/ and val/ folders under `root` (or its Kaggle tree); None when it has neither."""
    base = root / KAGGLE_BASE if (root / KAGGLE_BASE).is_dir() else root
    train, val = base / "train", base / "val"
    if not (train.is_dir() or val.is_dir()):
        return None
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


def locate_bare_folder(root: Path, split: str, labels_path: Path | None) -> Source:
    """`root` itself as one split: flat val images with their labels, or class folders of train."""
    if split == "val" or (split == "auto" and root.name in ("val", "validation")):
        folder = _val_folder(root, [labels_path, root / LABEL_FILE, root.parent / LABEL_FILE])
        return Source("folder", root, "val", (folder,))
    entries = _scan_dir(root)
    if not any(_is_dir(e) for e in entries):
        raise InputError(
            f"{root}: no train/ or val/ folder, class folders, ILSVRC tars or parquet shards here"
        )
    return Source("folder", root, "train", (SplitFolder("train", root, classes=class_folders(root)),))


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
    shards = []
    for folder in source.folders:
        top = str(folder.path)
        root = frozenset({_key(top)})
        if folder.labels is not None:
            skip = frozenset({str(folder.labels_file)}) if folder.labels_file else frozenset()
            shards.append(_unit(top, None, folder.split, folder.labels, root, skip))
            continue
        shards.append(_unit(top, None, folder.split, None, root, strays=True))
        for wnid, path in folder.classes:
            shards.append(_unit(str(path), wnid, folder.split, None, root | {_key(path)}))
    results: list = [None] * len(shards)
    pool = workers if len(shards) >= POOL_MIN_FOLDERS else 1
    run_shards(None, list_dir, shards, tally=results.__setitem__, workers=pool)
    items = [item for found, _ in results for item in found]
    rejects = [reject for _, rejected in results for reject in rejected]
    return items, rejects


def _unit(top, wnid, split, labels, ancestors, skip=frozenset(), strays=False) -> dict:
    """The arguments of one `list_dir` shard."""
    return {"top": top, "wnid": wnid, "split": split, "labels": labels, "ancestors": ancestors,
            "skip": skip, "strays": strays}  # fmt: skip


def plan_folder(con, source: Source, items: list[tuple], rejects: list[tuple], workers: int) -> Plan:
    """Skip the unchanged files of a folder source and cut the rest into probe shards."""
    known = read_known(con, str(source.root))
    todo, skipped = drop_unchanged(items, known)
    units = [(imageio.probe_files, (chunk,), len(chunk)) for chunk in shard(todo, workers)]
    return Plan(str(source.root), "folder", units, rejects, known, len(items) + len(rejects), skipped)
