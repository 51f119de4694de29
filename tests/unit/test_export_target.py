"""The export's target folder rules and its shard bounds, on folders and samples built inline."""

from __future__ import annotations

import hashlib
import json
import tarfile

import pytest

from tasks.common.errors import InputError
from tasks.export import read as export_read
from tasks.export import shards as export_shards
from tasks.export import target as export_target


def write_export(folder, contents, **manifest):
    folder.mkdir(parents=True)
    for name, data in contents.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    entries = [{"path": name, "bytes": len(data)} for name, data in contents.items()]
    (folder / "manifest.json").write_text(json.dumps({"format": "parquet", "files": entries, **manifest}))


def test_a_new_or_empty_folder_is_a_target(tmp_path):
    assert export_target.check_target(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    (tmp_path / "empty").mkdir()
    assert export_target.check_target(tmp_path / "empty") == tmp_path / "empty"


def test_only_a_folder_holding_exactly_an_imtext_export_is_replaceable(tmp_path):
    ours = tmp_path / "ours"
    write_export(ours, {"data/train-00000-of-00001.parquet": b"x"}, generator="imtext")
    assert export_target.check_target(ours) == ours
    # an export from before the marker existed: recognised by the fields imtext always wrote
    legacy = tmp_path / "legacy"
    write_export(
        legacy,
        {"shard-000000.tar": b"x"},
        export_run_id="r",
        warehouse_snapshot=3,
        curation={},
    )
    assert export_target.check_target(legacy) == legacy
    refused = {
        "webapp": ({"index.html": b"<html>"}, {"name": "my app"}),
        "other-generator": ({"a.parquet": b"x"}, {"generator": "someone-else"}),
        "unlisted-file": ({"a.parquet": b"x"}, {"generator": "imtext", "files": []}),
        "bad-format": ({"a.parquet": b"x"}, {"generator": "imtext", "format": "zip"}),
    }
    for name, (files, manifest) in refused.items():
        folder = tmp_path / name
        write_export(folder, files, **manifest)
        with pytest.raises(InputError, match="only replaces its own exports"):
            export_target.check_target(folder)
    not_json = tmp_path / "not-json"
    not_json.mkdir()
    (not_json / "manifest.json").write_text("{")
    with pytest.raises(InputError, match="holds no manifest.json written by imtext"):
        export_target.check_target(not_json)


def test_files_and_links_are_not_targets(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        export_target.check_target(afile / "sub")
    with pytest.raises(InputError, match="not a folder"):
        export_target.check_target(afile)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(InputError, match="not a folder"):
        export_target.check_target(tmp_path / "link")


def test_swap_replaces_the_old_export_and_leaves_no_sibling(tmp_path):
    out = tmp_path / "out"
    write_export(out, {"old.parquet": b"old"}, generator="imtext")
    staging = tmp_path / "work" / "export"
    staging.mkdir(parents=True)
    (staging / "new.parquet").write_bytes(b"new")
    export_target._swap(staging, out)
    assert sorted(p.name for p in out.iterdir()) == ["new.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "work"]


def sample(n: int, image: int) -> dict:
    return {
        "image_id": f"n01440764_{n}",
        "image": {"bytes": bytes(image), "path": f"n01440764_{n}.jpg"},
        "label": 0,
        "wnid": "n01440764",
        "class_name": "tench",
        "split": "train",
        "width": 4,
        "height": 4,
        "caption": "a fish",
        "caption_source": "image-text",
        "texts": [{"text_id": "t", "source": "flickr", "field": "title", "text": "a fish", "p_true": 0.9}],
        "class_texts": [],
    }


@pytest.mark.parametrize(("max_count", "max_bytes"), [(3, 10**9), (1000, 40 * 1024), (2, 40 * 1024)])
def test_tar_shards_hold_at_most_the_count_and_bytes(tmp_path, max_count, max_bytes):
    shards = export_shards._Shards(
        lambda n: export_shards._TarShard(tmp_path / f"shard-{n:06d}.tar"), max_count, max_bytes
    )
    sizes = [5000, 12000, 300, 9000, 20000, 100, 7000, 15000, 2500, 800]
    for n, size in enumerate(sizes):
        shards.add(sample(n, size))
    closed = shards.close()
    assert sum(s.count for s in closed) == len(sizes)
    seen = []
    for shard in closed:
        assert shard.count <= max_count and shard.path.stat().st_size <= max_bytes
        data = shard.path.read_bytes()
        assert (shard.file.size, shard.file.sha256.hexdigest()) == (
            len(data),
            hashlib.sha256(data).hexdigest(),
        )
        with tarfile.open(shard.path) as tar:
            names = tar.getnames()
            seen += [n.split(".")[0] for n in names if n.endswith(".cls")]
            assert tar.extractfile(names[1]).read() == b"0"
    assert seen == [f"n01440764_{n}" for n in range(len(sizes))]
    if max_count == 1000:
        assert len(closed) > 1  # the size bound cut the shards


def test_a_sample_larger_than_the_bound_gets_a_shard_of_its_own(tmp_path):
    shards = export_shards._Shards(lambda n: export_shards._TarShard(tmp_path / f"s{n}.tar"), 10, 20 * 1024)
    for n, size in enumerate([1000, 50_000, 1000]):
        shards.add(sample(n, size))
    assert [s.count for s in shards.close()] == [1, 1, 1]


def test_label_names_disambiguate_shared_names():
    import polars as pl

    data = export_read.CuratedData(
        0,
        {},
        pl.DataFrame(),
        pl.DataFrame(),
        pl.DataFrame(),
        classes=pl.DataFrame({"wnid": ["n1", "n2", "n3"], "name": ["crane", "tench", "crane"]}),
    )
    assert data.label_names == ["crane (n1)", "tench", "crane (n3)"]
