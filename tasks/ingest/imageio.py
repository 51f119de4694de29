"""Open and probe images wherever they are stored: plain files, members of (nested) tars, parquet rows.

An image's `path` in the warehouse names where its bytes are:

- a plain file: `/data/imagenet/train/n01440764/n01440764_10026.JPEG`
- a tar member, nested tars joined by `::`:
  `/data/ILSVRC2012_img_train.tar::n01440764.tar::n01440764_10026.JPEG`
- a row of a parquet shard (Hugging Face layout, column `image.bytes`): `/data/train-00000-of-00257.parquet::17`

`read_image_bytes(path)` opens any of them. The probe functions read an image's header (format, size,
mode) without decoding pixels and hash its bytes; they run in worker processes, so this module imports
only the standard library and Pillow at load time (tar headers are read by `tasks.ingest.tar`).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import tarfile
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from tasks.ingest.tar import DAMAGED_ARCHIVE, MemberRef, iter_members, member_name
from tasks.ingest.tar import TRUNCATED_ARCHIVE as TRUNCATED_ARCHIVE  # listed with the other reasons

SEP = "::"

# Quarantine reasons: short, stable slugs; the `detail` column says more. DAMAGED_ARCHIVE and
# TRUNCATED_ARCHIVE, the reasons of a tar walk that ends early, are imported from tasks.ingest.tar.
ZERO_BYTE = "zero-byte"
TRUNCATED = "truncated"
NOT_AN_IMAGE = "not-an-image"
BOMB = "decompression-bomb"
PERMISSION = "permission-denied"
SYMLINK_LOOP = "symlink-loop"
BROKEN_LINK = "broken-symlink"
OUTSIDE = "outside-class-folder"
NO_LABEL = "no-label"
DUPLICATE = "duplicate-image-id"
UNREADABLE = "unreadable"
UNSAFE_MEMBER = "unsafe-member"
BAD_LABEL = "bad-label"

# One probed input, in this column order (what worker processes send back).
RECORD = (
    "path",
    "image_id",
    "wnid",
    "split",
    "bytes",
    "mtime",
    "width",
    "height",
    "format",
    "mode",
    "sha256",
    "reason",
    "detail",
)


class Rejected(Exception):
    """An input that is not a usable image; `reason` is one of the slugs above."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Header:
    format: str
    width: int
    height: int
    mode: str


# --------------------------------------------------------------------------------------------------
# Probing bytes


def _looks_complete(data: bytes, fmt: str) -> bool:
    """Whether the bytes end the way a whole file of this format does (no pixel decoding)."""
    if fmt == "JPEG":
        # The entropy-coded data never holds FF D9 (FF is stuffed), so EOI near the end means the
        # scan reached its end; a few bytes of padding after it are common and harmless.
        return b"\xff\xd9" in data[-64:]
    if fmt == "PNG":
        return b"IEND" in data[-64:]
    if fmt == "GIF":
        return data.rstrip(b"\x00\r\n").endswith(b";")
    return True


