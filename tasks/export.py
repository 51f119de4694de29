"""Write the curated dataset as Parquet, a Hugging Face `DatasetDict` folder or WebDataset shards.

One sample per image: its bytes, its label (the ImageNet-1k class index), wnid and class name, the
image texts the latest curation kept (best first), the class descriptions, and one caption (the best
kept text, else "a photo of a <class name>", said in `caption_source`). Everything is read inside one
read transaction, so an export is one warehouse snapshot, named in `manifest.json` and the dataset
card `README.md` with the curation's scorer, models and policy: enough to rebuild the dataset exactly.

Splits are `train` and `validation` (the warehouse's `val`, named as Hugging Face names it); within a
split the samples are in a shuffled order fixed by a recorded seed, the same order in every format.

The export is written into a temporary folder beside `--out` and swapped into place with renames at
the end, so a failed export leaves the previous one untouched. Only a folder an earlier imtext export
wrote (its manifest says so and it holds nothing the manifest does not list) is ever replaced.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import json
import math
import re
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.errors import InputError

FORMATS = ("parquet", "webdataset", "hf")
MANIFEST = "manifest.json"
CARD = "README.md"
GENERATOR = "imtext"
MANIFEST_VERSION = 2
PARQUET_DATA = "data"
# Warehouse split -> export split. "validation" is the name `datasets` and the Hub use.
SPLIT_NAMES = {"train": "train", "val": "validation"}
DEFAULT_SHARD_SIZE = 1000
DEFAULT_SHARD_MAX_MB = 500.0
DEFAULT_SEED = 0
# Row groups of at most 100 images (and 100 MB, the limit `datasets` itself writes with), so a reader
# that wants one image reads a few MB, not a whole file.
ROW_GROUP_ROWS = 100
ROW_GROUP_BYTES = 100 * 2**20
TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK

TEXT_TYPE = pa.struct(
    [
        ("text_id", pa.string()),
        ("source", pa.string()),
        ("field", pa.string()),
        ("text", pa.string()),
        ("p_true", pa.float64()),
    ]
)
CLASS_TEXT_TYPE = pa.struct([("source", pa.string()), ("text", pa.string()), ("url", pa.string())])
SAMPLE_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("label", pa.int64()),
        ("wnid", pa.string()),
        ("class_name", pa.string()),
        ("split", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("caption", pa.string()),
        ("caption_source", pa.string()),
        ("texts", pa.list_(TEXT_TYPE)),
        ("class_texts", pa.list_(CLASS_TEXT_TYPE)),
    ]
)
FEATURES = {
    "image_id": "the image's file stem in ImageNet, e.g. `n01440764_10026`",
    "image": "the image, JPEG bytes (a few non-JPEG ImageNet files re-encoded)",
    "label": "ImageNet-1k class index (0..999, the standard order)",
    "wnid": "WordNet id of the class",
    "class_name": "the class's first WordNet lemma",
    "split": "`train` or `validation`",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "caption": "the best kept image text, else `a photo of a <class name>`",
    "caption_source": "`image-text` or `class-name`: where the caption came from",
    "texts": "the kept image texts, best first: text_id, source, field, text, p_true",
    "class_texts": "descriptions of the class: source, text, url",
}
# Where each kind of text comes from and under which terms it may be used.
TEXT_LICENCES = {
    "imagenet-captions": (
        "Flickr titles, descriptions and tags of the ImageNet photos, as collected by ImageNet-Captions "
        "(Fang et al., 2022)",
        "written by the photos' Flickr owners; each photo's own terms apply; research use",
    ),
    "flickr": (
        "Flickr API (`flickr.photos.getInfo`): title, description and tags of the photo",
        "written by the photo's owner; Flickr API Terms of Use and the photo's own licence apply",
    ),
    "embedded": (
        "metadata embedded in the ImageNet image files (EXIF/IPTC/XMP)",
        "ImageNet terms of access (non-commercial research and education)",
    ),
    "wordnet": ("WordNet 3.0 glosses and lemmas (Princeton University)", "WordNet 3.0 licence (permissive)"),
    "wikipedia": (
        "Wikipedia page summaries (REST API), each with its page URL",
        "CC BY-SA 4.0; attribute with the page URL in `url`",
    ),
}
CITATION = """@article{dashenkov2025extending,
  title   = {Extending the ImageNet dataset for multimodal text and image learning},
  author  = {Dashenkov, Dmytro and Smelyakov, Kirill},
  journal = {Innovative Technologies and Scientific Solutions for Industries},
  number  = {1},
  year    = {2025},
  doi     = {10.30837/2522-9818.2025.1.020}
}"""


@dataclass
class CuratedData:
    """Everything an export writes, read at one snapshot."""

    snapshot: int
    curation: dict
    images: pl.DataFrame
    texts: pl.DataFrame
    class_texts: pl.DataFrame
    classes: pl.DataFrame = field(default_factory=pl.DataFrame)
    scorers: list[dict] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def wnids(self) -> list[str]:
        return self.images["wnid"].unique(maintain_order=True).to_list()

    @property
    def label_names(self) -> list[str]:
        """The class names in class_index order; a name two classes share gets its wnid appended."""
        names = self.classes["name"].to_list()
        shared = {n for n in names if names.count(n) > 1}
        return [
            f"{n} ({w})" if n in shared else n
            for n, w in zip(names, self.classes["wnid"].to_list(), strict=True)
        ]


@dataclass
class ExportResult:
    """What an export wrote."""

    format: str
    out: Path
    images: int = 0
    texts: int = 0
    classes: int = 0
    files: list[dict] = field(default_factory=list)
    splits: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)


# -- reading ----------------------------------------------------------------------------------------


def latest_curation(con) -> dict | None:
    """The latest finished curation run (with its scorer ids), or None when none has finished."""
    from warehouse.db import load_query

    frame = con.execute(load_query("curate_export_curation")).pl()
    return None if frame.is_empty() else frame.row(0, named=True)


def _no_curation() -> InputError:
    return InputError("no curation has finished yet: run `imtext curate` before `imtext export`")


def read_curated(con, only_with_text: bool = False) -> CuratedData:
    """Images, kept texts, class texts, classes and scorers of the latest curation, at one snapshot."""
    from warehouse.db import ALIAS, load_query

    con.execute("BEGIN TRANSACTION")
    try:
        snapshot = con.execute(f"SELECT id FROM {ALIAS}.current_snapshot()").fetchone()[0]
        run = latest_curation(con)
        if run is None:
            raise _no_curation()
        images = con.execute(load_query("curate_export_images")).pl()
        texts = con.execute(load_query("curate_export_texts")).pl()
        class_texts = con.execute(load_query("curate_export_class_texts")).pl()
        classes = con.execute(load_query("export_classes")).pl()
        scorers = con.execute(load_query("export_scorers")).pl().to_dicts()
    finally:
        con.execute("COMMIT")
    if only_with_text:
        images = images.filter(pl.col("image_id").is_in(texts["image_id"].implode()))
    images = images.with_columns(pl.col("split").replace(SPLIT_NAMES))
    curation_info = {
        "run_id": run["run_id"],
        "scorer": run["scorer"],
        "scorer_reason": run["scorer_reason"],
        "training_run": run["training_run"],
        "policy": _json(run["policy"]),
        "model_ids": _json(run["model_ids"]) or [],
        "snapshot": run["snapshot"],
        "finished_at": str(run["finished_at"]),
        "texts": run.get("texts"),
        "kept": run.get("kept"),
        "dropped": run.get("dropped"),
        "metrics": _json(run.get("metrics")),
    }
    for scorer in scorers:
        for key in ("metrics", "members"):
            scorer[key] = _json(scorer.get(key))
    return CuratedData(snapshot, curation_info, images, texts, class_texts, classes, scorers)


def _json(value):
    if not value:
        return {} if value is None or value == "" else value
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def ordered_splits(data: CuratedData, seed: int) -> dict[str, pl.DataFrame]:
    """The images of each split, with their kept texts (best first), in a shuffled order fixed by `seed`.

    Train comes first, then validation. The rows stay in Arrow until a window of them is written, so
    a million images with their texts cost what their columns cost, not a million Python dicts.
    """
    kept = (
        data.texts.sort(["image_id", "p_true", "text_id"], descending=[False, True, False])
        .group_by("image_id", maintain_order=True)
        .agg(pl.struct("text_id", "source", "field", "text", "p_true").alias("texts"))
    )
    images = data.images.join(kept, on="image_id", how="left")
    out: dict[str, pl.DataFrame] = {}
    rank = {name: i for i, name in enumerate(SPLIT_NAMES.values())}
    for split in sorted(images["split"].unique().to_list(), key=lambda s: (rank.get(s, len(rank)), s)):
        rows = images.filter(pl.col("split") == split).sort("image_id")
        out[split] = rows[np.random.default_rng(seed).permutation(rows.height)]
    return out


def _jpeg_bytes(data: bytes) -> bytes:
    """JPEG bytes as they are; other formats (ImageNet holds a few PNG and CMYK files) re-encoded."""
    if data[:3] == b"\xff\xd8\xff":
        return data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=95)
        return buf.getvalue()


def _reader() -> Callable[[str], bytes]:
    try:
        from tasks.imageio import read_image_bytes
    except ImportError:  # pragma: no cover - the ingestion module ships with the platform
        return lambda p: Path(p).read_bytes()
    return read_image_bytes


def samples(data: CuratedData, rows: pl.DataFrame, *, threads: int = 8) -> Iterator[dict]:
    """The samples of `rows` (from `ordered_splits`, in that order), image bytes read in parallel threads."""
    read = _reader()
    descriptions = _descriptions_by_class(data)

    def fetch(row: dict) -> bytes | None:
        try:
            return _jpeg_bytes(read(row["path"]))
        except (OSError, ValueError) as exc:  # moved, deleted or damaged since ingestion: leave it out
            data.unreadable.append(f"{row['image_id']}: {exc}")
            return None

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, rows.height, 4 * threads):  # a bounded window of images in memory
            window = rows.slice(start, 4 * threads).to_dicts()
            for row, raw in zip(window, pool.map(fetch, window), strict=True):
                if raw is None:
                    continue
                kept = row["texts"] or []
                if kept:
                    caption, caption_source = kept[0]["text"], "image-text"
                else:
                    caption, caption_source = f"a photo of a {row['class_name']}", "class-name"
                yield {
                    "image_id": row["image_id"],
                    "image": {"bytes": raw, "path": f"{row['image_id']}.jpg"},
                    "label": row["class_index"],
                    "wnid": row["wnid"],
                    "class_name": row["class_name"],
                    "split": row["split"],
                    "width": row["width"],
                    "height": row["height"],
                    "caption": caption,
                    "caption_source": caption_source,
                    "texts": kept,
                    "class_texts": descriptions.get(row["wnid"], []),
                }


def _descriptions_by_class(data: CuratedData) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in data.class_texts.select("wnid", "source", "text", "url").iter_rows(named=True):
        out.setdefault(row["wnid"], []).append({k: row[k] for k in ("source", "text", "url")})
    return out


def _sample_size(sample: dict) -> int:
    """Bytes a sample adds to a shard, roughly (exact for tar members, before compression for parquet)."""
    texts = sum(len(t["text"]) for t in sample["texts"]) + sum(len(t["text"]) for t in sample["class_texts"])
    return len(sample["image"]["bytes"]) + texts + 256


# -- shards -------------------------------------------------------------------------------------------


class _Shards:
    """Samples into numbered shard files, a new one when the next sample would pass the count or size bound."""

    def __init__(self, open_shard: Callable[[int], _Shard], max_count: int, max_bytes: int):
        self.open_shard, self.max_count, self.max_bytes = open_shard, max_count, max_bytes
        self.current: _Shard | None = None
        self.closed: list[_Shard] = []

    def add(self, sample: dict) -> None:
        if self.current is not None and not self.current.fits(sample, self.max_count, self.max_bytes):
            self._close()
        if self.current is None:
            self.current = self.open_shard(len(self.closed))
        self.current.add(sample)

    def _close(self) -> None:
        self.current.close()
        self.closed.append(self.current)
        self.current = None

    def close(self) -> list[_Shard]:
        if self.current is not None:
            self._close()
        return self.closed


class _HashedFile:
    """A file opened for writing that hashes what goes through it, so no shard is read back."""

    def __init__(self, path: Path):
        self.fh = open(path, "wb")  # closed by the shard that owns it
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.fh.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()

    @property
    def closed(self) -> bool:
        return self.fh.closed


class _Shard:
    path: Path
    file: _HashedFile
    count: int = 0
    texts: int = 0

    def fits(self, sample: dict, max_count: int, max_bytes: int) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def add(self, sample: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _tar_member_bytes(size: int) -> int:
    return TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def wds_members(sample: dict) -> list[tuple[str, bytes]]:
    """The tar members of one WebDataset sample: `<key>.jpg`, `.cls`, `.txt` and `.json`."""
    key = _KEY_UNSAFE.sub("_", sample["image_id"])  # a dot would end the key for webdataset readers
    meta = {k: v for k, v in sample.items() if k != "image"}
    return [
        (f"{key}.jpg", sample["image"]["bytes"]),
        (f"{key}.cls", str(sample["label"]).encode()),
        (f"{key}.txt", sample["caption"].encode()),
        (f"{key}.json", json.dumps(meta, ensure_ascii=False).encode()),
    ]


class _TarShard(_Shard):
    """One WebDataset tar; its size is known exactly as it grows (ustar headers, 10 KiB records)."""

    def __init__(self, path: Path):
        self.path, self.count, self.texts, self.raw = path, 0, 0, 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = _HashedFile(path)
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.USTAR_FORMAT)
        self._pending: list[tuple[str, bytes]] | None = None

    @staticmethod
    def _final(raw: int) -> int:
        return -(-(raw + 2 * TAR_BLOCK) // TAR_RECORD) * TAR_RECORD

    def fits(self, sample, max_count, max_bytes) -> bool:
        self._pending = wds_members(sample)
        grown = self.raw + sum(_tar_member_bytes(len(p)) for _, p in self._pending)
        return self.count < max_count and self._final(grown) <= max_bytes

    def add(self, sample) -> None:
        members = self._pending if self._pending is not None else wds_members(sample)
        self._pending = None
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(payload), 0, 0o644  # reproducible shards
            self.tar.addfile(info, io.BytesIO(payload))
            self.raw += _tar_member_bytes(len(payload))
        self.count += 1
        self.texts += len(sample["texts"])

    def close(self) -> None:
        self.tar.close()
        self.file.close()


IMAGE_COLUMN = "image.bytes"


@functools.cache
def _parquet_column_options(schema: pa.Schema) -> tuple[dict[str, str], list[str]]:
    """zstd and dictionaries for every column but the image bytes: JPEG does not compress, and
    leaving it alone writes about twice as fast."""
    sink = io.BytesIO()
    pq.write_table(schema.empty_table(), sink)
    leaves = pq.ParquetFile(io.BytesIO(sink.getvalue())).schema
    paths = [leaves.column(i).path for i in range(len(leaves))]
    compression = {p: ("NONE" if p == IMAGE_COLUMN else "ZSTD") for p in paths}
    return compression, [p for p in paths if p != IMAGE_COLUMN]


class _ParquetShard(_Shard):
    """One Parquet file written in row groups of at most ROW_GROUP_ROWS images / ROW_GROUP_BYTES."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema, self.count, self.texts, self.bytes = path, schema, 0, 0, 0
        path.parent.mkdir(parents=True, exist_ok=True)
        compression, dictionary = _parquet_column_options(schema)
        self.file = _HashedFile(path)
        self.writer = pq.ParquetWriter(self.file, schema, compression=compression, use_dictionary=dictionary)
        self.group: list[dict] = []
        self.group_bytes = 0

    def fits(self, sample, max_count, max_bytes) -> bool:
        return self.count < max_count and self.bytes + _sample_size(sample) <= max_bytes

    def add(self, sample) -> None:
        size = _sample_size(sample)
        if self.group and (len(self.group) >= ROW_GROUP_ROWS or self.group_bytes + size > ROW_GROUP_BYTES):
            self._flush()
        self.group.append(sample)
        self.group_bytes += size
        self.bytes += size
        self.count += 1
        self.texts += len(sample["texts"])

    def _flush(self) -> None:
        self.writer.write_table(pa.Table.from_pylist(self.group, schema=self.schema))
        self.group, self.group_bytes = [], 0

    def close(self) -> None:
        if self.group or self.count == 0:
            self._flush()
        self.writer.close()
        self.file.close()


