"""Open and probe images wherever they are stored: plain files, members of (nested) tars, parquet rows.

An image's `path` in the warehouse names where its bytes are:

- a plain file: `/data/imagenet/train/n01440764/n01440764_10026.JPEG`
- a tar member, nested tars joined by `::`:
  `/data/ILSVRC2012_img_train.tar::n01440764.tar::n01440764_10026.JPEG`
- a row of a parquet shard (Hugging Face layout, column `image.bytes`): `/data/train-00000-of-00257.parquet::17`

`read_image_bytes(path)` opens any of them. The probe functions read an image's header (format, size,
mode) without decoding pixels and hash its bytes; they run in worker processes, so this module imports
only the standard library and Pillow at load time.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import math
import os
import tarfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

SEP = "::"

# Quarantine reasons: short, stable slugs; the `detail` column says more.
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
DAMAGED_ARCHIVE = "damaged-archive"
TRUNCATED_ARCHIVE = "truncated-archive"
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


class TarDamage(tarfile.ReadError):
    """A tar that cannot be walked past `offset`; `reason` is `TRUNCATED_ARCHIVE` or `DAMAGED_ARCHIVE`."""

    def __init__(self, message: str, offset: int = 0, reason: str = DAMAGED_ARCHIVE):
        super().__init__(message)
        self.offset = offset
        self.reason = reason

    def __reduce__(self):
        return type(self), (self.args[0], self.offset, self.reason)

    @classmethod
    def truncated(cls, message: str, offset: int) -> TarDamage:
        return cls(f"truncated archive: {message}", offset, TRUNCATED_ARCHIVE)


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
# Tars: a window onto part of a file, member safety, and member walking


def stem(name: str) -> str:
    """The file name without folder and last suffix: an image's id (`a/n01_7.JPEG` → `n01_7`)."""
    base = name.rpartition("/")[2]
    dot = base.rfind(".")
    return base[:dot] if dot > 0 else base


def member_name(name: str) -> str:
    """A member name without a leading './'."""
    while name.startswith("./"):
        name = name[2:]
    return name


def unsafe_reason(name: str, kind: str, linkname: str = "") -> str | None:
    """Why a tar member must never be used (links, devices, names escaping a folder), or None."""
    if kind in ("symlink", "hardlink"):
        return f"link member ({'symbolic' if kind == 'symlink' else 'hard'} link to {_shown(linkname, 200)})"
    if kind == "device":
        return "device or pipe member"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute member name"
    if ".." in name and ".." in name.replace("\\", "/").split("/"):
        return "member name escapes its folder ('..')"
    return None


class MemberRef(NamedTuple):
    name: str
    offset: int  # absolute offset of the data in the outermost file
    size: int
    mtime: float
    kind: str  # "file", "dir", or an unsafe reason


# Tar header type flags (POSIX ustar, GNU and pax).
_KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"5": "dir", b"2": "symlink", b"1": "hardlink"}
_KINDS.update({flag: "device" for flag in (b"3", b"4", b"6")})
_BLOCK = BLOCK = 512
# GNU long names and pax headers are a few hundred bytes; a larger one is damage, not a name to read.
_MAX_EXTENDED = 1 << 20


def _number(field: bytes) -> int:
    """A tar header number: octal text, or base-256 when the first byte's high bit is set."""
    if field[:1] and field[0] & 0x80:
        if field[0] == 0xFF:  # base-256 negative: no size or time of ours is below zero
            raise ValueError("a numeric field is negative")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        if text.isdigit():  # int(..., 8) alone would take '-7', '+7', '0o7' and '1_0'
            return int(text, 8)
    except ValueError:  # an 8 or a 9
        pass
    raise ValueError("a numeric field is not an octal number")


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _shown(value: bytes | str, limit: int = 60) -> str:
    """A header value for a message: repr, cut short (names in a damaged header may be any length)."""
    text = repr(value[:limit])
    return text + "..." if len(value) > limit else text


