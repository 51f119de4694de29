"""Damaged tar headers end the walk with a quarantine record, never a loop or a crash."""

from __future__ import annotations

import io
import signal
import tarfile
from contextlib import contextmanager

import pytest
from PIL import Image

from tasks.ingest import imageio
from tasks.ingest.archives import scan_archives
from tasks.ingest.images import locate_source

WNID = "n01440764"


def jpeg(colour=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buf, "JPEG")
    return buf.getvalue()


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def header(name: str, length: int, flag: bytes = b"0", raw: dict | None = None) -> bytes:
    """One ustar header block; `raw` overwrites fields (size, mtime) as bytes, and the checksum is redone."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime = length, 1_700_000_000
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[156:157] = flag
    spans = {"size": (124, 136), "mtime": (136, 148)}
    for key, value in (raw or {}).items():
        start, end = spans[key]
        block[start:end] = value.ljust(end - start, b"\0")
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def record(key: str, value: str) -> bytes:
    """A well-formed pax record: its length counts its own digits."""
    body = f" {key}={value}\n".encode()
    digits = next(d for d in range(1, 8) if len(str(len(body) + d)) == d)
    return str(len(body) + digits).encode() + body


def member(name: str, data: bytes, pax: bytes | None = None, raw: dict | None = None) -> bytes:
    out = b""
    if pax is not None:
        out += header("PaxHeader/" + name, len(pax), b"x") + padded(pax)
    return out + header(name, len(data), raw=raw) + padded(data)


def end() -> bytes:
    return b"\0" * 1024


@contextmanager
def deadline(seconds: int = 5):
    """Fail instead of hanging: the bug this file guards against is an endless loop."""

    def expired(signum, frame):  # not an OSError (TimeoutError is one): nothing may catch it as damage
        raise AssertionError(f"the tar walk did not end within {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def probe(data: bytes, tmp_path) -> dict[str, tuple]:
    """(reason, detail) by member name ('<tar>' for the tar itself) of a class tar's probe."""
    path = tmp_path / f"{WNID}.tar"
    path.write_bytes(data)
    with deadline():
        records, _ = imageio.probe_inner_tar(str(path), str(path), 0, len(data), WNID, "train")
    return {r[0].split("::", 1)[1] if "::" in r[0] else "<tar>": (r[11], r[12]) for r in records}


GOOD = member(f"{WNID}_1.JPEG", jpeg())


@pytest.mark.parametrize(
    "pax",
    [
        pytest.param(b"0 path=x\n", id="zero-length"),
        pytest.param(b"-9 path=x\n", id="negative-length"),
        pytest.param(b"+9 path=x\n", id="signed-length"),
        pytest.param(b"3 path=x\n", id="shorter-than-itself"),
        pytest.param(b"99 path=x\n", id="longer-than-the-header"),
        pytest.param(b"10 path=xx\n", id="no-newline-at-its-end"),
        pytest.param(b"path=x\n", id="no-length"),
        pytest.param(b"6 =xy\n", id="no-key"),
        pytest.param(record("size", "-5"), id="negative-size"),
        pytest.param(record("size", "1e3"), id="non-integer-size"),
        pytest.param(record("mtime", "nan"), id="nan-mtime"),
        pytest.param(record("mtime", "yesterday"), id="text-mtime"),
    ],
)
def test_a_damaged_pax_record_is_quarantined_not_looped_on(tmp_path, pax):
    data = GOOD + member(f"{WNID}_2.JPEG", jpeg(), pax=pax) + member(f"{WNID}_3.JPEG", jpeg()) + end()
    got = probe(data, tmp_path)
    assert got[f"{WNID}_1.JPEG"] == (None, None)  # what came before the damage is kept
    assert f"{WNID}_2.JPEG" not in got and f"{WNID}_3.JPEG" not in got
    reason, detail = got["<tar>"]
    assert reason == imageio.DAMAGED_ARCHIVE and "malformed tar header" in detail
    assert "1 members read before it" in detail


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"size": b"-7"}, id="negative-octal-size"),
        pytest.param({"size": b"0o17"}, id="prefixed-octal-size"),
        pytest.param({"size": b"12x"}, id="non-octal-size"),
        pytest.param({"mtime": b"99999999999z"}, id="non-octal-mtime"),
        pytest.param({"size": b"\xff" * 12}, id="negative-base-256-size"),
    ],
)
def test_bad_numeric_header_fields_are_quarantined(tmp_path, raw):
    data = GOOD + member(f"{WNID}_2.JPEG", jpeg(), raw=raw) + end()
    got = probe(data, tmp_path)
    assert got[f"{WNID}_1.JPEG"] == (None, None) and f"{WNID}_2.JPEG" not in got
    reason, detail = got["<tar>"]
    assert (
        reason == imageio.DAMAGED_ARCHIVE and "malformed tar header" in detail and "numeric field" in detail
    )