# -- formats ------------------------------------------------------------------------------------------


@dataclass
class Options:
    """How an export is cut: shard bounds, seed, filter."""

    shard_size: int = DEFAULT_SHARD_SIZE
    shard_max_bytes: int = int(DEFAULT_SHARD_MAX_MB * 2**20)
    seed: int = DEFAULT_SEED
    only_with_text: bool = False


def hf_features(label_names: list[str]):
    """The `datasets` features of a sample: `image` an Image, `label` a ClassLabel of the 1000 classes."""
    from datasets import ClassLabel, Features, Image, List, Value

    return Features(
        {
            "image_id": Value("string"),
            "image": Image(),
            "label": ClassLabel(names=label_names),
            "wnid": Value("string"),
            "class_name": Value("string"),
            "split": Value("string"),
            "width": Value("int32"),
            "height": Value("int32"),
            "caption": Value("string"),
            "caption_source": Value("string"),
            "texts": List(
                {
                    "text_id": Value("string"),
                    "source": Value("string"),
                    "field": Value("string"),
                    "text": Value("string"),
                    "p_true": Value("float64"),
                }
            ),
            "class_texts": List({"source": Value("string"), "text": Value("string"), "url": Value("string")}),
        }
    )


def _parquet_schema(data: CuratedData) -> pa.Schema:
    """The sample schema with the metadata `datasets` reads its features from (Image, ClassLabel)."""
    features = hf_features(data.label_names)
    return SAMPLE_SCHEMA.with_metadata(
        {b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode()}
    )


