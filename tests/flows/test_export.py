"""The export flow: each format loads back with the warehouse's counts and content, with a manifest."""

from __future__ import annotations

import json
import tarfile

import polars as pl
import pytest

from tests.flows.test_curate_data import CLASSES, build_world, train_models, use_home


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """A curated tiny world (baseline scorer) and what the warehouse says the export must hold."""
    from flows.curate import curate_flow
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, root / "home")
        settings = load_settings()
        wh = Warehouse.from_settings(settings)
        world = build_world(wh, root / "world", per_class=5)
        train_models(wh, world, settings.models_dir, kinds=("baseline",), full_model=False)
        wh.close()
        summary = curate_flow(scorer="baseline", min_p_true=0.35, masked_texts=0)
        reader = Warehouse.from_settings(settings).reader()
        expected = {
            "images": reader.execute("SELECT count(*) FROM images").fetchone()[0],
            "texts": reader.execute("SELECT image_id, text FROM curated ORDER BY ALL").fetchall(),
            "summary": summary,
        }
        reader.close()
        yield {"root": root, "settings": settings, "expected": expected, "home": str(root / "home")}


@pytest.fixture
def env(curated, monkeypatch):
    use_home(monkeypatch, curated["home"])
    return curated


def check_manifest(out, summary, fmt):
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == fmt
    assert manifest["curation"]["run_id"] == summary["run_id"]
    assert manifest["model_ids"] == summary["model_ids"]
    assert manifest["policy"]["min_p_true"] == 0.35
    assert isinstance(manifest["warehouse_snapshot"], int)
    for entry in manifest["files"]:
        assert (out / entry["path"]).stat().st_size == entry["bytes"]
    return manifest


def pairs(frame: pl.DataFrame) -> list[tuple[str, str]]:
    return sorted((r["image_id"], t["text"]) for r in frame.iter_rows(named=True) for t in r["texts"])


def test_parquet_and_hf_load_back_with_the_same_counts_and_content(env, tmp_path):
    import datasets

    from flows.export import export_flow

    expected = env["expected"]
    result = export_flow(format="parquet", out=str(tmp_path / "pq"), shard_size=3)
    frame = pl.read_parquet(tmp_path / "pq" / "data")
    assert frame.height == result["images"] == expected["images"]
    assert pairs(frame) == sorted(expected["texts"]) and result["texts"] == len(expected["texts"])
    assert sorted(p.parent.name for p in (tmp_path / "pq" / "data").glob("*/part-00000.parquet")) == sorted(
        f"wnid={w}" for w in CLASSES
    )
    assert all(pl.read_parquet(p).height <= 3 for p in (tmp_path / "pq" / "data").rglob("*.parquet"))
    row = frame.filter(pl.col("wnid") == "n07753592").row(0, named=True)
    assert row["class_name"] == "banana" and row["image"]["bytes"][:2] == b"\xff\xd8"
    assert [c["source"] for c in row["class_texts"]] == ["wordnet"]
    manifest = check_manifest(tmp_path / "pq", expected["summary"], "parquet")
    assert manifest["counts"]["images"] == expected["images"]

    export_flow(format="hf", out=str(tmp_path / "hf"), shard_size=10)
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert len(ds) == expected["images"]
    assert pairs(pl.from_arrow(ds.data.table).select("image_id", "texts")) == sorted(expected["texts"])
    assert ds[0]["image"].size == (16, 12)  # decoded as an image
    check_manifest(tmp_path / "hf", expected["summary"], "hf")


def test_webdataset_shards_hold_jpg_json_txt_per_sample(env, tmp_path):
    from flows.export import export_flow

    expected = env["expected"]
    out = tmp_path / "wds"
    result = export_flow(format="webdataset", out=str(out), shard_size=4)
    shards = sorted(out.glob("shard-*.tar"))
    assert len(shards) == -(-expected["images"] // 4) == result["files"]
    seen, texts = set(), []
    for shard in shards:
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            assert len(names) <= 4 * 3
            keys = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in names))
            assert names == [f"{k}.{s}" for k in keys for s in ("jpg", "json", "txt")]
            for key in keys:
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                caption = tar.extractfile(f"{key}.txt").read().decode()
                assert tar.extractfile(f"{key}.jpg").read()[:2] == b"\xff\xd8"
                assert meta["wnid"] in CLASSES and meta["class_name"] == CLASSES[meta["wnid"]][0]
                assert meta["class_texts"] and caption == meta["caption"]
                if meta["texts"]:
                    assert caption == meta["texts"][0]["text"] and meta["caption_source"] == "image-text"
                else:
                    assert caption == f"a photo of a {meta['class_name']}"
                texts += [(meta["image_id"], t["text"]) for t in meta["texts"]]
                seen.add(meta["image_id"])
    assert len(seen) == expected["images"] and sorted(texts) == sorted(expected["texts"])
    check_manifest(out, expected["summary"], "webdataset")


def test_re_export_replaces_its_own_folder_and_refuses_a_foreign_one(env, tmp_path):
    from flows.export import export_flow
    from tasks.errors import InputError

    out = tmp_path / "again"
    export_flow(format="webdataset", out=str(out), shard_size=100)
    export_flow(format="webdataset", out=str(out), shard_size=7, only_with_text=True)
    manifest = json.loads((out / "manifest.json").read_text())
    images_with_text = len({i for i, _ in env["expected"]["texts"]})
    assert manifest["counts"]["images"] == images_with_text
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", *(f["path"] for f in manifest["files"])]
    )
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export_flow(format="parquet", out=str(foreign))
    assert (foreign / "keep.txt").read_text() == "mine"
    with pytest.raises(InputError, match="--format"):
        export_flow(format="csv", out=str(tmp_path / "x"))
    # an image file gone since ingestion is left out and named in the manifest, the rest exported
    gone = sorted((env["root"] / "world" / "train").rglob("*.JPEG"))[0]
    gone.unlink()
    result = export_flow(format="parquet", out=str(out), shard_size=100)
    manifest = json.loads((out / "manifest.json").read_text())
    assert result["unreadable_images"] == manifest["counts"]["unreadable_images"] == 1
    assert manifest["unreadable_images"][0].startswith(gone.stem)
    assert result["images"] == env["expected"]["images"] - 1


def test_export_before_any_curation_is_a_clear_error(home, tmp_path):
    from flows.export import export_flow
    from tasks.errors import InputError

    with pytest.raises(InputError, match="imtext curate"):
        export_flow(format="parquet", out=str(tmp_path / "out"))
