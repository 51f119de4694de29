"""Write the curated dataset: Parquet partitioned by class, a Hugging Face `datasets` folder, WebDataset shards.

One sample per image: its bytes, its class (wnid, index, name), the image texts the latest curation
kept (best first), the class descriptions, and one caption (the best kept text, else
"a photo of a <class name>", said in `caption_source`). Everything is read inside one read
transaction, so the export is one warehouse snapshot, named in `manifest.json` with the curation's
scorer, model ids and policy: enough to rebuild the dataset exactly.

The export is written beside the target folder and moved into place at the end; a folder that
holds a previous imtext export (a manifest.json) is replaced, any other non-empty folder is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import shutil
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.errors import InputError

FORMATS = ("parquet", "webdataset", "hf")
MANIFEST = "manifest.json"
PARQUET_DATA = "data"
DEFAULT_SHARD_SIZE = 1000

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
        ("wnid", pa.string()),
        ("class_index", pa.int32()),
        ("class_name", pa.string()),
        ("split", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("caption", pa.string()),
        ("caption_source", pa.string()),
        ("texts", pa.list_(TEXT_TYPE)),
        ("class_texts", pa.list_(CLASS_TEXT_TYPE)),
    ]
)


@dataclass
class CuratedData:
    """Everything an export writes, read at one snapshot."""

    snapshot: int
    curation: dict
    images: pl.DataFrame
    texts: pl.DataFrame
    class_texts: pl.DataFrame
    unreadable: list[str] = field(default_factory=list)

    @property
    def wnids(self) -> list[str]:
        return self.images["wnid"].unique(maintain_order=True).to_list()


@dataclass
class ExportResult:
    """What an export wrote."""

    format: str
    out: Path
    images: int = 0
    texts: int = 0
    classes: int = 0
    files: list[dict] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)


def read_curated(con, only_with_text: bool = False) -> CuratedData:
    """Images, kept texts and class texts of the latest curation, in one read transaction."""
    from warehouse.db import ALIAS, load_query

    con.execute("BEGIN TRANSACTION")
    try:
        snapshot = con.execute(f"SELECT id FROM {ALIAS}.current_snapshot()").fetchone()[0]
        curation = con.execute(load_query("curate_export_curation")).pl()
        if curation.is_empty():
            raise InputError("no curation has finished yet: run `imtext curate` before `imtext export`")
        run = curation.row(0, named=True)
        images = con.execute(load_query("curate_export_images")).pl()
        texts = con.execute(load_query("curate_export_texts")).pl()
        class_texts = con.execute(load_query("curate_export_class_texts")).pl()
    finally:
        con.execute("COMMIT")
    if only_with_text:
        images = images.filter(pl.col("image_id").is_in(texts["image_id"].implode()))
    policy = json.loads(run["policy"]) if run["policy"] else {}
    curation_info = {
        "run_id": run["run_id"],
        "scorer": run["scorer"],
        "scorer_reason": run["scorer_reason"],
        "training_run": run["training_run"],
        "policy": policy,
        "model_ids": json.loads(run["model_ids"]),
        "snapshot": run["snapshot"],
        "finished_at": str(run["finished_at"]),
    }
    return CuratedData(snapshot, curation_info, images, texts, class_texts)


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


def samples(data: CuratedData, wnid: str, *, threads: int = 8) -> Iterator[dict]:
    """The samples of one class, image bytes read in parallel threads, in image_id order."""
    read = _reader()
    images = data.images.filter(pl.col("wnid") == wnid).sort("image_id")
    texts = data.texts.filter(pl.col("wnid") == wnid)
    by_image: dict[str, list[dict]] = {}
    for row in texts.sort(["image_id", "p_true", "text_id"], descending=[False, True, False]).iter_rows(
        named=True
    ):
        by_image.setdefault(row["image_id"], []).append(
            {k: row[k] for k in ("text_id", "source", "field", "text", "p_true")}
        )
    descriptions = data.class_texts.filter(pl.col("wnid") == wnid).select("source", "text", "url").to_dicts()
    rows = images.to_dicts()

    def fetch(row: dict) -> bytes | None:
        try:
            return _jpeg_bytes(read(row["path"]))
        except (OSError, ValueError) as exc:  # moved, deleted or damaged since ingestion: leave it out
            data.unreadable.append(f"{row['image_id']}: {exc}")
            return None

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(rows), 4 * threads):  # a bounded window of images in memory
            window = rows[start : start + 4 * threads]
            for row, raw in zip(window, pool.map(fetch, window), strict=True):
                if raw is None:
                    continue
                kept = by_image.get(row["image_id"], [])
                if kept:
                    caption, caption_source = kept[0]["text"], "image-text"
                else:
                    caption, caption_source = f"a photo of a {row['class_name']}", "class-name"
                yield {
                    "image_id": row["image_id"],
                    "wnid": wnid,
                    "class_index": row["class_index"],
                    "class_name": row["class_name"],
                    "split": row["split"],
                    "image": {"bytes": raw, "path": f"{row['image_id']}.jpg"},
                    "width": row["width"],
                    "height": row["height"],
                    "caption": caption,
                    "caption_source": caption_source,
                    "texts": kept,
                    "class_texts": descriptions,
                }


def _batches(items: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _file_entry(path: Path, root: Path, samples_in: int) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {
        "path": path.relative_to(root).as_posix(),
        "bytes": path.stat().st_size,
        "samples": samples_in,
        "sha256": digest.hexdigest(),
    }


def _hf_metadata() -> dict[bytes, bytes]:
    """Schema metadata that makes `datasets` decode the image column as an Image feature."""
    from datasets import Features, Image, List, Value

    features = Features(
        {
            "image_id": Value("string"),
            "wnid": Value("string"),
            "class_index": Value("int32"),
            "class_name": Value("string"),
            "split": Value("string"),
            "image": Image(),
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
    return {b"huggingface": json.dumps({"info": {"features": features.to_dict()}}).encode()}


def write_parquet(data: CuratedData, root: Path, shard_size: int, on_sample=None) -> ExportResult:
    """Parquet files `data/wnid=<wnid>/part-NNNNN.parquet` of at most shard_size rows each.

    `pl.read_parquet(out / "data")` and `datasets.load_dataset("parquet", data_dir=out / "data")` load them.
    """
    result = ExportResult("parquet", root)
    schema = SAMPLE_SCHEMA.with_metadata(_hf_metadata())
    for wnid in data.wnids:
        folder = root / PARQUET_DATA / f"wnid={wnid}"
        folder.mkdir(parents=True, exist_ok=True)
        for part, batch in enumerate(_batches(samples(data, wnid), shard_size)):
            path = folder / f"part-{part:05d}.parquet"
            pq.write_table(pa.Table.from_pylist(batch, schema=schema), path, compression="zstd")
            result.files.append(_file_entry(path, root, len(batch)))
            _count(result, batch, on_sample)
        result.classes += 1
    return result


def write_webdataset(data: CuratedData, root: Path, shard_size: int, on_sample=None) -> ExportResult:
    """Tar shards `shard-NNNNNN.tar` of shard_size samples: `<key>.jpg`, `<key>.json`, `<key>.txt`."""
    result = ExportResult("webdataset", root)
    root.mkdir(parents=True, exist_ok=True)
    stream = (s for wnid in data.wnids for s in samples(data, wnid))
    for number, batch in enumerate(_batches(stream, shard_size)):
        path = root / f"shard-{number:06d}.tar"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for sample in batch:
                key = sample["image_id"].replace(".", "_")
                meta = {k: v for k, v in sample.items() if k != "image"}
                for suffix, payload in (
                    ("jpg", sample["image"]["bytes"]),
                    ("json", json.dumps(meta, ensure_ascii=False).encode()),
                    ("txt", sample["caption"].encode()),
                ):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(payload)
                    info.mtime = 0  # reproducible shards
                    info.mode = 0o644
                    tar.addfile(info, io.BytesIO(payload))
        result.files.append(_file_entry(path, root, len(batch)))
        _count(result, batch, on_sample)
    result.classes = len(data.wnids)
    return result


def write_hf(data: CuratedData, root: Path, shard_size: int, on_sample=None) -> ExportResult:
    """A `datasets.load_from_disk` folder (built from Parquet written next to it, then removed)."""
    import datasets

    staging = root.parent / (root.name + ".parquet-staging")
    cache = root.parent / (root.name + ".hf-cache")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # the flow reports progress itself
    try:
        parquet = write_parquet(data, staging, shard_size, on_sample)
        files = [str(staging / f["path"]) for f in parquet.files]
        features = datasets.Features.from_arrow_schema(SAMPLE_SCHEMA.with_metadata(_hf_metadata()))
        if files:
            ds = datasets.Dataset.from_parquet(
                files, features=features, cache_dir=str(cache), keep_in_memory=False
            )
        else:
            ds = datasets.Dataset.from_list([], features=features)
        shards = max(1, math.ceil(len(ds) / shard_size)) if len(ds) else 1
        ds.save_to_disk(str(root), num_shards=min(shards, max(len(ds), 1)))
        del ds
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        if bars:
            datasets.enable_progress_bars()
    result = ExportResult("hf", root, parquet.images, parquet.texts, parquet.classes)
    result.files = [_file_entry(p, root, 0) for p in sorted(root.rglob("*")) if p.is_file()]
    return result


WRITERS: dict[str, Callable[..., ExportResult]] = {
    "parquet": write_parquet,
    "webdataset": write_webdataset,
    "hf": write_hf,
}


def _count(result: ExportResult, batch: list[dict], on_sample) -> None:
    result.images += len(batch)
    result.texts += sum(len(s["texts"]) for s in batch)
    if on_sample is not None:
        on_sample(len(batch))


def _prepare_target(out: Path) -> Path:
    """A fresh staging folder beside `out`; refuses a non-empty `out` that is not an imtext export."""
    out = out.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise InputError(f"--out {out} is not empty and holds no imtext {MANIFEST}: choose an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def export_dataset(
    data: CuratedData,
    format: str,
    out: str | Path,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    run_id: str = "",
    extra: dict | None = None,
    on_sample=None,
) -> ExportResult:
    """Write the dataset in `format` to `out` with its manifest; returns counts, files and the manifest."""
    if format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    if shard_size < 1:
        raise InputError(f"--shard-size must be at least 1, not {shard_size}")
    out = Path(out).expanduser().resolve()
    staging = _prepare_target(out)
    try:
        result = WRITERS[format](data, staging, shard_size, on_sample)
        manifest = {
            "format": format,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "export_run_id": run_id,
            "warehouse_snapshot": data.snapshot,
            "curation": data.curation,
            "model_ids": data.curation["model_ids"],
            "policy": data.curation["policy"],
            "counts": {
                "images": result.images,
                "texts": result.texts,
                "classes": result.classes,
                "class_texts": int(data.class_texts.filter(pl.col("wnid").is_in(data.wnids)).height),
                "files": len(result.files),
                "unreadable_images": len(data.unreadable),
            },
            "unreadable_images": data.unreadable[:100],
            "options": {"shard_size": shard_size, **(extra or {})},
            "files": result.files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.out = out
    result.manifest = manifest
    return result


def record_export(wh, row: dict) -> int:
    """One `exports` row for a finished export (anti-joined on run_id)."""
    from tasks.scoring import insert_arrow

    return insert_arrow(wh, "curate_insert_export", "export_row", pa.Table.from_pylist([row]))


# -- Prefect tasks (thin wrappers the export flow calls) ------------------------------------------


@task(name="read-curated", cache_policy=NO_CACHE)
def read_curated_task(con, only_with_text: bool) -> CuratedData:
    """Read images, kept texts and class texts of the latest curation at one snapshot."""
    return read_curated(con, only_with_text)


@task(name="write-export", cache_policy=NO_CACHE)
def write_export_task(data, format: str, out: str, shard_size: int, run_id: str, extra: dict, on_sample=None):
    """Write the dataset files and the manifest."""
    return export_dataset(
        data, format, out, shard_size=shard_size, run_id=run_id, extra=extra, on_sample=on_sample
    )