def _write_split_shards(data, rows, open_shard, options: Options, result: ExportResult, on_sample):
    shards = _Shards(open_shard, options.shard_size, options.shard_max_bytes)
    for sample in samples(data, rows):
        shards.add(sample)
        result.images += 1
        result.texts += len(sample["texts"])
        if on_sample is not None:
            on_sample(1)
    return shards.close()


def _record_split(
    result: ExportResult, split: str, shards: list[_Shard], root: Path, files: list[Path]
) -> None:
    for shard, path in zip(shards, files, strict=True):
        entry = {"path": path.relative_to(root).as_posix(), "bytes": shard.file.size}
        entry["sha256"] = shard.file.sha256.hexdigest()
        result.files.append({**entry, "split": split, "samples": shard.count})
    result.splits[split] = {
        "images": sum(s.count for s in shards),
        "texts": sum(s.texts for s in shards),
        "files": len(shards),
    }


def write_parquet(data: CuratedData, root: Path, options: Options, on_sample=None) -> ExportResult:
    """Parquet files `data/{split}-NNNNN-of-MMMMM.parquet`, bounded by count and size.

    `datasets.load_dataset("parquet", data_dir=out)` loads them as a DatasetDict with `train` and
    `validation`; `pl.read_parquet(out / "data")` or `pyarrow.dataset` read them as one table.
    """
    result = ExportResult("parquet", root)
    schema = _parquet_schema(data)
    folder = root / PARQUET_DATA
    for split, rows in ordered_splits(data, options.seed).items():
        shards = _write_split_shards(
            data,
            rows,
            lambda n, split=split: _ParquetShard(folder / f"{split}-{n:05d}.parquet", schema),
            options,
            result,
            on_sample,
        )
        final = []
        for n, shard in enumerate(shards):  # the total is known only now: name them "-of-"
            target = folder / f"{split}-{n:05d}-of-{len(shards):05d}.parquet"
            shard.path.rename(target)
            final.append(target)
        _record_split(result, split, shards, root, final)
    result.classes = len(data.wnids)
    return result


