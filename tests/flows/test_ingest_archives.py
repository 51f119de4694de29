"""The ingest flow on ILSVRC tars and parquet shards: the same rows as the folder, skipped when unchanged."""

from __future__ import annotations

import io
import os
import tarfile

from typer.testing import CliRunner

from flows.demo.sample import generate_sample, write_ilsvrc_tars, write_parquet_shards

SAME = "image_id, wnid, split, bytes, width, height, format, mode, sha256"


def ingest_into(home, monkeypatch, source, **params):
    from flows.ingest import ingest_flow
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    monkeypatch.setenv("IMTEXT_HOME", str(home))
    summary = ingest_flow(source=str(source), **params)
    return summary, Warehouse.from_settings(load_settings()).reader()


def member_reasons(con) -> dict[str, str]:
    """Quarantine reasons by the file or member's own name (the last part of its path)."""
    rows = con.execute("SELECT path, reason FROM quarantine").fetchall()
    return {p.rsplit("::", 1)[-1].rsplit("/", 1)[-1]: r for p, r in rows}


def test_tars_and_parquet_shards_give_the_folder_rows(tmp_path, monkeypatch):
    sample = generate_sample(tmp_path / "tree", train_per_class=2, val_per_class=1, seed=2)
    tars = write_ilsvrc_tars(tmp_path / "tree", tmp_path / "tars")
    write_parquet_shards(tmp_path / "tree", tmp_path / "hf" / "data")

    _, folder = ingest_into(tmp_path / "h-folder", monkeypatch, sample["root"])
    expected = folder.execute(f"SELECT {SAME} FROM images ORDER BY image_id").fetchall()
    assert len(expected) == sample["images"]

    first, con = ingest_into(tmp_path / "h-tar", monkeypatch, tmp_path / "tars", workers=2)
    assert con.execute(f"SELECT {SAME} FROM images ORDER BY image_id").fetchall() == expected
    assert member_reasons(con) == member_reasons(folder)
    path = con.execute("SELECT path FROM images WHERE split = 'train' ORDER BY path LIMIT 1").fetchone()[0]
    assert path.startswith(f"{tars['train']}::n01440764.tar::n01440764_")
    again, con = ingest_into(tmp_path / "h-tar", monkeypatch, tmp_path / "tars")
    assert (again["added"], again["quarantined"], again["skipped_archives"]) == (0, 0, 2)
    assert again["snapshot"] == first["snapshot"]

    summary, con = ingest_into(tmp_path / "h-hf", monkeypatch, tmp_path / "hf")
    assert con.execute(f"SELECT {SAME} FROM images ORDER BY image_id").fetchall() == expected
    assert summary["quarantined"] == sample["quarantined"] - 1  # no stray file in a class-labelled shard
    assert con.execute("SELECT count(*) FROM images WHERE path LIKE '%test-00000%'").fetchone() == (0,)


def test_only_a_changed_archive_is_read_again(tmp_path, monkeypatch):
    generate_sample(tmp_path / "tree", train_per_class=1, val_per_class=1, seed=3)
    tars = write_ilsvrc_tars(tmp_path / "tree", tmp_path / "tars")
    ingest_into(tmp_path / "home", monkeypatch, tmp_path / "tars")
    with tarfile.open(tars["val"], "a") as tf:  # one more val image, with its label
        data = (tmp_path / "tree" / "val" / "ILSVRC2012_val_00000001.JPEG").read_bytes()
        info = tarfile.TarInfo("ILSVRC2012_val_00000099.JPEG")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with open(tars["labels"], "a") as fh:
        fh.write("ILSVRC2012_val_00000099,n01440764 1 1 5 5\n")
    summary, con = ingest_into(tmp_path / "home", monkeypatch, tmp_path / "tars")
    assert (summary["added"], summary["skipped_archives"]) == (1, 1)
    assert summary["skipped"] == con.execute("SELECT count(*) FROM images").fetchone()[0] - 1


def test_damaged_class_tar_and_unsafe_members_do_not_stop_the_run(tmp_path, monkeypatch):
    generate_sample(tmp_path / "tree", train_per_class=2, val_per_class=1, seed=4)
    tars = write_ilsvrc_tars(tmp_path / "tree", tmp_path / "tars")
    train = tars["train"]
    with tarfile.open(train) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]
    with tarfile.open(train, "w", format=tarfile.GNU_FORMAT) as tf:
        for info, data in members:
            if info.name == "n01443537.tar":
                data = data[:700]  # the class tar ends inside its first image
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo("../../evil.tar")
        evil.size = 0
        tf.addfile(evil, io.BytesIO(b""))
        sym = tarfile.TarInfo("n01484850.tar.link")
        sym.type, sym.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(sym)
    summary, con = ingest_into(tmp_path / "home", monkeypatch, train)
    reasons = dict(con.execute("SELECT path, reason FROM quarantine").fetchall())
    assert reasons[f"{train}::n01443537.tar"] == "truncated-archive"
    assert not any("n01443537.tar::" in p for p in reasons)  # nothing read past the damage
    assert reasons[f"{train}::../../evil.tar"] == "unsafe-member"
    assert reasons[f"{train}::n01484850.tar.link"] == "unsafe-member"
    assert not (tmp_path / "evil.tar").exists() and not (tmp_path.parent / "evil.tar").exists()
    assert con.execute("SELECT count(*) FROM images WHERE wnid = 'n01443537'").fetchone() == (0,)
    assert summary["added"] == con.execute("SELECT count(*) FROM images").fetchone()[0] == 19 * 2


def test_cli_refuses_a_train_tar_with_a_foreign_class_tar(tmp_path, monkeypatch):
    from flows.cli import app

    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w"):
        pass
    train = tmp_path / "ILSVRC2012_img_train.tar"
    with tarfile.open(train, "w") as tf:
        for name in ("n01440764.tar", "holiday_photos.tar"):
            info = tarfile.TarInfo(name)
            info.size = len(inner.getvalue())
            tf.addfile(info, io.BytesIO(inner.getvalue()))
    monkeypatch.setenv("IMTEXT_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["ingest", "--source", str(train)])
    assert result.exit_code == 2
    assert "holiday_photos.tar: not an ImageNet-1k class tar" in result.output
    assert not os.path.exists(tmp_path / "home" / "warehouse")