def test_an_extended_header_too_large_to_read_is_damage(tmp_path):
    huge = header("PaxHeader/x", 0, b"x", {"size": b"%011o" % (8 << 30)})  # claims 8 GiB of pax records
    got = probe(GOOD + huge + end(), tmp_path)
    assert got["<tar>"][0] == imageio.TRUNCATED_ARCHIVE and "runs past its end" in got["<tar>"][1]

    big = (2 << 20) + 100  # inside the archive, but no pax header is megabytes long
    blob = GOOD + header("PaxHeader/x", big, b"x") + padded(b"\0" * big)
    got = probe(blob + member(f"{WNID}_2.JPEG", jpeg()) + end(), tmp_path)
    assert got["<tar>"][0] == imageio.DAMAGED_ARCHIVE and "extended header" in got["<tar>"][1]


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda n: n, id="at-a-member-boundary"),
        pytest.param(lambda n: n + 200, id="inside-a-header"),
        pytest.param(lambda n: n + 512 + 100, id="inside-member-data"),
    ],
)
def test_a_cut_tar_is_quarantined_as_truncated(tmp_path, cut):
    whole = GOOD + member(f"{WNID}_2.JPEG", jpeg()) + member(f"{WNID}_3.JPEG", jpeg()) + end()
    got = probe(whole[: cut(len(GOOD))], tmp_path)
    assert got[f"{WNID}_1.JPEG"] == (None, None) and f"{WNID}_2.JPEG" not in got
    reason, detail = got["<tar>"]
    assert reason == imageio.TRUNCATED_ARCHIVE and detail.startswith("truncated archive")


def test_a_whole_tar_still_walks_to_its_end(tmp_path):
    data = GOOD + member(f"{WNID}_2.JPEG", jpeg(), pax=record("path", f"{WNID}_9.JPEG")) + end()
    got = probe(data, tmp_path)
    assert got == {f"{WNID}_1.JPEG": (None, None), f"{WNID}_9.JPEG": (None, None)}


def test_members_before_the_damage_stay_readable(tmp_path):
    first = jpeg((1, 2, 3))
    outer = tmp_path / "train.tar"
    inner = member(f"{WNID}_1.JPEG", first) + member(f"{WNID}_2.JPEG", jpeg(), pax=b"0 path=x\n") + end()
    outer.write_bytes(member(f"{WNID}.tar", inner) + end())
    with deadline():
        assert imageio.read_image_bytes(f"{outer}::{WNID}.tar::{WNID}_1.JPEG") == first
        with pytest.raises(FileNotFoundError):
            imageio.read_image_bytes(f"{outer}::{WNID}.tar::{WNID}_2.JPEG")


def test_a_val_tar_damaged_before_its_first_member_is_quarantined_whole(tmp_path):
    val = tmp_path / "ILSVRC2012_img_val.tar"
    val.write_bytes(member("ILSVRC2012_val_00000001.JPEG", jpeg(), pax=b"0 path=x\n") + end())
    with deadline():
        (archive,) = scan_archives(locate_source(str(val)))
    assert archive.entries == []
    ((path, *_, reason, detail),) = archive.rejects
    assert (path, reason) == (str(val), imageio.DAMAGED_ARCHIVE) and "pax record" in detail


def test_the_walker_never_loops_on_random_damage(tmp_path):
    import random

    rng = random.Random(13)
    whole = GOOD + member(f"{WNID}_2.JPEG", jpeg(), pax=record("path", "a" * 300)) + end()
    path = tmp_path / "t.tar"
    for _ in range(300):
        data = bytearray(whole)
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data))
            data[at] = rng.randrange(256)
        data = bytes(data[: rng.randint(len(data) // 2, len(data))])
        path.write_bytes(data)
        with deadline(), open(path, "rb") as fh:
            try:
                members = list(imageio.iter_members(fh, 0, len(data)))
            except tarfile.ReadError:
                continue
        assert all(m.size >= 0 and m.offset + m.size <= len(data) for m in members)
