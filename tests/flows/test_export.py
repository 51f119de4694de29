"""The export flow: each format loads back, in a fresh process, with the library its users would use
(`datasets`, `pyarrow`, `webdataset`), and gives the warehouse's splits, labels, texts and counts."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from tests.flows.test_curate_data import CLASSES, build_world, train_models, use_home

SPLITS = {"train": "train", "val": "validation"}


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    """A curated tiny world (baseline scorer, measured against labels) and what the warehouse holds."""
    from flows.curate import curate_flow
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, root / "home")
        settings = load_settings()
        wh = Warehouse.from_settings(settings)
        world = build_world(wh, root / "world", per_class=5)
        # one image without any text, which --only-with-text leaves out
        bare = root / "world" / "train" / "n07753592" / "n07753592_99.JPEG"
        bare.write_bytes((bare.parent / "n07753592_0.JPEG").read_bytes())
        wh.write(
            lambda c: c.execute(
                "INSERT INTO images (image_id, wnid, split, path, bytes, width, height, format, ingested_at, "
                "run_id) VALUES ('n07753592_99', 'n07753592', 'train', ?, ?, 16, 12, 'JPEG', now(), 'ingest-2')",
                [str(bare), bare.stat().st_size],
            )
        )
        train_models(wh, world, settings.models_dir, kinds=("baseline",), full_model=False)
        wh.close()
        summary = curate_flow(scorer="baseline", min_p_true=0.35, masked_texts=0, labels=str(world["labels"]))
        reader = Warehouse.from_settings(settings).reader()
        labels = reader.execute(
            "SELECT i.image_id, i.split, c.class_index FROM images i JOIN classes c USING (wnid)"
        ).fetchall()
        texts = reader.execute("SELECT image_id, text FROM curated ORDER BY ALL").fetchall()
        names = [r[0] for r in reader.execute("SELECT name FROM classes ORDER BY class_index").fetchall()]
        reader.close()
        splits: dict[str, dict[str, int]] = {}
        for image_id, split, label in labels:
            splits.setdefault(SPLITS[split], {})[image_id] = label
        expected = {
            "images": len(labels),
            "splits": splits,
            "texts": texts,
            "with_text": len({i for i, _ in texts}),
            "names": names,
            "summary": summary,
        }
        yield {"root": root, "expected": expected, "home": str(root / "home")}


@pytest.fixture
def env(curated, monkeypatch):
    use_home(monkeypatch, curated["home"])
    return curated


def fresh_process(tmp_path: Path, code: str, **args) -> dict:
    """Run `code` in a new Python process that never imports imtext; it prints one JSON object."""
    script = textwrap.dedent(code) + textwrap.dedent(
        """
        import sys as _sys
        assert not {m.split(".")[0] for m in _sys.modules} & {"tasks", "flows", "warehouse"}
        """
    )
    environ = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "ARGS": json.dumps(args),
    }
    environ.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_manifest(out: Path, expected: dict, fmt: str) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    summary = expected["summary"]
    assert manifest["generator"] == "imtext" and manifest["format"] == fmt
    assert manifest["curation"]["run_id"] == summary["run_id"]
    assert manifest["model_ids"] == summary["model_ids"]
    assert manifest["policy"]["min_p_true"] == 0.35
    assert isinstance(manifest["warehouse_snapshot"], int)
    assert {s: v["images"] for s, v in manifest["splits"].items()} == {
        s: len(ids) for s, ids in expected["splits"].items()
    }
    listed = {e["path"] for e in manifest["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == listed | {"manifest.json"} and "README.md" in listed
    for entry in manifest["files"]:
        data = (out / entry["path"]).read_bytes()
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
    return manifest


def test_parquet_loads_with_datasets_and_pyarrow_with_splits_and_labels(env, tmp_path, monkeypatch):
    from flows.export import export_flow
    from tasks.export import shards as exporting

    monkeypatch.setattr(exporting, "ROW_GROUP_ROWS", 2)  # small row groups, to see the bound hold
    expected = env["expected"]
    out = tmp_path / "pq"
    result = export_flow(format="parquet", out=str(out), shard_size=10)
    assert result["images"] == expected["images"] and result["texts"] == len(expected["texts"])
    files = sorted(p.name for p in (out / "data").iterdir())
    assert files == [
        "train-00000-of-00003.parquet",
        "train-00001-of-00003.parquet",
        "train-00002-of-00003.parquet",
        "validation-00000-of-00001.parquet",
    ]
    check_manifest(out, expected, "parquet")
    loaded = fresh_process(
        tmp_path,
        """
        import json, os, pathlib
        import datasets, pyarrow.parquet as pq
        out = pathlib.Path(json.loads(os.environ["ARGS"])["out"])
        ds = datasets.load_dataset("parquet", data_dir=str(out))
        by_card = datasets.load_dataset(str(out))  # the card's `configs` name the split files
        import pyarrow.dataset
        table = pyarrow.dataset.dataset(out / "data").to_table(columns=["image_id", "split", "label"])
        label = ds["train"].features["label"]
        groups = [pq.ParquetFile(p).metadata for p in sorted((out / "data").glob("*.parquet"))]
        image = ds["validation"][0]["image"]
        print(json.dumps({
            "splits": {s: dict(zip(d["image_id"], d["label"])) for s, d in ds.items()},
            "texts": sorted([i, t["text"]] for s in ds.values() for i, ts in zip(s["image_id"], s["texts"]) for t in ts),
            "label_type": type(label).__name__, "names": label.names,
            "image_type": type(ds["train"].features["image"]).__name__, "size": list(image.size),
            "row_groups": [[m.row_group(g).num_rows for g in range(m.num_row_groups)] for m in groups],
            "train_order": list(ds["train"]["image_id"]),
            "by_card": {s: len(d) for s, d in by_card.items()},
            "pyarrow": sorted(zip(*table.to_pydict().values())),
        }))
        """,
        out=str(out),
    )
    assert loaded["splits"] == expected["splits"]
    assert loaded["by_card"] == {s: len(ids) for s, ids in expected["splits"].items()}
    assert [tuple(r) for r in loaded["pyarrow"]] == sorted(
        (i, s, label) for s, ids in expected["splits"].items() for i, label in ids.items()
    )
    assert sorted(map(tuple, loaded["texts"])) == sorted(expected["texts"])
    assert loaded["label_type"] == "ClassLabel" and len(loaded["names"]) == 1000
    assert loaded["names"][:3] == expected["names"][:3]
    assert "crane (n02012849)" in loaded["names"] and "crane (n03126707)" in loaded["names"]
    assert loaded["image_type"] == "Image" and loaded["size"] == [16, 12]
    assert all(max(g) <= 2 for g in loaded["row_groups"]) and any(len(g) > 1 for g in loaded["row_groups"])
    assert loaded["train_order"] != sorted(loaded["train_order"])  # shuffled, not in class order


def test_hf_export_is_a_datasetdict_with_classlabel_and_image(env, tmp_path):
    from flows.export import export_flow

    expected = env["expected"]
    out = tmp_path / "hf"
    export_flow(format="hf", out=str(out), shard_size=10)
    check_manifest(out, expected, "hf")
    loaded = fresh_process(
        tmp_path,
        """
        import json, os
        import datasets
        ds = datasets.load_from_disk(json.loads(os.environ["ARGS"])["out"])
        label = ds["train"].features["label"]
        first = ds["train"][0]
        print(json.dumps({
            "type": type(ds).__name__,
            "splits": {s: dict(zip(d["image_id"], d["label"])) for s, d in ds.items()},
            "texts": sorted([i, t["text"]] for s in ds.values() for i, ts in zip(s["image_id"], s["texts"]) for t in ts),
            "label_type": type(label).__name__, "names": label.names,
            "first": [first["wnid"], label.int2str(first["label"]), first["class_name"], list(first["image"].size)],
            "shards": ds["train"].cache_files and len(ds["train"].cache_files),
        }))
        """,
        out=str(out),
    )
    assert loaded["type"] == "DatasetDict" and loaded["splits"] == expected["splits"]
    assert sorted(map(tuple, loaded["texts"])) == sorted(expected["texts"])
    assert loaded["label_type"] == "ClassLabel" and loaded["names"][:5] == expected["names"][:5]
    wnid, name, class_name, size = loaded["first"]
    assert CLASSES[wnid][0] == name == class_name and size == [16, 12]
    assert loaded["shards"] == 3  # 25 train images, at most 10 per shard


def test_webdataset_per_split_shards_load_with_webdataset_with_right_labels(env, tmp_path):
    from flows.export import export_flow

    expected = env["expected"]
    out = tmp_path / "wds"
    export_flow(format="webdataset", out=str(out), shard_size=4, seed=7)
    manifest = check_manifest(out, expected, "webdataset")
    assert manifest["seed"] == 7
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "manifest.json", "train", "validation"]
    assert len(list((out / "train").glob("shard-*.tar"))) == 7  # 25 images, 4 a shard
    loaded = fresh_process(
        tmp_path,
        """
        import json, os, pathlib
        import webdataset as wds
        out = pathlib.Path(json.loads(os.environ["ARGS"])["out"])
        result = {}
        for split in ("train", "validation"):
            urls = [str(p) for p in sorted((out / split).glob("shard-*.tar"))]
            ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil").to_tuple(
                "__key__", "jpg", "cls", "txt", "json"
            )
            result[split] = [
                [key, list(img.size), cls, txt, meta["image_id"], meta["label"], meta["caption"],
                 [t["text"] for t in meta["texts"]]]
                for key, img, cls, txt, meta in ds
            ]
        print(json.dumps(result))
        """,
        out=str(out),
    )
    assert {s: {r[0]: r[2] for r in rows} for s, rows in loaded.items()} == expected["splits"]
    texts = []
    for rows in loaded.values():
        for key, size, cls, txt, image_id, label, caption, kept in rows:
            assert key == image_id and cls == label and size == [16, 12] and txt == caption
            texts += [(image_id, t) for t in kept]
    assert sorted(texts) == sorted(expected["texts"])
    train_order = [r[0] for r in loaded["train"]]
    assert train_order != sorted(train_order)
    # the same seed gives the same order, another seed another one
    again = tmp_path / "wds-again"
    export_flow(format="webdataset", out=str(again), shard_size=100, seed=7)
    other = tmp_path / "wds-other"
    export_flow(format="webdataset", out=str(other), shard_size=100, seed=8)

    def order(folder):
        with tarfile.open(folder / "train" / "shard-000000.tar") as tar:
            return list(dict.fromkeys(n.split(".")[0] for n in tar.getnames()))

    assert order(again) == train_order != order(other)


def test_webdataset_shards_are_bounded_by_size_and_count(env, tmp_path):
    from flows.export import export_flow

    out = tmp_path / "wds"
    bound_mb = 0.02  # about 20 KB: three tiny samples (each ~ 4 KB of tar) plus padding
    export_flow(format="webdataset", out=str(out), shard_size=1000, shard_max_mb=bound_mb)
    manifest = json.loads((out / "manifest.json").read_text())
    shards = [f for f in manifest["files"] if f["path"].endswith(".tar")]
    train = [f["samples"] for f in shards if f["split"] == "train"]
    assert len(train) > 2 and max(train) > 1  # bounded by size, not by the 1000 samples
    assert all(f["bytes"] <= bound_mb * 2**20 for f in shards)
    assert sum(f["samples"] for f in shards) == env["expected"]["images"]
    with tarfile.open(out / shards[0]["path"]) as tar:
        names = tar.getnames()
    key = names[0].split(".")[0]
    assert names[:4] == [f"{key}.jpg", f"{key}.cls", f"{key}.txt", f"{key}.json"]


def test_every_export_carries_a_dataset_card(env, tmp_path):
    from flows.export import export_flow

    expected = env["expected"]
    summary = expected["summary"]
    export_flow(format="parquet", out=str(tmp_path / "pq"))
    card = (tmp_path / "pq" / "README.md").read_text()
    assert card.startswith("---\n") and "path: data/train-*.parquet" in card
    train, val = (len(expected["splits"][s]) for s in ("train", "validation"))
    assert f"| train | {train} |" in card and f"| validation | {val} |" in card
    for feature in ("image", "label", "wnid", "caption", "texts", "class_texts"):
        assert f"| `{feature}` |" in card
    assert "| class text | `wordnet` |" in card and "WordNet 3.0 licence" in card
    assert "| image text | `test` |" in card and "unknown" in card  # the test world's own source
    assert "`min_p_true` = 0.350" in card
    assert f"| keep | {summary['keep_precision']:.3f} | {summary['keep_recall']:.3f} |" in card
    assert f"| drop | {summary['precision']:.3f} | {summary['recall']:.3f} |" in card
    manifest = json.loads((tmp_path / "pq" / "manifest.json").read_text())
    assert f"warehouse snapshot: {manifest['warehouse_snapshot']}" in card
    assert all(f"`{m}`" in card for m in summary["model_ids"])
    assert "Dashenkov" in card and "10.30837/2522-9818.2025.1.020" in card


def test_only_with_text_exports_the_images_with_a_kept_text_through_the_command(env, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    expected = env["expected"]
    assert 0 < expected["with_text"] < expected["images"]
    out = tmp_path / "wds"
    done = CliRunner().invoke(
        app, ["export", "--format", "webdataset", "--out", str(out), "--only-with-text"]
    )
    assert done.exit_code == 0, done.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["images"] == expected["with_text"]
    assert manifest["counts"]["texts"] == len(expected["texts"]) and manifest["options"]["only_with_text"]
    splits = manifest["splits"]
    assert f"(train {splits['train']['images']}, validation {splits['validation']['images']})" in done.output
    assert "Only images with at least one kept text" in (out / "README.md").read_text()


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_a_folder_another_program_wrote_is_refused_and_left_as_it_was(env, tmp_path):
    from flows.export import export_flow
    from tasks.common.errors import InputError

    app = tmp_path / "webapp"
    (app / "static").mkdir(parents=True)
    (app / "manifest.json").write_text(json.dumps({"name": "my app", "files": [], "format": "parquet"}))
    (app / "index.html").write_text("<html></html>")
    (app / "static" / "app.js").write_text("run()")
    before = tree(app)
    with pytest.raises(InputError, match="only replaces its own exports"):
        export_flow(format="parquet", out=str(app))
    assert tree(app) == before
    # a real export folder to which someone added a file is not replaced either
    out = tmp_path / "export"
    export_flow(format="webdataset", out=str(out))
    (out / "train" / "notes.txt").write_text("mine")
    before = tree(out)
    with pytest.raises(InputError, match="train/notes.txt"):
        export_flow(format="webdataset", out=str(out))
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "webapp"]


def test_re_export_replaces_its_own_folder_and_a_failed_one_leaves_it_intact(env, tmp_path, monkeypatch):
    from flows.export import export_flow
    from tasks.export import samples as exporting

    out = tmp_path / "again"
    export_flow(format="webdataset", out=str(out))
    export_flow(format="parquet", out=str(out), shard_size=7)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "manifest.json"]
    before = tree(out)

    def broken(data: bytes) -> bytes:
        raise RuntimeError("disk full")

    monkeypatch.setattr(exporting, "_jpeg_bytes", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_flow.with_options(retries=0)(format="hf", out=str(out))
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no temporary folder left behind
    monkeypatch.undo()
    use_home(monkeypatch, env["home"])
    # an image file gone since ingestion is left out and named in the manifest, the rest exported
    gone = sorted((env["root"] / "world" / "train").rglob("*.JPEG"))[0]
    saved = gone.read_bytes()
    gone.unlink()
    try:
        result = export_flow(format="parquet", out=str(out), shard_size=100)
    finally:
        gone.write_bytes(saved)
    manifest = json.loads((out / "manifest.json").read_text())
    assert result["unreadable_images"] == manifest["counts"]["unreadable_images"] == 1
    assert manifest["unreadable_images"][0].startswith(gone.stem)
    assert result["images"] == env["expected"]["images"] - 1


def run_cli(tmp_path: Path, home: str, *args: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "IMTEXT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    for name in ("IMTEXT_WAREHOUSE", "IMTEXT_WAREHOUSE_DATA"):
        environ.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "export", *args],
        cwd=Path(__file__).resolve().parents[2],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_user_errors_are_one_line_and_exit_2(wh, home, tmp_path):
    wh.con  # a warehouse with its schema, and no curation yet
    wh.close()
    afile = tmp_path / "afile"
    afile.write_text("x")
    app = tmp_path / "webapp"
    app.mkdir()
    (app / "manifest.json").write_text("{}")
    (app / "index.html").write_text("<html></html>")
    cases = [
        (str(home), ["--out", str(tmp_path / "out")], "run `imtext curate`"),
        (str(tmp_path / "fresh-home"), ["--out", str(tmp_path / "out")], "run `imtext curate`"),
        (str(tmp_path / "fresh-home"), ["--out", str(afile / "sub")], "is a file, not a folder"),
        (str(tmp_path / "fresh-home"), ["--out", str(app)], "only replaces its own exports"),
        (str(tmp_path / "fresh-home"), ["--shard-max-mb", "0"], "--shard-max-mb"),
    ]
    for home, args, message in cases:
        done = run_cli(tmp_path, home, *args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, (args, done.stderr)
    assert sorted(p.name for p in app.iterdir()) == ["index.html", "manifest.json"]


def test_export_before_any_curation_is_a_clear_error(home, tmp_path):
    from flows.export import export_flow
    from tasks.common.errors import InputError

    with pytest.raises(InputError, match="imtext curate"):
        export_flow(format="parquet", out=str(tmp_path / "out"))
