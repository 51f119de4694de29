"""Writing an export into its folder: staged beside it, with the card and the manifest, then swapped
into place, so a failed export leaves the previous one untouched. Only a folder an earlier imtext
export wrote is ever replaced, and not at all while nothing it was written from changed."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import uuid
from pathlib import Path

import polars as pl
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.errors import InputError
from tasks.export.card import dataset_card
from tasks.export.formats import WRITERS, ExportResult, file_entry
from tasks.export.options import FORMATS, Options
from tasks.export.read import CuratedData, tables_read

MANIFEST = "manifest.json"
CARD = "README.md"
GENERATOR = "imtext"
MANIFEST_VERSION = 2


def _own_export_problem(folder: Path) -> str | None:
    """None when `folder` holds exactly what an imtext export wrote, else why it must not be replaced."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"holds no {MANIFEST} written by imtext"
    ours = isinstance(manifest, dict) and (
        manifest.get("generator") == GENERATOR
        # exports written before the marker existed carry these
        or {"export_run_id", "warehouse_snapshot", "curation", "files"} <= manifest.keys()
    )
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not ours or manifest.get("format") not in FORMATS or not isinstance(files, list):
        return f"its {MANIFEST} was not written by imtext"
    listed = {MANIFEST, CARD} | {f.get("path") for f in files if isinstance(f, dict)}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_dir():
            rel = path.relative_to(folder).as_posix()
            if rel not in listed:
                return f"holds {rel}, which the imtext export there did not write"
    return None


def check_target(out: str | Path) -> Path:
    """The absolute export folder; an InputError when it cannot be written or must not be replaced."""
    out = Path(out).expanduser().absolute()
    for parent in reversed(out.parents):
        if parent.exists() and not parent.is_dir():
            raise InputError(f"--out {out}: {parent} is a file, not a folder")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        problem = _own_export_problem(out)
        if problem:
            raise InputError(
                f"--out {out} is not empty and {problem}; imtext only replaces its own exports: "
                "choose an empty or new folder"
            )
    return out


def _swap(staging: Path, out: Path) -> None:
    """Move the finished export into place; the folder it replaces is removed only after the move."""
    check_target(out)  # again: the folder may have changed while the export was written
    if not out.exists():
        staging.rename(out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_dataset(
    data: CuratedData,
    format: str,
    out: str | Path,
    *,
    options: Options | None = None,
    run_id: str = "",
    on_sample=None,
) -> ExportResult:
    """Write the dataset in `format` to `out` with its card and manifest; returns counts, files and the manifest."""
    options = options or Options()
    if format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    if options.shard_size < 1:
        raise InputError(f"--shard-size must be at least 1, not {options.shard_size}")
    if options.shard_max_bytes < 1:
        raise InputError("--shard-max-mb must be more than 0")
    out = check_target(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write beside it ({exc.strerror or exc})") from None
    staging = work / "export"
    try:
        staging.mkdir()
        result = WRITERS[format](data, staging, options, on_sample)
        created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        (staging / CARD).write_text(dataset_card(data, result, options, created_at))
        result.files.append(file_entry(staging / CARD, staging))
        manifest = {
            "generator": GENERATOR,
            "manifest_version": MANIFEST_VERSION,
            "format": format,
            "created_at": created_at,
            "export_run_id": run_id,
            "warehouse_snapshot": data.snapshot,
            "curation": data.curation,
            "model_ids": data.curation["model_ids"],
            "policy": data.curation["policy"],
            "scorers": data.scorers,
            "seed": options.seed,
            "splits": result.splits,
            "label_names": data.label_names,
            "counts": {
                "images": result.images,
                "texts": result.texts,
                "classes": result.classes,
                "class_texts": int(data.class_texts.filter(pl.col("wnid").is_in(data.wnids)).height),
                "files": len(result.files),
                "unreadable_images": len(data.unreadable),
            },
            "unreadable_images": data.unreadable[:100],
            "options": _options_entry(options),
            "files": result.files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        _swap(staging, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.out = out
    result.manifest = manifest
    return result


def unchanged_export(con, out: str | Path, format: str, options: Options) -> tuple[dict | None, str]:
    """The manifest of the export in `out` when writing it again would change nothing, else None; and why.

    It would change nothing when it is an export in `format` with the same options, every file its
    manifest lists is there with its size, and no snapshot after the one it was read at changed a
    table the export reads (the catalog's snapshot log says so; no table data is read).
    """
    from warehouse.changes import changed_since

    folder = Path(out)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None, f"no {MANIFEST} in {folder}"
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
        return None, f"{MANIFEST} was not written by imtext"
    if manifest.get("manifest_version") != MANIFEST_VERSION or manifest.get("format") != format:
        return (
            None,
            f"the export there is {manifest.get('format')}, manifest {manifest.get('manifest_version')}",
        )
    if manifest.get("seed") != options.seed or manifest.get("options") != _options_entry(options):
        return None, "it was written with other options"
    for entry in manifest.get("files") or []:
        path = folder / str(entry.get("path"))
        if path.is_symlink() or not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return None, f"{entry.get('path')} is missing or has another size"
    snapshot = manifest.get("warehouse_snapshot")
    if not isinstance(snapshot, int):
        return None, "its manifest names no warehouse snapshot"
    changed = changed_since(con, tables_read(con), snapshot)
    if changed:
        return None, f"{', '.join(sorted(changed))} changed since snapshot {snapshot}"
    return manifest, f"nothing it reads changed since snapshot {snapshot}"


def _options_entry(options: Options) -> dict:
    return {
        "shard_size": options.shard_size,
        "shard_max_bytes": options.shard_max_bytes,
        "only_with_text": options.only_with_text,
    }


def record_export(wh, row: dict) -> int:
    """One `exports` row for a finished export (anti-joined on run_id)."""
    from warehouse.db import load_query

    return wh.insert_arrow(load_query("curate_insert_export"), export_row=pa.Table.from_pylist([row]))


# -- Prefect tasks (thin wrappers the export flow calls) ------------------------------------------


@task(name="check-unchanged-export", cache_policy=NO_CACHE)
def unchanged_export_task(con, out: str, format: str, options: Options) -> tuple[dict | None, str]:
    """The manifest of the export in `out` when nothing it reads changed since it was written, and why (not)."""
    return unchanged_export(con, out, format, options)


@task(name="write-export", cache_policy=NO_CACHE)
def write_export_task(data, format: str, out: str, options: Options, run_id: str, on_sample=None):
    """Write the dataset files, the dataset card and the manifest, then swap them into place."""
    return export_dataset(data, format, out, options=options, run_id=run_id, on_sample=on_sample)
