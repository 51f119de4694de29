"""Ingestion from the archives people have: ILSVRC tars and Hugging Face parquet shards, never unpacked.

- `ILSVRC2012_img_train.tar`: one inner `<wnid>.tar` per class. The outer tar's headers are read
  (seeking over the data), then each class tar is streamed by a worker in one sequential read.
  A single class tar (`n01440764.tar`) works too.
- `ILSVRC2012_img_val.tar`: flat JPEGs; labels from LOC_val_solution.csv or the devkit's ground truth.
- Parquet shards (`train-00000-of-00257.parquet`): `image` (struct of `bytes`, `path`) and `label`
  (class index in the standard order, mapped to a wnid through the class catalog); one unit of
  work per row group.

Image paths name the archive and member (`a.tar::n01440764.tar::n01440764_10026.JPEG`,
`s.parquet::17`); `tasks.ingest.imageio.read_image_bytes` opens them. Members that are links, devices or
whose names escape a folder are quarantined and never read; a damaged tar keeps what was read
before the damage and quarantines the rest. An archive already ingested with the same size and
mtime is skipped whole.
"""

from __future__ import annotations

import os
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tasks.common.errors import InputError
from tasks.ingest import imageio
from tasks.ingest.layout import LABEL_FILE, Plan, Source, read_val_labels, wnids
from tasks.ingest.load import read_known, shard
from tasks.ingest.tar import BLOCK, TarDamage, is_tar_header, iter_members
from warehouse.db import load_query

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
# Average ImageNet JPEG, to estimate a class tar's image count (for progress) from its size.
MEAN_IMAGE_BYTES = 110_000
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def is_tar(path: Path) -> bool:
    return path.name.endswith(".tar")


def is_parquet(path: Path) -> bool:
    return path.name.endswith(".parquet")


def find_archives(root: Path) -> list[Path]:
    """Parquet shards in `root` or `root/data`, else ILSVRC tars in `root`."""
    for folder in (root, root / "data"):
        if folder.is_dir():
            shards = sorted(p for p in folder.iterdir() if is_parquet(p) and p.is_file())
            if shards:
                return shards
    return sorted(p for p in root.iterdir() if is_tar(p) and p.is_file())


# --------------------------------------------------------------------------------------------------
# Locating


def _first_member(path: Path) -> str | None:
    """Name of the tar's first member that is not a folder (None: it holds none).

    Raises `InputError` for a file that is no plain tar at all, and `TarDamage` for a tar
    whose headers are damaged before its first member.
    """
    with open(path, "rb", buffering=0) as fh:
        first = fh.read(BLOCK)
        for prefix, kind in _COMPRESSED.items():
            if first.startswith(prefix):
                raise InputError(
                    f"{path}: a {kind}-compressed tar; ILSVRC tars are plain, unpack the outer layer first"
                )
        if first.strip(b"\0") and not is_tar_header(first):
            raise InputError(f"{path}: not a readable tar (no tar header at its start)")
        for ref in iter_members(fh, 0, os.fstat(fh.fileno()).st_size):
            if ref.kind != "dir":
                return ref.name
    return None


def tar_kind(path: Path) -> str:
    """'class-tars' (outer train tar), 'class-tar' (one <wnid>.tar), 'images' (a flat tar: val), or
    'damaged' (headers damaged before the first member: quarantined whole by `scan_tar`)."""
    from warehouse.catalog import wnid_set

    if path.name[: -len(".tar")] in wnid_set():
        return "class-tar"
    try:
        first = _first_member(path)
    except TarDamage:
        return "damaged"
    if first is None:
        raise InputError(f"{path}: the tar holds no files")
    return "class-tars" if first.endswith(".tar") else "images"


def _shard_split(path: Path) -> str | None:
    name = path.name.lower()
    for prefix, split in (
        ("train", "train"),
        ("validation", "val"),
        ("valid", "val"),
        ("val", "val"),
        ("test", "test"),
    ):
        if name.startswith(prefix):
            return split
    return None


def _check_shard(path: Path) -> None:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable parquet file ({exc})") from None
    image = schema.field("image").type if "image" in schema.names else None
    if image is None or not hasattr(image, "get_field_index") or image.get_field_index("bytes") < 0:
        raise InputError(
            f"{path}: expected the Hugging Face imagenet-1k columns 'image' (bytes, path) and 'label'"
        )
    if "label" not in schema.names:
        raise InputError(f"{path}: no 'label' column")