def write_webdataset(data: CuratedData, root: Path, options: Options, on_sample=None) -> ExportResult:
    """Tar shards `{split}/shard-NNNNNN.tar` of `<key>.jpg`, `.cls`, `.txt` and `.json` per sample."""
    result = ExportResult("webdataset", root)
    for split, rows in ordered_splits(data, options.seed).items():
        shards = _write_split_shards(
            data,
            rows,
            lambda n, split=split: _TarShard(root / split / f"shard-{n:06d}.tar"),
            options,
            result,
            on_sample,
        )
        _record_split(result, split, shards, root, [s.path for s in shards])
        if shards:
            result.splits[split]["pattern"] = f"{split}/shard-{{000000..{len(shards) - 1:06d}}}.tar"
    result.classes = len(data.wnids)
    return result


def write_hf(data: CuratedData, root: Path, options: Options, on_sample=None) -> ExportResult:
    """A `datasets.load_from_disk` folder holding a DatasetDict (`train`, `validation`)."""
    import datasets

    work = Path(tempfile.mkdtemp(prefix=".hf-work-", dir=root.parent))
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # the flow reports progress itself
    try:
        parquet = write_parquet(data, work / "parquet", options, on_sample)
        features = hf_features(data.label_names)
        splits, num_shards = {}, {}
        for split in parquet.splits:
            files = [str(work / "parquet" / f["path"]) for f in parquet.files if f["split"] == split]
            ds = datasets.Dataset.from_parquet(
                files, features=features, cache_dir=str(work / "cache"), keep_in_memory=False
            )
            splits[split] = ds
            size = sum(f["bytes"] for f in parquet.files if f["split"] == split)
            by_count = math.ceil(len(ds) / options.shard_size)
            by_size = math.ceil(size / options.shard_max_bytes)
            num_shards[split] = max(1, min(len(ds), max(by_count, by_size)))
        dd = datasets.DatasetDict(splits)
        dd.save_to_disk(str(root), num_shards=num_shards)
        del dd, splits
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if bars:
            datasets.enable_progress_bars()
    result = ExportResult("hf", root, parquet.images, parquet.texts, parquet.classes)
    result.splits = {s: {**info, "files": num_shards[s]} for s, info in parquet.splits.items()}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        entry = _file_entry(path, root)
        top = entry["path"].split("/", 1)[0]
        result.files.append({**entry, **({"split": top} if top in result.splits else {})})
    return result