def _pax(data: bytes) -> dict[str, str]:
    """Records of a pax extended header: '<len> <key>=<value>\\n'; raises ValueError on a bad record.

    Each record's length counts its own digits, space and newline, so a valid one always moves
    forward; zero, negative, short or overlong lengths are damage, never a reason to loop.
    """
    out, pos, end = {}, 0, len(data)
    while pos < end:
        if data[pos] == 0 and not data[pos:].strip(b"\0"):  # NUL padding after the last record
            break
        space = data.find(b" ", pos, pos + 21)
        digits = data[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise ValueError(f"pax record at byte {pos} does not start with its length")
        size = int(digits)
        stop = pos + size
        # the shortest record is '<len> k=\n': digits, space, one key byte, '=', newline
        if size < len(digits) + 4 or stop > end or data[stop - 1 : stop] != b"\n":
            raise ValueError(f"pax record at byte {pos} has a bad length ({size})")
        key, equals, value = data[space + 1 : stop - 1].partition(b"=")
        if not equals or not key:
            raise ValueError(f"pax record at byte {pos} has no 'key=value'")
        try:
            out[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        except UnicodeDecodeError:
            raise ValueError(f"pax record at byte {pos} has a key that is not UTF-8") from None
        pos = stop
    return out


def _pax_size(value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise ValueError("a pax size is not a whole number of bytes")
    return int(value)


def _pax_mtime(value: str) -> float:
    mtime = float(value)
    if not math.isfinite(mtime):
        raise ValueError("a pax mtime is not a time")
    return mtime


def is_tar_header(block: bytes) -> bool:
    """Whether a 512-byte block is a tar header (its checksum matches)."""
    if len(block) < _BLOCK:
        return False
    try:
        stored = _number(block[148:156])
    except ValueError:
        return False
    return stored == sum(block) - sum(block[148:156]) + 256  # the checksum field counts as spaces


def iter_members(fh, start: int, length: int) -> Iterator[MemberRef]:
    """Headers of a tar stored at [start, start+length) of `fh`, without reading member data.

    A lean reader of ustar/GNU/pax headers (Python's tarfile costs several times more per member,
    and ends silently at a damaged header). Every header moves the walk forward by at least one
    block, so damage ends it rather than looping: raises `TarDamage` at a bad checksum, a
    malformed number or pax record, or data after the end-of-archive blocks, and (with reason
    `TRUNCATED_ARCHIVE`) at a member or header running past the end or a missing end-of-archive block.
    """
    fd = fh.fileno()
    pos, last = 0, None
    pending: dict[str, str] = {}  # long name / pax values for the next member

    def where() -> str:
        return f" after member {_shown(last)}" if last else ""

    while True:
        if pos + _BLOCK > length:
            cut = "inside a header" if pos < length else "without its end-of-archive blocks"
            raise TarDamage.truncated(f"it ends {cut} (offset {pos}){where()}", pos)
        header = os.pread(fd, _BLOCK, start + pos)
        if len(header) < _BLOCK:
            raise TarDamage.truncated(f"the file ends at offset {pos}{where()}", pos)
        if not header.strip(b"\0"):  # end-of-archive: the rest must be zero padding
            rest = os.pread(fd, min(length - pos, 1 << 16), start + pos)
            if rest.strip(b"\0"):
                after = f"after member {_shown(last)}" if last else "at its start"
                raise TarDamage(f"unreadable data {after} (offset {pos})", pos)
            return
        try:  # is_tar_header, inlined: this loop runs once per member of a million-image tar
            stored = _number(header[148:156])
        except ValueError:
            stored = -1
        if stored != sum(header) - sum(header[148:156]) + 256:
            raise TarDamage(f"invalid tar header at offset {pos}{where()}", pos)
        flag = header[156:157]
        data_at = pos + _BLOCK
        try:
            extended = flag in (b"L", b"K", b"x", b"g")
            size = _number(header[124:136])
            if not extended and "size" in pending:
                size = _pax_size(pending["size"])
            mtime = _pax_mtime(pending["mtime"]) if "mtime" in pending else float(_number(header[136:148]))
            if data_at + size > length:
                name = _shown(pending.get("path") or _text(header[:100]))
                raise TarDamage.truncated(f"member {name} runs past its end", pos)
            if extended and size > _MAX_EXTENDED:
                raise ValueError(f"an extended header of {size} bytes")
            data = os.pread(fd, size, start + data_at) if flag in (b"L", b"K", b"x") else b""
            if flag in (b"L", b"K", b"x") and len(data) < size:
                raise TarDamage.truncated(f"the file ends inside a header{where()}", pos)
            values = _pax(data) if flag == b"x" else {}
        except ValueError as exc:
            raise TarDamage(f"malformed tar header at offset {pos}{where()}: {exc}", pos) from None
        pos = data_at + -(-size // _BLOCK) * _BLOCK
        if flag in (b"L", b"K"):  # GNU long name / long link name of the next member
            pending["path" if flag == b"L" else "linkpath"] = _text(data)
            continue
        if flag in (b"x", b"g"):  # pax extended header (per member) / global (ignored)
            pending.update(values)
            continue
        name = pending.get("path")
        if name is None:
            name = _text(header[:100])
            if header[257:262] == b"ustar" and header[345:346] != b"\0":
                name = _text(header[345:500]) + "/" + name
        linkname = pending.get("linkpath", _text(header[157:257]))
        pending = {}
        kind = _KINDS.get(flag, "other member type")
        if kind == "file" and name.endswith("/"):
            kind = "dir"
        reason = unsafe_reason(name, kind, linkname)
        last = name
        yield MemberRef(member_name(name), start + data_at, size, mtime, reason or kind)


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
