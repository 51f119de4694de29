"""A lean reader of tar headers (ustar, GNU, pax) over part of a file, and which members are unsafe.

Python's `tarfile` costs several times more per member and ends silently at a damaged header;
`iter_members` walks the headers with `os.pread`, never reads member data, and raises `TarDamage`
(with the offset and a quarantine reason) at the first damage. Only the standard library is
imported: the walk runs in worker processes.
"""

from __future__ import annotations

import math
import os
import tarfile
from collections.abc import Iterator
from typing import NamedTuple

# The quarantine reasons of a tar walk that ends early (`tasks.ingest.imageio` lists every reason).
DAMAGED_ARCHIVE = "damaged-archive"
TRUNCATED_ARCHIVE = "truncated-archive"


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