def locate_archives(root: Path, files: list[Path], split: str, labels_path: Path | None):
    """A validated archive source: which tars or shards to read, for which split, with which labels."""
    if all(is_parquet(f) for f in files):
        chosen = []
        for shard in files:
            shard_split = _shard_split(shard) if split == "auto" else split
            if shard_split is None:
                raise InputError(f"{shard}: cannot tell its split from the name; pass --split train or val")
            if shard_split == "test" or (split != "auto" and _shard_split(shard) not in (None, split)):
                continue  # the test split has no labels; other splits were not asked for
            _check_shard(shard)
            chosen.append(shard)
        if not chosen:
            raise InputError(
                f"{root}: no {split if split != 'auto' else 'train or validation'} parquet shards"
            )
        return Source("parquet", root, split, files=tuple(chosen))

    tars, labels = [], None
    for tar in files:
        kind = tar_kind(tar)
        tar_split = "val" if kind == "images" else "train"
        if kind != "damaged" and split not in ("auto", tar_split):
            if tar == root:
                what = "a flat tar of images (val)" if kind == "images" else "a train tar"
                raise InputError(f"{tar}: {what}, not --split {split}")
            continue
        if kind == "images" and tar_split == "val" and labels is None:
            beside = [labels_path, tar.parent / LABEL_FILE, tar.parent / "ILSVRC2012_devkit_t12.tar.gz"]
            found = next((p for p in beside if p is not None and p.is_file()), None)
            if found is None:
                raise InputError(
                    f"{tar}: val images need labels; pass --val-labels LOC_val_solution.csv or the devkit "
                    f"(looked beside the tar for {LABEL_FILE} and ILSVRC2012_devkit_t12.tar.gz)"
                )
            labels = read_val_labels(found)
        tars.append(tar)
    if not tars:
        raise InputError(f"{root}: no {split} tar here")
    return Source("tar", root, split, files=tuple(tars), labels=labels)


# --------------------------------------------------------------------------------------------------
# Scanning (headers and metadata only)


@dataclass
class Archive:
    """One archive or shard as scanned: its stamp, its units of work and the members it rejects."""

    path: str
    kind: str  # class-tars, class-tar, images, parquet
    split: str
    bytes: int
    mtime: float
    entries: list[tuple] = field(default_factory=list)  # kind-specific, see scan_tar / scan_parquet
    rejects: list[tuple] = field(default_factory=list)


def scan_tar(path: Path, labels: dict[str, str] | None) -> Archive:
    """Read the outer headers of a tar; a member that names no ImageNet class is an `InputError`."""
    from warehouse.catalog import wnid_set

    st = path.stat()
    kind = tar_kind(path)
    archive = Archive(str(path), kind, "val" if kind == "images" else "train", st.st_size, st.st_mtime)
    if kind == "damaged":  # unreadable before its first member: which split it holds is unknown
        archive.split = "unknown"
        try:
            _first_member(path)
        except TarDamage as exc:
            archive.rejects.append(
                imageio.reject_record(str(path), exc.reason, str(exc), st.st_size, st.st_mtime)
            )
        return archive
    if kind == "class-tar":
        archive.entries.append((path.name, 0, st.st_size, path.name[: -len(".tar")]))
        return archive
    known_wnids = wnid_set()
    bad = []
    with open(path, "rb", buffering=0) as fh:
        try:
            for ref in iter_members(fh, 0, st.st_size):
                member = f"{path}{imageio.SEP}{ref.name}"
                if ref.kind == "dir":
                    continue
                if ref.kind != "file":
                    archive.rejects.append(
                        imageio.reject_record(member, imageio.UNSAFE_MEMBER, ref.kind, ref.size, ref.mtime)
                    )
                elif kind == "class-tars":
                    stem = ref.name[: -len(".tar")] if ref.name.endswith(".tar") else None
                    if stem is None:
                        archive.rejects.append(
                            imageio.reject_record(
                                member, imageio.OUTSIDE, "not a class tar (<wnid>.tar)", ref.size, ref.mtime
                            )
                        )
                    elif stem not in known_wnids:
                        bad.append(member)
                    else:
                        archive.entries.append((ref.name, ref.offset, ref.size, stem))
                else:
                    image_id = imageio.stem(ref.name)
                    wnid = (labels or {}).get(image_id) if archive.split == "val" else None
                    if archive.split == "val" and wnid is None:
                        archive.rejects.append(
                            imageio.reject_record(
                                member, imageio.NO_LABEL, f"{image_id} has no val label", ref.size, ref.mtime
                            )
                        )
                        continue
                    archive.entries.append(
                        (ref.name, ref.offset, ref.size, ref.mtime, image_id, wnid, archive.split)
                    )
        except (tarfile.TarError, OSError, EOFError) as exc:
            after = f" ({len(archive.entries)} members read before it)" if archive.entries else ""
            archive.rejects.append(
                imageio.reject_record(str(path), imageio.archive_reason(exc), f"{exc}{after}")
            )
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputError(f"{bad[0]}: not an ImageNet-1k class tar (expected <wnid>.tar){more}")
    return archive


