"""The export formats: Parquet files, WebDataset tar shards and a Hugging Face `DatasetDict` folder."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from tasks.export.options import PARQUET_DATA, Options
from tasks.export.read import CuratedData
from tasks.export.samples import SAMPLE_SCHEMA, hf_features, ordered_splits, samples
from tasks.export.shards import _ParquetShard, _Shard, _Shards, _TarShard


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
        entry = file_entry(path, root)
        top = entry["path"].split("/", 1)[0]
        result.files.append({**entry, **({"split": top} if top in result.splits else {})})
    return result


WRITERS: dict[str, Callable[..., ExportResult]] = {
    "parquet": write_parquet,
    "webdataset": write_webdataset,
    "hf": write_hf,
}


def file_entry(path: Path, root: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {
        "path": path.relative_to(root).as_posix(),
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
    }