def probe_bytes(data: bytes) -> Header:
    """Format, width, height and mode of an encoded image, read from its header; raises `Rejected`."""
    if not data:
        raise Rejected(ZERO_BYTE, "the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                header = Header(im.format or "", im.width, im.height, im.mode)
    # Details are our own words, never the file's bytes or a parser's message (which may quote
    # them): a path that links to /etc/passwd must not put its first line in the quarantine table.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Rejected(BOMB, f"the header claims more than {Image.MAX_IMAGE_PIXELS} pixels") from None
    except UnidentifiedImageError:
        if data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n":
            raise Rejected(TRUNCATED, "the image header is cut short or damaged") from None
        raise Rejected(NOT_AN_IMAGE, "no known image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Rejected(TRUNCATED, f"cannot read the image header ({type(exc).__name__})") from None
    if not _looks_complete(data, header.format):
        raise Rejected(TRUNCATED, f"the {header.format} data stops before its end marker")
    return header


def probe_record(
    data: bytes, path: str, image_id: str, wnid: str | None, split: str, mtime: float | None
) -> tuple:
    """One RECORD for an image's bytes: header and sha256, or the reason it is rejected."""
    head = (path, image_id, wnid, split, len(data), mtime)
    try:
        h = probe_bytes(data)
    except Rejected as rej:
        return head + (None,) * 5 + (rej.reason, rej.detail)
    return head + (h.width, h.height, h.format, h.mode, hashlib.sha256(data).hexdigest(), None, None)


def reject_record(path: str, reason: str, detail: str, size: int | None = None, mtime: float | None = None):
    return (path, None, None, None, size, mtime, None, None, None, None, None, reason, detail)


def os_error_reason(exc: OSError) -> str:
    """The quarantine reason of an error met while opening a file."""
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return PERMISSION
    if exc.errno == errno.ELOOP:
        return SYMLINK_LOOP
    if exc.errno == errno.ENOENT:
        return BROKEN_LINK
    return UNREADABLE


def read_file(path: str) -> bytes:
    """A plain file's bytes (unbuffered: one sized read)."""
    with open(path, "rb", buffering=0) as fh:
        return fh.readall()


# --------------------------------------------------------------------------------------------------
# Worker-side shard functions (module level, so a process pool can pickle them)


def probe_files(items: list[tuple]) -> tuple[list[tuple], int]:
    """Probe plain files: items are (path, image_id, wnid, split, bytes, mtime) from the listing.

    Like every shard function here, returns (records, members skipped as already ingested).
    """
    out = []
    for path, image_id, wnid, split, size, mtime in items:
        try:
            data = read_file(path)
        except OSError as exc:
            out.append(reject_record(path, os_error_reason(exc), exc.strerror or str(exc), size, mtime))
            continue
        rec = probe_record(data, path, image_id, wnid, split, mtime)
        # Keep the size seen by the listing: the incremental check compares it with the next listing.
        out.append(rec[:4] + (size,) + rec[5:])
    return out, 0


# --------------------------------------------------------------------------------------------------
# Tars: members probed by offset (headers are walked by `tasks.ingest.tar`)


def stem(name: str) -> str:
    """The file name without folder and last suffix: an image's id (`a/n01_7.JPEG` → `n01_7`)."""
    base = name.rpartition("/")[2]
    dot = base.rfind(".")
    return base[:dot] if dot > 0 else base


def probe_tar_range(archive: str, prefix: str, members: list[tuple]) -> tuple[list[tuple], int]:
    """Probe members of a flat tar by offset; members are (name, offset, size, mtime, image_id, wnid, split)."""
    out = []
    with open(archive, "rb", buffering=0) as fh:
        fd = fh.fileno()
        for name, offset, size, mtime, image_id, wnid, split in members:
            path = f"{prefix}{SEP}{name}"
            data = os.pread(fd, size, offset) if size else b""
            if len(data) < size:
                out.append(reject_record(path, TRUNCATED, "the archive ends inside this member", size, mtime))
                continue
            out.append(probe_record(data, path, image_id, wnid, split, mtime))
    return out, 0


def probe_inner_tar(
    archive: str, prefix: str, offset: int, size: int, wnid: str, split: str, known: frozenset = frozenset()
) -> tuple[list[tuple], int]:
    """Stream one class tar (`<wnid>.tar`) stored at `offset` in `archive`: probe every image member.

    Member paths are `prefix::member` (`archive::<wnid>.tar` for a class tar inside the train tar,
    `archive` for a class tar given on its own). `known` holds (member, size, mtime) of members
    already in the warehouse: they are skipped without reading their data. A damaged tar keeps what
    was read before the damage and quarantines the rest.
    """
    out = []
    skipped = 0
    try:
        with open(archive, "rb", buffering=0) as fh:
            for ref in iter_members(fh, offset, size):
                path = f"{prefix}{SEP}{ref.name}"
                if ref.kind == "dir":
                    continue
                if ref.kind != "file":
                    out.append(reject_record(path, UNSAFE_MEMBER, ref.kind, ref.size, ref.mtime))
                    continue
                if (ref.name, ref.size, ref.mtime) in known:
                    skipped += 1
                    continue
                data = os.pread(fh.fileno(), ref.size, ref.offset) if ref.size else b""
                image_id = stem(ref.name)
                out.append(probe_record(data, path, image_id, wnid, split, ref.mtime))
    except (tarfile.TarError, OSError, EOFError) as exc:
        done = f" ({len(out)} members read before it)" if out else ""
        out.append(reject_record(prefix, archive_reason(exc), f"{exc}{done}", size, None))
    return out, skipped


def archive_reason(exc: BaseException) -> str:
    """The quarantine reason of an error that ended a tar walk: truncated or otherwise damaged."""
    return getattr(exc, "reason", DAMAGED_ARCHIVE)


# --------------------------------------------------------------------------------------------------
# Parquet shards (Hugging Face layout: `image` struct of bytes and path, `label` class index)


def probe_parquet_group(shard: str, group: int, first_row: int, split: str, wnids: tuple, mtime: float):
    """Probe the images of one row group of a parquet shard; labels map to wnids through `wnids`."""
    import pyarrow.parquet as pq

    out = []
    table = pq.ParquetFile(shard).read_row_group(group, columns=["image", "label"], use_threads=False)
    images = table.column("image").combine_chunks()
    blobs = images.field("bytes").to_pylist()
    names = (
        images.field("path").to_pylist() if images.type.get_field_index("path") >= 0 else [None] * len(blobs)
    )
    labels = table.column("label").to_pylist()
    shard_stem = stem(shard)
    for i, (data, name, label) in enumerate(zip(blobs, names, labels, strict=True)):
        row = first_row + i
        path = f"{shard}{SEP}{row}"
        image_id = stem(name) if name else f"{shard_stem}_{row}"
        if label is None or not 0 <= label < len(wnids):
            out.append(
                reject_record(
                    path,
                    BAD_LABEL,
                    f"label {label!r} is not a class index 0..{len(wnids) - 1}",
                    len(data or b""),
                    mtime,
                )
            )
            continue
        out.append(probe_record(data or b"", path, image_id, wnids[label], split, mtime))
    return out, 0


# --------------------------------------------------------------------------------------------------
# Reading any image path


def split_path(path: str) -> list[str]:
    """The parts of an image path: a file, then members of nested containers."""
    return path.split(SEP)


def _stamp(path: str) -> tuple[str, int, float]:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime)


@functools.lru_cache(maxsize=64)
def _tar_index(archive: str, size: int, mtime: float, start: int, length: int) -> dict[str, MemberRef]:
    """Member name → reference for one tar inside `archive` (cached per archive version).

    A damaged tar indexes the members before the damage: ingestion kept those, so they stay readable.
    """
    index: dict[str, MemberRef] = {}
    with open(archive, "rb", buffering=0) as fh:
        try:
            for ref in iter_members(fh, start, length):
                if ref.kind == "file":
                    index[ref.name] = ref
        except tarfile.TarError:
            pass
    return index


@functools.lru_cache(maxsize=8)
def _parquet_groups(shard: str, size: int, mtime: float) -> tuple[int, ...]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(shard).metadata
    return tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))


