"""The bundled demo sample: a small ImageNet-layout tree drawn with PIL in about a second.

Demo scaffolding only; production code never imports it. Tests use it too.

    train/<wnid>/<wnid>_<n>.JPEG
    val/ILSVRC2012_val_<8 digits>.JPEG      (flat; labels in LOC_val_solution.csv at the root)
    LOC_val_solution.csv                     (ImageId,PredictionString: "wnid x0 y0 x1 y1")

Some images carry text in their metadata (EXIF ImageDescription, a JPEG COM comment) for the
embedded-text harvester, and a few files are broken on purpose so the demo shows the quarantine.
"""

from __future__ import annotations

import csv
import io
import random
import shutil
import tarfile
from pathlib import Path

from PIL import Image, ImageDraw

# (wnid, short name used in the embedded texts): real ImageNet-1k classes, animals, objects and food.
SAMPLE_CLASS_NAMES = {
    "n01440764": "tench",
    "n01443537": "goldfish",
    "n01484850": "great white shark",
    "n01514668": "cock",
    "n01518878": "ostrich",
    "n01882714": "koala",
    "n02099601": "golden retriever",
    "n02123045": "tabby cat",
    "n02129604": "tiger",
    "n02165456": "ladybug",
    "n02391049": "zebra",
    "n02690373": "airliner",
    "n02980441": "castle",
    "n03642806": "laptop",
    "n04398044": "teapot",
    "n04507155": "umbrella",
    "n07745940": "strawberry",
    "n07753592": "banana",
    "n07873807": "pizza",
    "n09472597": "volcano",
}
SAMPLE_CLASSES: tuple[str, ...] = tuple(SAMPLE_CLASS_NAMES)

_EXIF_IMAGE_DESCRIPTION = 0x010E
_SHAPES = ("ellipse", "rectangle", "triangle")
_PLACES = ("in the garden", "on a table", "at the zoo", "outdoors in daylight", "close up", "on holiday")


