"""The samples of an export: their schema, and each split's samples in a fixed shuffled order."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from tasks.export.options import SPLIT_NAMES
from tasks.export.read import CuratedData

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
        from tasks.ingest.imageio import read_image_bytes
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


def sample_size(sample: dict) -> int:
    """Bytes a sample adds to a shard, roughly (exact for tar members, before compression for parquet)."""
    texts = sum(len(t["text"]) for t in sample["texts"]) + sum(len(t["text"]) for t in sample["class_texts"])
    return len(sample["image"]["bytes"]) + texts + 256