@functools.lru_cache(maxsize=2)
def _parquet_group_images(shard: str, size: int, mtime: float, group: int):
    import pyarrow.parquet as pq

    return (
        pq.ParquetFile(shard)
        .read_row_group(group, columns=["image"], use_threads=False)
        .column("image")
        .combine_chunks()
    )


def read_image_bytes(path: str) -> bytes:
    """The encoded bytes of the image at `path` (plain file, `a.tar::b.tar::m.JPEG`, `s.parquet::row`).

    Raises FileNotFoundError when the file or member does not exist. Tar indexes and parquet row
    groups are cached per process, so reading many images from one archive scans it once.
    """
    if SEP not in path or os.path.exists(path):
        return read_file(path)
    head, *members = split_path(path)
    if not os.path.isfile(head):
        raise FileNotFoundError(f"no such file: {head}")
    if head.endswith(".parquet"):
        if len(members) != 1 or not members[0].isdigit():
            raise FileNotFoundError(f"{path}: a parquet image path is 'shard.parquet::row'")
        stamp = _stamp(head)
        row = int(members[0])
        for group, rows in enumerate(_parquet_groups(*stamp)):
            if row < rows:
                value = _parquet_group_images(*stamp, group)[row].as_py()
                return value["bytes"]
            row -= rows
        raise FileNotFoundError(f"{path}: the shard has fewer rows")
    stamp = _stamp(head)
    start, length = 0, stamp[1]
    for depth, name in enumerate(members):
        ref = _tar_index(*stamp, start, length).get(member_name(name))
        if ref is None:
            raise FileNotFoundError(f"{path}: no member {name!r} in {SEP.join([head, *members[:depth]])}")
        start, length = ref.offset, ref.size
    with open(head, "rb", buffering=0) as fh:
        return os.pread(fh.fileno(), length, start)
