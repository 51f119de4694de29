"""Archives: nested tars (damaged, unsafe members), parquet shards, devkit labels, reading image paths."""

from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io
from PIL import Image

from tasks.common.errors import InputError
from tasks.ingest import imageio
from tasks.ingest.archives import scan_archives
from tasks.ingest.images import locate_source
from tasks.ingest.layout import read_devkit_labels

WNID, OTHER = "n01440764", "n01443537"


def jpeg(colour=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), colour).save(buf, "JPEG")
    return buf.getvalue()


def tar_of(members: list[tuple[str, bytes | tarfile.TarInfo]], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    """A tar in memory: (name, data) members, or ready TarInfo objects (links)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, data in members:
            if isinstance(data, tarfile.TarInfo):
                tf.addfile(data)
                continue
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[str, tarfile.TarInfo]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return name, info


def probe_tar(data: bytes, tmp_path, wnid=WNID):
    path = tmp_path / f"{wnid}.tar"
    path.write_bytes(data)
    records, _ = imageio.probe_inner_tar(str(path), str(path), 0, len(data), wnid, "train")
    return {r[0].split("::", 1)[1] if "::" in r[0] else "<tar>": (r[11], r[12]) for r in records}


def test_unsafe_members_are_quarantined_and_never_read(tmp_path):
    data = tar_of(
        [
            (f"{WNID}_1.JPEG", jpeg()),
            ("../escape.JPEG", jpeg()),
            ("/etc/absolute.JPEG", jpeg()),
            link("sym.JPEG", "/etc/passwd"),
            link("hard.JPEG", f"{WNID}_1.JPEG", tarfile.LNKTYPE),
        ]
    )
    got = probe_tar(data, tmp_path)
    assert got[f"{WNID}_1.JPEG"] == (None, None)
    assert {k: v[0] for k, v in got.items() if v[0]} == {
        "../escape.JPEG": imageio.UNSAFE_MEMBER,
        "/etc/absolute.JPEG": imageio.UNSAFE_MEMBER,
        "sym.JPEG": imageio.UNSAFE_MEMBER,
        "hard.JPEG": imageio.UNSAFE_MEMBER,
    }
    assert "escapes its folder" in got["../escape.JPEG"][1] and "link" in got["sym.JPEG"][1]
    assert not (tmp_path.parent / "escape.JPEG").exists()


def test_a_damaged_tar_keeps_what_came_before_and_quarantines_the_rest(tmp_path):
    good = tar_of([(f"{WNID}_1.JPEG", jpeg()), (f"{WNID}_2.JPEG", jpeg()), (f"{WNID}_3.JPEG", jpeg())])
    second = 512 + -(-len(jpeg()) // 512) * 512  # header offset of the second member
    damaged = good[:second] + b"\x13" * 512 + good[second + 512 :]
    got = probe_tar(damaged, tmp_path)
    assert got[f"{WNID}_1.JPEG"] == (None, None) and f"{WNID}_3.JPEG" not in got
    assert got["<tar>"][0] == imageio.DAMAGED_ARCHIVE and "1 members read before it" in got["<tar>"][1]

    cut = good[: second + 700]  # the archive ends inside the second member's data
    got = probe_tar(cut, tmp_path)
    assert got[f"{WNID}_1.JPEG"] == (None, None) and got["<tar>"][0] == imageio.TRUNCATED_ARCHIVE


def test_read_image_bytes_opens_nested_tar_members_and_parquet_rows(tmp_path):
    a, b = jpeg((1, 2, 3)), jpeg((200, 100, 0))
    outer = tmp_path / "train.tar"
    outer.write_bytes(tar_of([(f"{WNID}.tar", tar_of([(f"{WNID}_1.JPEG", a), (f"{WNID}_2.JPEG", b)]))]))
    assert imageio.read_image_bytes(f"{outer}::{WNID}.tar::{WNID}_2.JPEG") == b
    assert imageio.read_image_bytes(f"{outer}::{WNID}.tar::{WNID}_1.JPEG") == a
    with pytest.raises(FileNotFoundError, match="no member"):
        imageio.read_image_bytes(f"{outer}::{WNID}.tar::missing.JPEG")

    shard = tmp_path / "train-00000-of-00001.parquet"
    image = pa.array([{"bytes": x, "path": f"{i}.JPEG"} for i, x in enumerate([a, b, a])])
    pq.write_table(pa.table({"image": image, "label": [0, 1, 0]}), shard, row_group_size=2)
    assert imageio.read_image_bytes(f"{shard}::1") == b and imageio.read_image_bytes(f"{shard}::2") == a
    with pytest.raises(FileNotFoundError):
        imageio.read_image_bytes(f"{shard}::3")


def test_parquet_rows_map_labels_through_the_catalog(tmp_path):
    shard = tmp_path / "train-00000-of-00001.parquet"
    image = pa.array([{"bytes": jpeg(), "path": "n01443537_7.JPEG"}, {"bytes": jpeg(), "path": None}])
    pq.write_table(pa.table({"image": image, "label": [1, 1000]}), shard)
    wnids = tuple(f"w{i}" for i in range(1000))
    (good, bad), _ = imageio.probe_parquet_group(str(shard), 0, 0, "train", wnids, 1.0)
    assert good[:4] == (f"{shard}::0", "n01443537_7", "w1", "train") and good[11] is None
    assert bad[11] == imageio.BAD_LABEL


def write_meta(path, pairs):
    synsets = np.zeros((len(pairs), 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    for k, (i, w) in enumerate(pairs):
        synsets[k, 0] = (i, w)
    scipy.io.savemat(path, {"synsets": synsets})


def test_devkit_ground_truth_with_meta_mat_and_as_a_tarball(tmp_path):
    write_meta(tmp_path / "meta.mat", [(1, OTHER), (2, WNID), (1001, "n00001740")])
    truth = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("2\n1\n2\n")
    expected = {
        "ILSVRC2012_val_00000001": WNID,
        "ILSVRC2012_val_00000002": OTHER,
        "ILSVRC2012_val_00000003": WNID,
    }
    assert read_devkit_labels(truth) == expected

    devkit = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(devkit, "w:gz") as tf:
        tf.add(truth, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt")
        tf.add(tmp_path / "meta.mat", "ILSVRC2012_devkit_t12/data/meta.mat")
    assert read_devkit_labels(devkit) == expected

    truth.write_text("2\n1001\n")
    with pytest.raises(InputError, match="ground_truth.txt:2: '1001' is not the ILSVRC2012_ID"):
        read_devkit_labels(truth)


def test_archive_layout_errors_name_the_path(tmp_path):
    flat = tmp_path / "flat" / "ILSVRC2012_img_val.tar"
    flat.parent.mkdir()
    flat.write_bytes(tar_of([("ILSVRC2012_val_00000001.JPEG", jpeg())]))
    with pytest.raises(InputError, match="val images need labels"):
        locate_source(str(flat))
    with pytest.raises(InputError, match=r"a flat tar of images \(val\), not --split train"):
        locate_source(str(flat), split="train")

    train = tmp_path / "ILSVRC2012_img_train.tar"
    train.write_bytes(tar_of([(f"{WNID}.tar", tar_of([])), ("cats.tar", tar_of([]))]))
    with pytest.raises(InputError, match=r"train.tar::cats.tar: not an ImageNet-1k class tar"):
        scan_archives(locate_source(str(train)))

    packed = tmp_path / "packed.tar"
    packed.write_bytes(gzip.compress(train.read_bytes()))
    with pytest.raises(InputError, match="gzip-compressed"):
        locate_source(str(packed))

    shard = tmp_path / "shards" / "mystery.parquet"
    shard.parent.mkdir()
    pq.write_table(pa.table({"image": pa.array([{"bytes": jpeg(), "path": "a"}]), "label": [0]}), shard)
    with pytest.raises(InputError, match="cannot tell its split"):
        locate_source(str(shard.parent))
    pq.write_table(pa.table({"img": [b"x"], "label": [0]}), shard)
    with pytest.raises(InputError, match="expected the Hugging Face imagenet-1k columns"):
        locate_source(str(shard.parent), split="train")


def test_outer_tar_strays_and_links_are_quarantined_at_scan(tmp_path):
    train = tmp_path / "ILSVRC2012_img_train.tar"
    train.write_bytes(
        tar_of(
            [
                (f"{WNID}.tar", tar_of([(f"{WNID}_1.JPEG", jpeg())])),
                ("readme.txt", b"hi"),
                link("x.tar", "/etc"),
            ]
        )
    )
    (archive,) = scan_archives(locate_source(str(train)))
    assert archive.kind == "class-tars" and [e[0] for e in archive.entries] == [f"{WNID}.tar"]
    assert sorted(r[11] for r in archive.rejects) == [imageio.OUTSIDE, imageio.UNSAFE_MEMBER]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_member_walker_agrees_with_tarfile(tmp_path, fmt):
    long = "x" * 150 + ".JPEG" if fmt != tarfile.USTAR_FORMAT else "short.JPEG"
    names = ["a.JPEG", "d" * 60 + "/" + "e" * 80 + ".JPEG", long, "ünï/çødé.JPEG"]
    path = tmp_path / "t.tar"
    path.write_bytes(
        tar_of([(name, jpeg()[: 100 + i]) for i, name in enumerate(names)] + [link("l", "/x")], fmt)
    )
    with open(path, "rb") as fh:
        mine = [(m.name, m.offset, m.size, m.mtime) for m in imageio.iter_members(fh, 0, path.stat().st_size)]
    with tarfile.open(path) as tf:
        theirs = [(m.name, m.offset_data, m.size, float(m.mtime)) for m in tf]
    assert mine == theirs