WRITERS: dict[str, Callable[..., ExportResult]] = {
    "parquet": write_parquet,
    "webdataset": write_webdataset,
    "hf": write_hf,
}


def _file_entry(path: Path, root: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {
        "path": path.relative_to(root).as_posix(),
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
    }


# -- the dataset card ---------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _licence(source: str) -> tuple[str, str]:
    if source in TEXT_LICENCES:
        return TEXT_LICENCES[source]
    if source.startswith("file:"):
        return (
            f"the description file `{source[5:]}` given to `imtext harvest classes`",
            "as its provider states",
        )
    return (f"`{source}`", "unknown: check with whoever supplied it")


def _size_category(n: int) -> str:
    for bound, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if n < bound:
            return label
    return "1M<n<10M"


def _card_yaml(fmt: str, total: int, splits: dict) -> list[str]:
    lines = [
        "---",
        "license: other",
        "license_name: imagenet-and-per-source-terms",
        "language:",
        "- en",
        "task_categories:",
        "- image-classification",
        "- image-to-text",
        "- text-classification",
        "tags:",
        "- imagenet",
        "- imtext",
        "pretty_name: ImageNet-1k with curated image texts (imtext)",
        "size_categories:",
        f"- {_size_category(total)}",
    ]
    if fmt == "parquet" and splits:
        lines += ["configs:", "- config_name: default", "  data_files:"]
        for split in splits:
            lines += [f"  - split: {split}", f"    path: {PARQUET_DATA}/{split}-*.parquet"]
    return [*lines, "---"]


def _how_to_load(fmt: str, splits: dict) -> list[str]:
    if fmt == "parquet":
        code = [
            "from datasets import load_dataset",
            'ds = load_dataset("parquet", data_dir="<this folder>")   # DatasetDict: ' + ", ".join(splits),
            'ds["train"].features["label"].int2str(0)',
        ]
    elif fmt == "hf":
        code = ["from datasets import load_from_disk", 'ds = load_from_disk("<this folder>")   # DatasetDict']
    else:
        first = next(iter(splits.values()), {}).get("pattern", "train/shard-{000000..000000}.tar")
        code = [
            "import webdataset as wds",
            f'ds = wds.WebDataset("<this folder>/{first}", shardshuffle=100)'
            '.shuffle(1000).decode("pil").to_tuple("jpg", "cls", "txt")',
        ]
    return ["```python", *code, "```"]


def dataset_card(data: CuratedData, result: ExportResult, options: Options, created_at: str) -> str:
    """The export's README.md: contents, splits, features, text sources and licences, curation, provenance."""
    cur = data.curation
    total = result.images
    lines = _card_yaml(result.format, total, result.splits)
    lines += [
        "",
        "# ImageNet-1k with curated image texts",
        "",
        f"{total:,} ImageNet-1k images of {result.classes:,} classes, each with its class label, descriptions "
        f"of its class and the descriptions of the image itself that survived curation ({result.texts:,} texts"
        f" in all), exported by imtext as **{result.format}** on {created_at}. "
        + (
            "Only images with at least one kept text are included."
            if options.only_with_text
            else "Every ingested image is included, with or without kept texts."
        ),
        "",
        "## How to load",
        "",
        *_how_to_load(result.format, result.splits),
        "",
        "## Splits",
        "",
        "| split | images | kept texts | files |",
        "|---|---:|---:|---:|",
        *(f"| {s} | {i['images']:,} | {i['texts']:,} | {i['files']:,} |" for s, i in result.splits.items()),
        "",
        f"`validation` is ImageNet's `val`. Within a split the samples are shuffled with seed {options.seed}, "
        f"the same order in every format; files hold at most {options.shard_size:,} samples "
        f"and about {options.shard_max_bytes / 2**20:,.0f} MB.",
        "",
        "## Features",
        "",
        "| feature | what it is |",
        "|---|---|",
        *(f"| `{k}` | {v} |" for k, v in FEATURES.items()),
        "",
        "`label` names are the first WordNet lemma of each class in index order; the two names two classes "
        "share (`crane`, `maillot`) carry their wnid.",
    ]
    if result.format == "webdataset":
        lines += [
            "",
            "In the WebDataset shards a sample is `<image_id>.jpg` (the image), `.cls` (the label), `.txt` "
            "(the caption) and `.json` (every other feature).",
        ]
    image_sources = data.texts.filter(pl.col("image_id").is_in(data.images["image_id"].implode()))
    text_counts = image_sources.group_by("source").len().sort("source").rows()
    class_counts = (
        data.class_texts.filter(pl.col("wnid").is_in(data.wnids))
        .group_by("source")
        .len()
        .sort("source")
        .rows()
    )
    lines += [
        "",
        "## Sources and licences",
        "",
        "Images: ImageNet-1k (ILSVRC 2012), under the ImageNet terms of access (non-commercial research and "
        "education). Texts:",
        "",
        "| kind | source | texts | where from | terms |",
        "|---|---|---:|---|---|",
    ]
    for kind, counts in (("image text", text_counts), ("class text", class_counts)):
        for source, n in counts:
            origin, terms = _licence(source)
            lines.append(f"| {kind} | `{source}` | {n:,} | {origin} | {terms} |")
    policy = cur.get("policy") or {}
    labels = (cur.get("metrics") or {}).get("labels") if isinstance(cur.get("metrics"), dict) else None
    lines += [
        "",
        "## Curation",
        "",
        "Each image text was scored by a text→class classifier that never saw it in training (out-of-fold): "
        "`p_true` is the probability it gives the image's own class. A text is kept by this policy: "
        + ", ".join(f"`{k}` = {_fmt(v)}" for k, v in policy.items())
        + ".",
        "",
        f"Curation run `{cur['run_id']}` with the `{cur['scorer']}` scorer ({cur.get('scorer_reason') or 'chosen'})"
        f" kept {_fmt(cur.get('kept'))} of {_fmt(cur.get('texts'))} texts.",
        "",
    ]
    if labels:
        lines += [
            f"Measured on {_fmt(labels.get('labelled'))} texts labelled relevant or not:",
            "",
            "| decision | precision | recall |",
            "|---|---:|---:|",
            f"| keep | {_fmt(labels.get('keep_precision'))} | {_fmt(labels.get('keep_recall'))} |",
            f"| drop | {_fmt(labels.get('drop_precision', labels.get('precision')))} | "
            f"{_fmt(labels.get('drop_recall', labels.get('recall')))} |",
        ]
    else:
        lines.append(
            "Precision and recall were not measured for this curation (no relevance labels were given to "
            "`imtext curate --labels`)."
        )
    lines += [
        "",
        "## Provenance",
        "",
        f"- warehouse snapshot: {data.snapshot} (curation decided at snapshot {_fmt(cur.get('snapshot'))})",
        f"- training run: `{_fmt(cur.get('training_run'))}`",
        "- scorers:",
    ]
    for s in data.scorers:
        held_out = s.get("metrics") or {}
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in held_out.items() if isinstance(v, int | float))
        base = s.get("base_model") or (f"ensemble of {', '.join(s['members'])}" if s.get("members") else "")
        lines.append(
            f"  - `{s['model_id']}` ({s.get('kind') or 'model'}, fold {s.get('fold')}, {s.get('role') or ''}"
            f"{'; ' + base if base else ''}{'; held-out ' + shown if shown else ''})"
        )
    if not data.scorers:
        lines.extend(f"  - `{m}`" for m in cur.get("model_ids") or [])
    lines += [
        "- `manifest.json` beside this card lists every file with its size and SHA-256.",
        "",
        "## Citation",
        "",
        'The dataset follows Dashenkov & Smelyakov (2025), "Extending the ImageNet dataset for multimodal '
        'text and image learning":',
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


# -- the target folder --------------------------------------------------------------------------------


def _own_export_problem(folder: Path) -> str | None:
    """None when `folder` holds exactly what an imtext export wrote, else why it must not be replaced."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"holds no {MANIFEST} written by imtext"
    ours = isinstance(manifest, dict) and (
        manifest.get("generator") == GENERATOR
        # exports written before the marker existed carry these
        or {"export_run_id", "warehouse_snapshot", "curation", "files"} <= manifest.keys()
    )
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not ours or manifest.get("format") not in FORMATS or not isinstance(files, list):
        return f"its {MANIFEST} was not written by imtext"
    listed = {MANIFEST, CARD} | {f.get("path") for f in files if isinstance(f, dict)}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_dir():
            rel = path.relative_to(folder).as_posix()
            if rel not in listed:
                return f"holds {rel}, which the imtext export there did not write"
    return None


def check_target(out: str | Path) -> Path:
    """The absolute export folder; an InputError when it cannot be written or must not be replaced."""
    out = Path(out).expanduser().absolute()
    for parent in reversed(out.parents):
        if parent.exists() and not parent.is_dir():
            raise InputError(f"--out {out}: {parent} is a file, not a folder")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        problem = _own_export_problem(out)
        if problem:
            raise InputError(
                f"--out {out} is not empty and {problem}; imtext only replaces its own exports: "
                "choose an empty or new folder"
            )
    return out


def _swap(staging: Path, out: Path) -> None:
    """Move the finished export into place; the folder it replaces is removed only after the move."""
    check_target(out)  # again: the folder may have changed while the export was written
    if not out.exists():
        staging.rename(out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_dataset(
    data: CuratedData,
    format: str,
    out: str | Path,
    *,
    options: Options | None = None,
    run_id: str = "",
    on_sample=None,
) -> ExportResult:
    """Write the dataset in `format` to `out` with its card and manifest; returns counts, files and the manifest."""
    options = options or Options()
    if format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    if options.shard_size < 1:
        raise InputError(f"--shard-size must be at least 1, not {options.shard_size}")
    if options.shard_max_bytes < 1:
        raise InputError("--shard-max-mb must be more than 0")
    out = check_target(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write beside it ({exc.strerror or exc})") from None
    staging = work / "export"
    try:
        staging.mkdir()
        result = WRITERS[format](data, staging, options, on_sample)
        created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        (staging / CARD).write_text(dataset_card(data, result, options, created_at))
        result.files.append(_file_entry(staging / CARD, staging))
        manifest = {
            "generator": GENERATOR,
            "manifest_version": MANIFEST_VERSION,
            "format": format,
            "created_at": created_at,
            "export_run_id": run_id,
            "warehouse_snapshot": data.snapshot,
            "curation": data.curation,
            "model_ids": data.curation["model_ids"],
            "policy": data.curation["policy"],
            "scorers": data.scorers,
            "seed": options.seed,
            "splits": result.splits,
            "label_names": data.label_names,
            "counts": {
                "images": result.images,
                "texts": result.texts,
                "classes": result.classes,
                "class_texts": int(data.class_texts.filter(pl.col("wnid").is_in(data.wnids)).height),
                "files": len(result.files),
                "unreadable_images": len(data.unreadable),
            },
            "unreadable_images": data.unreadable[:100],
            "options": {
                "shard_size": options.shard_size,
                "shard_max_bytes": options.shard_max_bytes,
                "only_with_text": options.only_with_text,
            },
            "files": result.files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        _swap(staging, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.out = out
    result.manifest = manifest
    return result


def record_export(wh, row: dict) -> int:
    """One `exports` row for a finished export (anti-joined on run_id)."""
    from tasks.scoring import insert_arrow

    return insert_arrow(wh, "curate_insert_export", "export_row", pa.Table.from_pylist([row]))


def options_from(shard_size: int, shard_max_mb: float, seed: int, only_with_text: bool) -> Options:
    """Options from the command's units (MB), checked."""
    if not shard_max_mb > 0 or not math.isfinite(shard_max_mb):
        raise InputError(f"--shard-max-mb must be more than 0, not {shard_max_mb}")
    if shard_size < 1:
        raise InputError(f"--shard-size must be at least 1, not {shard_size}")
    return Options(shard_size, max(1, int(shard_max_mb * 2**20)), seed, only_with_text)


def check_ready(con) -> None:
    """An InputError unless a curation has finished (checked before the flow starts)."""
    if latest_curation(con) is None:
        raise _no_curation()


# -- Prefect tasks (thin wrappers the export flow calls) ------------------------------------------


@task(name="read-curated", cache_policy=NO_CACHE)
def read_curated_task(con, only_with_text: bool) -> CuratedData:
    """Read images, kept texts, class texts and scorers of the latest curation at one snapshot."""
    return read_curated(con, only_with_text)


@task(name="write-export", cache_policy=NO_CACHE)
def write_export_task(data, format: str, out: str, options: Options, run_id: str, on_sample=None):
    """Write the dataset files, the dataset card and the manifest, then swap them into place."""
    return export_dataset(data, format, out, options=options, run_id=run_id, on_sample=on_sample)
