"""The ingest flow end to end on generated ImageNet-layout trees."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.demo.sample import generate_sample


@pytest.fixture
def sample(tmp_path):
    return generate_sample(tmp_path / "imagenet", train_per_class=3, val_per_class=1, seed=1)


def rows(con, sql, params=None):
    return con.execute(sql, params or []).fetchall()


def test_sample_lands_in_images_and_quarantine(home, wh, sample):
    from flows.ingest import ingest_flow

    summary = ingest_flow(source=sample["root"])
    assert summary["added"] == sample["images"] and summary["quarantined"] == sample["quarantined"]
    con = wh.reader()
    assert rows(con, "SELECT split, count(*) FROM images GROUP BY 1 ORDER BY 1") == [
        ("train", sample["train_images"]),
        ("val", sample["val_images"]),
    ]
    assert dict(rows(con, "SELECT path, reason FROM quarantine")) == sample["broken"]
    assert rows(con, "SELECT count(DISTINCT run_id), min(run_id), count(DISTINCT source) FROM images") == [
        (1, summary["run_id"], 1)
    ]
    path, sha, width, height, fmt, image_id, wnid = rows(
        con, "SELECT path, sha256, width, height, format, image_id, wnid FROM images ORDER BY path LIMIT 1"
    )[0]
    data = open(path, "rb").read()
    assert sha == hashlib.sha256(data).hexdigest() and fmt == "JPEG"
    assert Image.open(io.BytesIO(data)).size == (width, height)
    assert path.endswith(f"/train/{wnid}/{image_id}.JPEG")
    assert summary["snapshot"] == wh.current_snapshot(con)


def test_second_run_adds_nothing_and_no_snapshot(home, wh, sample):
    from flows.ingest import ingest_flow

    first = ingest_flow(source=sample["root"])
    second = ingest_flow(source=sample["root"])
    assert (second["added"], second["updated"], second["quarantined"]) == (0, 0, 0)
    assert second["snapshot"] == first["snapshot"] and second["snapshots_created"] == 0
    con = wh.reader()
    assert rows(con, "SELECT count(*), count(DISTINCT image_id) FROM images") == [(sample["images"],) * 2]
    assert rows(con, "SELECT count(*) FROM quarantine") == [(sample["quarantined"],)]


def test_rerun_adds_only_new_and_changed_files_and_retries_fixed_ones(home, wh, sample, tmp_path):
    from flows.ingest import ingest_flow

    ingest_flow(source=sample["root"])
    root = sample["root"]
    wnid = sample["classes"][3]
    good = next(p for p in sorted(os.listdir(f"{root}/train/{wnid}")))
    Image.new("RGB", (33, 21), "blue").save(f"{root}/train/{wnid}/{wnid}_777.JPEG")
    Image.new("RGB", (50, 40), "green").save(f"{root}/train/{wnid}/{good}", "JPEG")
    truncated = next(p for p, r in sample["broken"].items() if r == "truncated")
    Image.new("RGB", (12, 10), "red").save(truncated, "JPEG")

    summary = ingest_flow(source=root)
    assert (summary["added"], summary["updated"], summary["quarantined"]) == (2, 1, 0)
    assert summary["skipped"] == sample["images"] - 1 + sample["quarantined"] - 2
    con = wh.reader()
    assert rows(con, "SELECT width, height FROM images WHERE image_id = ?", [good.split(".")[0]]) == [
        (50, 40)
    ]
    assert rows(con, "SELECT count(*) FROM quarantine WHERE path = ?", [truncated]) == [(0,)]
    assert rows(con, "SELECT count(*) FROM images") == [(sample["images"] + 2,)]


def test_parallel_workers_give_the_same_rows(home, wh, sample, tmp_path):
    from flows.ingest import ingest_flow

    summary = ingest_flow(source=sample["root"], workers=2)
    assert summary["added"] == sample["images"] and summary["workers"] == 2
    con = wh.reader()
    assert dict(rows(con, "SELECT path, reason FROM quarantine")) == sample["broken"]
    assert rows(con, "SELECT count(*) FROM images WHERE sha256 IS NULL OR width IS NULL") == [(0,)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file_is_quarantined(home, wh, sample):
    from flows.ingest import ingest_flow

    wnid = sample["classes"][0]
    path = f"{sample['root']}/train/{wnid}/{wnid}_1.JPEG"
    os.chmod(path, 0)
    try:
        ingest_flow(source=sample["root"])
    finally:
        os.chmod(path, 0o644)
    assert rows(wh.reader(), "SELECT reason FROM quarantine WHERE path = ?", [path]) == [
        ("permission-denied",)
    ]


@pytest.mark.parametrize(
    "breakage, message",
    [
        (
            lambda root: os.mkdir(f"{root}/train/not_a_class"),
            "train/not_a_class: not an ImageNet-1k class folder",
        ),
        (lambda root: os.remove(f"{root}/LOC_val_solution.csv"), "no LOC_val_solution.csv was found"),
    ],
)
def test_cli_exits_2_on_a_bad_layout_and_writes_nothing(home, sample, breakage, message):
    from flows.cli import app

    breakage(sample["root"])
    result = CliRunner().invoke(app, ["ingest", "--source", sample["root"]])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (home / "warehouse").exists()


def test_flow_raises_input_error_before_writing(home, tmp_path):
    from flows.ingest import ingest_flow
    from tasks.common.errors import InputError

    with pytest.raises(InputError, match="no such file or folder"):
        ingest_flow(source=str(tmp_path / "missing"))
    assert not (home / "warehouse").exists()
