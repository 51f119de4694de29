"""Image ingestion's pure parts: probing bytes, the layout checks, listing, the incremental filter."""

from __future__ import annotations

import errno
import io
import os

import polars as pl
import pytest
from PIL import Image

from flows.demo.sample import bomb_jpeg
from tasks.common.errors import InputError
from tasks.ingest import imageio
from tasks.ingest.folders import list_folder
from tasks.ingest.images import locate_source
from tasks.ingest.layout import read_val_labels
from tasks.ingest.load import drop_unchanged, records_frame, shard, split_records

WNID, OTHER = "n01440764", "n01443537"


def jpeg(width=40, height=30, colour=(200, 30, 30), **options) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "JPEG", **options)
    return buf.getvalue()


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (9, 7)).save(buf, "PNG")
    return buf.getvalue()


def reason_of(data: bytes) -> str:
    with pytest.raises(imageio.Rejected) as info:
        imageio.probe_bytes(data)
    return info.value.reason


def test_probe_reads_the_header_of_good_images():
    assert imageio.probe_bytes(jpeg(40, 30)) == imageio.Header("JPEG", 40, 30, "RGB")
    assert imageio.probe_bytes(png()) == imageio.Header("PNG", 9, 7, "L")


def test_probe_gives_each_bad_input_its_reason():
    data = jpeg(64, 48)
    assert reason_of(b"") == imageio.ZERO_BYTE
    assert reason_of(data[: len(data) // 2]) == imageio.TRUNCATED
    assert reason_of(data[:20]) == imageio.TRUNCATED
    assert reason_of(png()[:-20]) == imageio.TRUNCATED
    assert reason_of(b"hello, I am a text file\n") == imageio.NOT_AN_IMAGE
    assert reason_of(bomb_jpeg(data)) == imageio.BOMB
    # Just over PIL's limit is a warning in PIL; it is a bomb here too.
    assert reason_of(bomb_jpeg(data, side=9_500)) == imageio.BOMB


def test_probe_record_hashes_the_bytes():
    import hashlib

    data = jpeg()
    rec = dict(
        zip(imageio.RECORD, imageio.probe_record(data, "/p.JPEG", "p", WNID, "train", 1.0), strict=True)
    )
    assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["reason"] is None
    assert (rec["width"], rec["height"], rec["bytes"]) == (40, 30, len(data))


def test_os_errors_map_to_reasons():
    assert imageio.os_error_reason(PermissionError(errno.EACCES, "Permission denied")) == imageio.PERMISSION
    assert (
        imageio.os_error_reason(OSError(errno.ELOOP, "Too many levels of symbolic links"))
        == imageio.SYMLINK_LOOP
    )
    assert imageio.os_error_reason(FileNotFoundError(errno.ENOENT, "No such file")) == imageio.BROKEN_LINK
    assert imageio.os_error_reason(OSError(errno.EIO, "I/O error")) == imageio.UNREADABLE


def test_probe_files_quarantines_an_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "a.JPEG"
    path.write_bytes(jpeg())

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(imageio, "read_file", denied)
    (rec,), skipped = imageio.probe_files([(str(path), "a", WNID, "train", 10, 1.0)])
    assert rec[imageio.RECORD.index("reason")] == imageio.PERMISSION and skipped == 0


def make_tree(root, val_flat=True):
    for wnid in (WNID, OTHER):
        (root / "train" / wnid).mkdir(parents=True)
        for n in range(2):
            (root / "train" / wnid / f"{wnid}_{n}.JPEG").write_bytes(jpeg())
    (root / "val").mkdir()
    for n in range(1, 3):
        (root / "val" / f"ILSVRC2012_val_{n:08d}.JPEG").write_bytes(jpeg())
    if val_flat:
        (root / "LOC_val_solution.csv").write_text(
            f"ImageId,PredictionString\nILSVRC2012_val_00000001,{WNID} 1 2 3 4\nILSVRC2012_val_00000002,{OTHER} 1 2 3 4 {OTHER} 5 6 7 8\n"
        )
    return root


def test_locate_and_list_a_plain_tree(tmp_path):
    root = make_tree(tmp_path / "imagenet")
    source = locate_source(str(root))
    assert source.kind == "folder" and [f.split for f in source.folders] == ["train", "val"]
    items, rejects = list_folder(source)
    assert rejects == []
    by_id = {i[1]: i for i in items}
    assert len(items) == 6
    assert by_id[f"{OTHER}_1"][2:4] == (OTHER, "train")
    assert by_id["ILSVRC2012_val_00000002"][2:4] == (OTHER, "val")
    assert [f.split for f in locate_source(str(root), split="val").folders] == ["val"]


def test_kaggle_layout_is_found_from_its_root(tmp_path):
    root = tmp_path / "kaggle"
    make_tree(root / "ILSVRC" / "Data" / "CLS-LOC", val_flat=False)
    (root / "LOC_val_solution.csv").write_text(
        f"ImageId,PredictionString\nILSVRC2012_val_00000001,{WNID} 1 2 3 4\n"
    )
    (root / "LOC_synset_mapping.txt").write_text(f"{WNID} tench\n")
    items, rejects = list_folder(locate_source(str(root)))
    assert len(items) == 5
    assert [(r[0].rsplit("/", 1)[1], r[11]) for r in rejects] == [
        ("ILSVRC2012_val_00000002.JPEG", imageio.NO_LABEL)
    ]


def test_val_in_class_folders_and_a_split_folder_as_source(tmp_path):
    root = tmp_path / "x"
    (root / "val" / WNID).mkdir(parents=True)
    (root / "val" / WNID / "ILSVRC2012_val_00000009.JPEG").write_bytes(jpeg())
    items, _ = list_folder(locate_source(str(root)))
    assert [(i[1], i[2], i[3]) for i in items] == [("ILSVRC2012_val_00000009", WNID, "val")]
    items, _ = list_folder(locate_source(str(root / "val"), split="val"))
    assert [(i[2], i[3]) for i in items] == [(WNID, "val")]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda r: (r / "train" / "cats").mkdir(), "train/cats: not an ImageNet-1k class folder"),
        (lambda r: (r / "LOC_val_solution.csv").unlink(), "no LOC_val_solution.csv was found"),
        (lambda r: (r / "LOC_val_solution.csv").write_text("id,label\na,b\n"), "malformed val labels"),
        (
            lambda r: (r / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nx,n99999999 1 2\n"),
            "LOC_val_solution.csv:2: 'n99999999' is not an ImageNet-1k wnid",
        ),
        (
            lambda r: (r / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nx,\n"),
            "LOC_val_solution.csv:2: malformed",
        ),
    ],
)
def test_bad_layouts_are_input_errors_naming_the_path(tmp_path, setup, message):
    root = make_tree(tmp_path / "imagenet")
    setup(root)
    with pytest.raises(InputError, match=message):
        locate_source(str(root))


def test_missing_source_and_bad_split(tmp_path):
    with pytest.raises(InputError, match="nowhere: no such file or folder"):
        locate_source(str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="--split"):
        locate_source(str(tmp_path), split="test")
    with pytest.raises(InputError, match="no such val labels file"):
        locate_source(str(tmp_path), val_labels=str(tmp_path / "labels.csv"))


def test_listing_quarantines_links_strays_and_unlabelled(tmp_path):
    root = make_tree(tmp_path / "imagenet")
    cls = root / "train" / WNID
    os.symlink(cls / "loop.JPEG", cls / "loop.JPEG")
    os.symlink(cls / "gone.JPEG", cls / "dangling.JPEG")
    os.symlink(cls, cls / "again")  # a folder linking to itself
    (root / "train" / "stray.JPEG").write_bytes(jpeg())
    (root / "val" / "ILSVRC2012_val_00000077.JPEG").write_bytes(jpeg())
    (cls / ".DS_Store").write_bytes(b"junk")
    items, rejects = list_folder(locate_source(str(root)))
    reasons = {os.path.basename(r[0]): r[11] for r in rejects}
    assert reasons == {
        "loop.JPEG": imageio.SYMLINK_LOOP,
        "dangling.JPEG": imageio.BROKEN_LINK,
        "again": imageio.SYMLINK_LOOP,
        "stray.JPEG": imageio.OUTSIDE,
        "ILSVRC2012_val_00000077.JPEG": imageio.NO_LABEL,
    }
    assert len(items) == 6


def test_drop_unchanged_keeps_new_and_changed_files():
    items = [
        ("/a", "a", WNID, "train", 10, 1.0),
        ("/b", "b", WNID, "train", 10, 1.0),
        ("/c", "c", WNID, "train", 5, 2.0),
    ]
    known = pl.DataFrame(
        {"path": ["/a", "/b"], "bytes": [10, 11], "mtime": [1.0, 1.0], "reason": [None, None]},
        schema={"path": pl.String, "bytes": pl.Int64, "mtime": pl.Float64, "reason": pl.String},
    )
    todo, skipped = drop_unchanged(items, known)
    assert [t[0] for t in todo] == ["/b", "/c"] and skipped == 1


def test_split_records_keeps_one_row_per_image_id():
    recs = [
        imageio.probe_record(jpeg(), "/t/b/x_1.JPEG", "x_1", WNID, "train", 1.0),
        imageio.probe_record(jpeg(), "/t/a/x_1.JPEG", "x_1", OTHER, "train", 1.0),
        imageio.probe_record(b"", "/t/a/x_2.JPEG", "x_2", OTHER, "train", 1.0),
    ]
    images, quarantine = split_records(records_frame(recs), None)
    assert images["path"].to_list() == ["/t/a/x_1.JPEG"]
    assert dict(zip(quarantine["path"], quarantine["reason"], strict=True)) == {
        "/t/a/x_2.JPEG": imageio.ZERO_BYTE,
        "/t/b/x_1.JPEG": imageio.DUPLICATE,
    }


def test_shards_cover_every_item_once():
    items = list(range(10_001))
    chunks = shard(items, workers=2)
    assert sum(chunks, []) == items and len(chunks) > 8


def test_read_image_bytes_of_a_plain_file(tmp_path):
    data = jpeg()
    (tmp_path / "a.JPEG").write_bytes(data)
    assert imageio.read_image_bytes(str(tmp_path / "a.JPEG")) == data
    with pytest.raises(FileNotFoundError):
        imageio.read_image_bytes(str(tmp_path / "missing.JPEG"))


def test_read_val_labels_solution_csv(tmp_path):
    path = tmp_path / "LOC_val_solution.csv"
    path.write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000003,{OTHER} 0 0 9 9\n")
    assert read_val_labels(path) == {"ILSVRC2012_val_00000003": OTHER}


def test_listing_on_the_pool_gives_the_same_items(tmp_path, monkeypatch):
    import tasks.ingest.folders

    source = locate_source(str(make_tree(tmp_path / "imagenet")))
    serial = list_folder(source, workers=1)
    monkeypatch.setattr(tasks.ingest.folders, "POOL_MIN_FOLDERS", 1)
    assert list_folder(source, workers=2) == serial
