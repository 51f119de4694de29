"""The texts of one snapshot with their labels and folds, each model's split, and the folds recorded per run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import polars as pl

from tasks.common.errors import InputError
from tasks.model.folds import group_folds


@dataclass
class TrainingData:
    """The texts of one snapshot with their labels and folds, and the class order."""

    texts: pl.DataFrame  # text_id, text, wnid, image_id, source, field, origin, fold (-1: class text)
    labels: list[str]  # wnids, in output-column order
    snapshot: int
    folds: int
    seed: int
    junk_excluded: int = 0
    image_folds: pl.DataFrame | None = None  # image_id, group, fold (twins share a group)

    @property
    def fingerprint(self) -> str:
        """A hash of what the models learn from (texts, labels, folds), not of the snapshot number."""
        digest = hashlib.blake2b(digest_size=10)
        digest.update(json.dumps([self.labels, self.folds, self.seed]).encode())
        frame = self.texts.select("text_id", "text", "wnid", "fold").sort("text_id")
        for row in frame.iter_rows():
            digest.update("\x1f".join(map(str, row)).encode())
            digest.update(b"\x1e")
        return digest.hexdigest()


def _query(name: str) -> str:
    from warehouse.db import load_query

    return load_query(name)


def load_training_texts(con, snapshot: int) -> tuple[pl.DataFrame, int]:
    """Image texts (with their image's wnid) and class texts at `snapshot`; and how many junk texts were left out."""
    frame = pl.from_arrow(con.execute(_query("train_texts"), {"snapshot": snapshot}).to_arrow_table())
    junk = con.execute(_query("train_junk_count"), {"snapshot": snapshot}).fetchone()[0]
    return frame, int(junk)


def prepare_training_data(con, snapshot: int, folds: int, seed: int = 0) -> TrainingData:
    """Texts, folds and class order for one training run, read at `snapshot`."""
    if folds < 2:
        raise InputError(f"--folds must be at least 2 (got {folds}): cross-fitting needs a held-out split")
    texts, junk = load_training_texts(con, snapshot)
    images = texts.filter(pl.col("origin") == "image")
    if images.height == 0:
        raise InputError(
            "no image texts to train on: harvest some first (imtext harvest images ...), "
            "and check that their images are ingested with a class"
        )
    order = con.execute(_query("train_class_order"), {"snapshot": snapshot}).fetchall()
    present = set(images["wnid"].unique().to_list())
    labels = [wnid for wnid, _, _ in order if wnid in present]
    texts = texts.filter(pl.col("wnid").is_in(labels))
    # Twins (one description pasted onto many images) share a fold: see tasks.model.folds.
    image_folds = group_folds(texts.filter(pl.col("origin") == "image"), folds, seed)
    texts = (
        texts.join(image_folds.select("image_id", "fold"), on="image_id", how="left", maintain_order="left")
        .with_columns(pl.col("fold").fill_null(-1).cast(pl.Int32))
        .with_columns(pl.when(pl.col("origin") == "class").then(-1).otherwise(pl.col("fold")).alias("fold"))
    )
    return TrainingData(texts, labels, snapshot, folds, seed, junk, image_folds)


def fold_split(
    data: TrainingData, fold: int, max_train_samples: int | None = None, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, held-out) texts of the model of `fold`; fold -1 trains on everything and holds nothing out."""
    texts = data.texts
    if fold < 0:
        train, held = texts, texts.clear()
    else:
        train, held = texts.filter(pl.col("fold") != fold), texts.filter(pl.col("fold") == fold)
    if max_train_samples is not None and train.height > max_train_samples:
        train = train.sample(n=max_train_samples, seed=seed, shuffle=False)
    return train, held


def class_balance(data: TrainingData) -> dict:
    """Texts and images per class and per fold, sources, and the imbalance summary."""
    texts = data.texts
    images = texts.filter(pl.col("origin") == "image")
    per_class = (
        images.group_by("wnid")
        .agg(pl.len().alias("texts"), pl.col("image_id").n_unique().alias("images"))
        .join(
            texts.filter(pl.col("origin") == "class").group_by("wnid").agg(pl.len().alias("class_texts")),
            on="wnid",
            how="left",
        )
        .with_columns(pl.col("class_texts").fill_null(0))
        .sort("texts")
    )
    counts = per_class["texts"].to_numpy()
    per_fold = images.group_by("fold").agg(
        pl.len().alias("texts"), pl.col("image_id").n_unique().alias("images")
    )
    return {
        "classes": len(data.labels),
        "image_texts": images.height,
        "images": images["image_id"].n_unique(),
        "class_texts": texts.height - images.height,
        "junk_excluded": data.junk_excluded,
        "texts_per_class": {
            "min": int(counts.min()),
            "median": float(np.median(counts)),
            "max": int(counts.max()),
            "imbalance": round(float(counts.max() / max(counts.min(), 1)), 2),
        },
        "classes_with_fewer_images_than_folds": int((per_class["images"] < data.folds).sum()),
        "smallest_classes": per_class.head(5).to_dicts(),
        "largest_classes": per_class.tail(5).reverse().to_dicts(),
        "per_fold": {
            int(r["fold"]): {"texts": r["texts"], "images": r["images"]} for r in per_fold.to_dicts()
        },
        "per_source": dict(texts.group_by("source").agg(pl.len()).sort("source").iter_rows()),
    }


def record_folds(wh, run_id: str, image_folds: pl.DataFrame | None) -> None:
    """Store the fold of every training image of the run (curation judges each text by its fold)."""
    if image_folds is None or image_folds.is_empty():
        return
    table = image_folds.select(
        pl.lit(run_id).alias("run_id"), "image_id", pl.col("group").alias("group_key"), "fold"
    ).to_arrow()
    wh.insert_arrow(_query("train_insert_folds"), new_folds=table)
