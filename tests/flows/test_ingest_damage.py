"""Ingesting an ILSVRC train tar with damaged class tars: every damage leaves a quarantine row."""

from __future__ import annotations

import io
import signal
import tarfile

from flows.demo.sample import generate_sample, write_ilsvrc_tars
from tests.flows.test_ingest_archives import ingest_into


def _member(name: str, data: bytes, pax: bytes | None = None) -> bytes:
    """A tar member as bytes, after a pax header holding `pax` verbatim (a damaged record) if given."""
    out = b""
    if pax is not None:
        info = tarfile.TarInfo("PaxHeader/" + name)
        info.size, info.type = len(pax), tarfile.XHDTYPE
        out += info.tobuf(tarfile.USTAR_FORMAT) + pax + b"\0" * (-len(pax) % 512)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return out + info.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512)


def test_cut_and_damaged_class_tars_leave_quarantine_rows(tmp_path, monkeypatch):
    generate_sample(tmp_path / "tree", train_per_class=3, val_per_class=1, seed=13)
    train = write_ilsvrc_tars(tmp_path / "tree", tmp_path / "tars")["train"]
    with tarfile.open(train) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]
    class_tars = sorted(m.name for m, _ in members if m.name.endswith(".tar"))
    cut_half, cut_boundary, pax_zero = class_tars[1:4]
    kept = {}
    with tarfile.open(train, "w", format=tarfile.USTAR_FORMAT) as tf:
        for info, data in members:
            if info.name == cut_half:
                data = data[: len(data) // 2]  # the class tar cut in half
            elif info.name == cut_boundary:
                with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                    first = inner.getmembers()[1]
                data = data[: first.offset]  # cut exactly where its second image starts
                kept[cut_boundary] = 1
            elif info.name == pax_zero:
                with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                    images = [(m.name, inner.extractfile(m).read()) for m in inner.getmembers()]
                pax = {1: b"0 path=x\n"}  # the second image's pax record says its length is 0
                data = b"".join(_member(n, body, pax.get(k)) for k, (n, body) in enumerate(images))
                data += b"\0" * 1024
                kept[pax_zero] = 1
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)

    def expired(signum, frame):  # not an OSError (TimeoutError is one): nothing may catch it as damage
        raise AssertionError("ingest did not end: a damaged header made it loop")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(300)  # a pax record of length 0 once made this loop forever
    try:
        summary, con = ingest_into(tmp_path / "home", monkeypatch, train)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    rows = {p: (r, d) for p, r, d in con.execute("SELECT path, reason, detail FROM quarantine").fetchall()}
    reason, detail = rows[f"{train}::{cut_half}"]
    assert reason == "truncated-archive" and detail.startswith("truncated archive")
    reason, detail = rows[f"{train}::{cut_boundary}"]
    assert reason == "truncated-archive" and "end-of-archive" in detail
    reason, detail = rows[f"{train}::{pax_zero}"]
    assert reason == "damaged-archive" and "pax record" in detail

    counts = dict(con.execute("SELECT wnid, count(*) FROM images GROUP BY wnid").fetchall())
    for name, n in kept.items():
        assert counts[name.removesuffix(".tar")] == n  # what came before the damage is kept
    assert all(n == 3 for wnid, n in counts.items() if f"{wnid}.tar" not in (cut_half, *kept))
    assert summary["quarantined"] >= 3