def scan_parquet(path: Path, split: str) -> Archive:
    """The row groups of a parquet shard (metadata only)."""
    import pyarrow.parquet as pq

    st = path.stat()
    shard_split = _shard_split(path) if split == "auto" else split
    archive = Archive(str(path), "parquet", shard_split, st.st_size, st.st_mtime)
    meta = pq.ParquetFile(path).metadata
    first = 0
    for group in range(meta.num_row_groups):
        rows = meta.row_group(group).num_rows
        archive.entries.append((group, first, rows))
        first += rows
    return archive


def scan_archives(source) -> list[Archive]:
    """Scan every archive or shard of the source (headers and metadata only, no image data)."""
    if source.kind == "parquet":
        return [scan_parquet(p, source.split) for p in source.files]
    return [scan_tar(p, source.labels) for p in source.files]


# --------------------------------------------------------------------------------------------------
# Planning


def plan_archives(con, source, archives: list[Archive], workers: int):
    """Skip archives ingested unchanged and members already held; cut the rest into units of work."""
    done = {row[0]: row[1:] for row in con.execute(load_query("ingest_known_archives")).fetchall()}
    known = read_known(con, str(source.root))
    held = defaultdict(set)  # container path → {(member, size, mtime)} already in the warehouse
    for path, size, mtime in known.select("path", "bytes", "mtime").rows():
        container, _, member = path.rpartition(imageio.SEP)
        held[container].add((member, size, mtime))
    plan = Plan(str(source.root), source.kind, known=known)
    class_wnids = wnids() if source.kind == "parquet" else ()
    for archive in archives:
        plan.seen += sum(e[2] if archive.kind == "parquet" else 1 for e in archive.entries) + len(
            archive.rejects
        )
        previous = done.get(archive.path)
        if previous is not None and previous[:2] == (archive.bytes, archive.mtime):
            plan.skipped_archives += 1
            plan.skipped += int(previous[2] or 0)
            continue
        plan.rejects.extend(archive.rejects)
        plan.archives.append(
            {"path": archive.path, "kind": archive.kind, "split": archive.split, "bytes": archive.bytes,
             "mtime": archive.mtime, "images": 0, "quarantined": 0}
        )  # fmt: skip
        if archive.kind == "parquet":
            for group, first, rows in archive.entries:
                args = (archive.path, group, first, archive.split, class_wnids, archive.mtime)
                plan.units.append((imageio.probe_parquet_group, args, rows))
        elif archive.kind in ("class-tars", "class-tar"):
            for name, offset, size, wnid in archive.entries:
                prefix = archive.path if archive.kind == "class-tar" else f"{archive.path}{imageio.SEP}{name}"
                args = (archive.path, prefix, offset, size, wnid, archive.split, frozenset(held[prefix]))
                plan.units.append((imageio.probe_inner_tar, args, size // MEAN_IMAGE_BYTES + 1))
        else:
            members = []
            for entry in archive.entries:
                name, _, size, mtime = entry[:4]
                if (name, size, mtime) in held[archive.path]:
                    plan.skipped += 1
                else:
                    members.append(entry)
            for chunk in shard(members, workers):
                plan.units.append((imageio.probe_tar_range, (archive.path, archive.path, chunk), len(chunk)))
    return plan