def _class_palette(index: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A background and a foreground colour per class, so classes look different."""
    rng = random.Random(1000 + index)
    bg = tuple(rng.randrange(40, 216) for _ in range(3))
    fg = tuple(255 - c for c in bg)
    return bg, fg


def _draw(rng: random.Random, class_index: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One small picture: a class-coloured shape on a background; returns it and the shape's box."""
    width, height = rng.randrange(64, 161), rng.randrange(48, 129)
    bg, fg = _class_palette(class_index)
    jitter = tuple(max(0, min(255, c + rng.randrange(-30, 31))) for c in bg)
    im = Image.new("RGB", (width, height), jitter)
    draw = ImageDraw.Draw(im)
    x0, y0 = rng.randrange(0, width // 3), rng.randrange(0, height // 3)
    x1, y1 = rng.randrange(2 * width // 3, width), rng.randrange(2 * height // 3, height)
    shape = _SHAPES[(class_index + rng.randrange(2)) % len(_SHAPES)]
    if shape == "ellipse":
        draw.ellipse((x0, y0, x1, y1), fill=fg)
    elif shape == "rectangle":
        draw.rectangle((x0, y0, x1, y1), fill=fg)
    else:
        draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=fg)
    for _ in range(rng.randrange(0, 4)):
        cx, cy, r = rng.randrange(width), rng.randrange(height), rng.randrange(2, 8)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    return (im.convert("L") if rng.random() < 0.05 else im), (x0, y0, x1, y1)


def _jpeg(im: Image.Image, description: str | None = None, comment: str | None = None) -> bytes:
    buf = io.BytesIO()
    options: dict = {"quality": 85}
    if description:
        exif = Image.Exif()
        exif[_EXIF_IMAGE_DESCRIPTION] = description
        options["exif"] = exif
    if comment:
        options["comment"] = comment.encode()
    im.save(buf, "JPEG", **options)
    return buf.getvalue()


def bomb_jpeg(data: bytes, side: int = 20_000) -> bytes:
    """A copy of a JPEG whose header claims `side` x `side` pixels (over PIL's decompression-bomb limit)."""
    at = data.find(b"\xff\xc0")
    if at < 0:
        raise ValueError("no baseline SOF0 marker in this JPEG")
    size = side.to_bytes(2, "big")
    # SOF0: marker(2) length(2) precision(1) height(2) width(2)
    return data[: at + 5] + size + size + data[at + 9 :]


def _texts(rng: random.Random, name: str, n: int) -> tuple[str | None, str | None]:
    """EXIF description and JPEG comment for some images (None where the image has none)."""
    if n % 3 == 0:
        return f"A {name} {rng.choice(_PLACES)}", None
    if n % 3 == 1:
        return None, f"photo of a {name}, taken {rng.choice(_PLACES)}"
    return None, None


def generate_sample(root: Path, train_per_class: int = 8, val_per_class: int = 2, seed: int = 0) -> dict:
    """Write the demo tree under `root` and return what an ingest of it should find.

    Returns `root`, `classes`, `train_images`, `val_images`, `images` (expected in `images`),
    `quarantined` (expected in `quarantine`), `broken` ({path: expected reason}) and
    `embedded` ({image_id: [texts written into the file's metadata]}).
    """
    root = Path(root)
    rng = random.Random(seed)
    train, val = root / "train", root / "val"
    val.mkdir(parents=True, exist_ok=True)
    embedded: dict[str, list[str]] = {}
    first_jpeg = b""
    for index, wnid in enumerate(SAMPLE_CLASSES):
        name = SAMPLE_CLASS_NAMES[wnid]
        folder = train / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(train_per_class):
            image_id = f"{wnid}_{n + 1}"
            im, _ = _draw(rng, index)
            description, comment = _texts(rng, name, n) if index % 2 == 0 else (None, None)
            data = _jpeg(im, description, comment)
            first_jpeg = first_jpeg or data
            (folder / f"{image_id}.JPEG").write_bytes(data)
            texts = [t for t in (description, comment) if t]
            if texts:
                embedded[image_id] = texts

    solution = []
    count = 0
    for index, wnid in enumerate(SAMPLE_CLASSES):
        for _ in range(val_per_class):
            count += 1
            image_id = f"ILSVRC2012_val_{count:08d}"
            im, box = _draw(rng, index)
            description = f"{SAMPLE_CLASS_NAMES[wnid]} seen {rng.choice(_PLACES)}" if count % 4 == 0 else None
            (val / f"{image_id}.JPEG").write_bytes(_jpeg(im, description))
            if description:
                embedded[image_id] = [description]
            solution.append((image_id, f"{wnid} {box[0]} {box[1]} {box[2]} {box[3]}"))
    with open(root / "LOC_val_solution.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ImageId", "PredictionString"])
        writer.writerows(solution)

    # Broken on purpose: each one lands in `quarantine` with this reason.
    broken_dir = train / SAMPLE_CLASSES[0]
    broken = {
        broken_dir / f"{SAMPLE_CLASSES[0]}_90001.JPEG": ("zero-byte", b""),
        broken_dir / f"{SAMPLE_CLASSES[0]}_90002.JPEG": ("truncated", first_jpeg[: len(first_jpeg) // 2]),
        broken_dir / f"{SAMPLE_CLASSES[0]}_90003.JPEG": (
            "not-an-image",
            b"this is a text file, not a JPEG\n",
        ),
        broken_dir / f"{SAMPLE_CLASSES[0]}_90004.JPEG": ("decompression-bomb", bomb_jpeg(first_jpeg)),
        train / "stray_00001.JPEG": ("outside-class-folder", first_jpeg),
    }
    for path, (_, data) in broken.items():
        path.write_bytes(data)

    train_images = train_per_class * len(SAMPLE_CLASSES)
    val_images = val_per_class * len(SAMPLE_CLASSES)
    return {
        "root": str(root),
        "classes": list(SAMPLE_CLASSES),
        "train_images": train_images,
        "val_images": val_images,
        "images": train_images + val_images,
        "quarantined": len(broken),
        "broken": {str(path): reason for path, (reason, _) in broken.items()},
        "embedded": embedded,
    }


def _tar_bytes(files: list[tuple[str, Path]]) -> bytes:
    """An uncompressed tar of (member name, file) pairs, in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, path in files:
            tf.add(path, arcname=name, recursive=False)
    return buf.getvalue()


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes, mtime: float = 0.0) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(mtime)
    tf.addfile(info, io.BytesIO(data))


def write_ilsvrc_tars(tree: Path, out: Path) -> dict:
    """The sample tree as the original archives: ILSVRC2012_img_train.tar (one <wnid>.tar per class,
    and any stray file of train/ as a member of the outer tar), ILSVRC2012_img_val.tar (flat), and
    LOC_val_solution.csv beside them. Returns their paths."""
    tree, out = Path(tree), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_tar, val_tar = out / "ILSVRC2012_img_train.tar", out / "ILSVRC2012_img_val.tar"
    with tarfile.open(train_tar, "w", format=tarfile.USTAR_FORMAT) as tf:
        for entry in sorted((tree / "train").iterdir()):
            if entry.is_dir():
                files = [(f.name, f) for f in sorted(entry.iterdir())]
                _add_bytes(tf, f"{entry.name}.tar", _tar_bytes(files), entry.stat().st_mtime)
            else:
                tf.add(entry, arcname=entry.name)
    with tarfile.open(val_tar, "w", format=tarfile.USTAR_FORMAT) as tf:
        for f in sorted((tree / "val").iterdir()):
            tf.add(f, arcname=f.name)
    labels = out / "LOC_val_solution.csv"
    shutil.copyfile(tree / "LOC_val_solution.csv", labels)
    return {"train": str(train_tar), "val": str(val_tar), "labels": str(labels)}


def write_parquet_shards(tree: Path, out: Path, shards: int = 2, rows_per_group: int = 16) -> dict:
    """The sample tree's class-folder images as Hugging Face imagenet-1k parquet shards.

    `train-0000k-of-0000n.parquet` and `validation-00000-of-00001.parquet` with `image` (struct of
    bytes and path) and `label` (class index in the standard order), plus a `test-...` shard with
    label -1 as in the published dataset. Returns the folder and the shard paths.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from warehouse.catalog import read_classes

    index = dict(zip(read_classes()["wnid"], read_classes()["class_index"], strict=True))
    tree, out = Path(tree), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = [
        (f, index[d.name])
        for d in sorted((tree / "train").iterdir())
        if d.is_dir()
        for f in sorted(d.iterdir())
    ]
    solution = {}
    if (tree / "LOC_val_solution.csv").is_file():
        with open(tree / "LOC_val_solution.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                solution[row["ImageId"]] = index[row["PredictionString"].split()[0]]
    val = [(f, solution[f.stem]) for f in sorted((tree / "val").glob("*")) if f.stem in solution]

    def write(path: Path, rows: list[tuple[Path, int]]) -> str:
        image = pa.array(
            [{"bytes": f.read_bytes(), "path": f.name} for f, _ in rows],
            type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        )
        table = pa.table({"image": image, "label": pa.array([label for _, label in rows], pa.int64())})
        pq.write_table(table, path, row_group_size=rows_per_group)
        return str(path)

    paths = []
    per = -(-len(train) // shards)
    for k in range(shards):
        paths.append(write(out / f"train-{k:05d}-of-{shards:05d}.parquet", train[k * per : (k + 1) * per]))
    if val:
        paths.append(write(out / "validation-00000-of-00001.parquet", val))
        paths.append(write(out / "test-00000-of-00001.parquet", [(f, -1) for f, _ in val[:2]]))
    return {"root": str(out), "shards": paths, "images": len(train) + len(val)}


if __name__ == "__main__":
    import json
    import sys

    summary = generate_sample(Path(sys.argv[1] if len(sys.argv) > 1 else "imtext-sample"))
    summary.pop("embedded")
    print(json.dumps(summary, indent=1))
