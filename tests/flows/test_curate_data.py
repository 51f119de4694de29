"""A tiny curated-world builder shared by the curate and export tests (plus a check of the builder).

Six classes, a few images each (real JPEG files), image texts of three kinds — the class name in a
sentence (relevant), a description without the name (relevant), and texts that could belong to any
image (irrelevant, some junk-marked) — labels saying which are relevant, and cross-fitted models:
a TF-IDF baseline per fold (trained, it is fast) and a tiny RoBERTa per fold (untrained; scoring
plumbing does not need it to be good) registered in `models` like the training flow does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import shutil
from pathlib import Path

import polars as pl
from PIL import Image

from tasks.model.folds import fold_of

CLASSES = {
    "n01443537": ("goldfish", "small orange fish swimming round and round in a glass bowl"),
    "n07753592": ("banana", "curved yellow fruit with a peel lying on the kitchen counter"),
    "n07873807": ("pizza", "round flat bread baked with cheese and tomato sauce in the oven"),
    "n09472597": ("volcano", "mountain with smoke and glowing lava erupting at dusk"),
    "n02391049": ("zebra", "striped black and white horse grazing on the savanna"),
    "n04398044": ("teapot", "porcelain pot with a spout for brewing hot tea"),
}
PLACES = ["in the garden", "on holiday", "at home", "last summer", "near the lake", "with friends"]
NOISE = [
    "uploaded from my phone",
    "best of the year album",
    "holiday trip with friends",
    "saturday afternoon",
    "my new camera test shot",
    "another day another picture",
]
TRAIN_RUN = "train-run-1"


def use_home(mp, home) -> None:
    """Point IMTEXT_HOME at `home` (with the default catalog and data path) through a MonkeyPatch."""
    mp.setenv("IMTEXT_HOME", str(home))
    mp.delenv("IMTEXT_WAREHOUSE", raising=False)
    mp.delenv("IMTEXT_WAREHOUSE_DATA", raising=False)


def tid(image_id: str, field: str, text: str) -> str:
    return hashlib.blake2b(f"{image_id}|test|{field}|{text}".encode(), digest_size=12).hexdigest()


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buf, "JPEG")
    return buf.getvalue()


def build_world(wh, root: Path, *, per_class: int = 8, folds: int = 2, seed: int = 0) -> dict:
    """Images, texts, class texts and labels in the warehouse; returns what was written."""
    root.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    images, texts, labels, class_texts = [], [], [], []
    for c, (wnid, (name, description)) in enumerate(CLASSES.items()):
        folder = root / "train" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            image_id = f"{wnid}_{n}"
            path = folder / f"{image_id}.JPEG"
            data = _jpeg((40 * c % 256, 20 * n % 256, 128))
            path.write_bytes(data)
            split = "val" if n == per_class - 1 else "train"
            images.append((image_id, wnid, split, str(path), len(data), 16, 12, "JPEG", now, "ingest-1"))
            rows = [
                ("title", f"my {name} {PLACES[n % len(PLACES)]}", None, True),
                ("description", description, None, True),
                ("tags", NOISE[(n + c) % len(NOISE)], None, False),
            ]
            if n % 3 == 0:
                rows.append(("comment", f"DSC_{1000 + 10 * c + n}.JPG", "camera-filename", False))
            for field, text, junk, relevant in rows:
                text_id = tid(image_id, field, text)
                texts.append((text_id, image_id, "test", field, text, text, junk, now, "harvest-1"))
                labels.append({"text_id": text_id, "relevant": relevant})
        class_texts.append((wnid, "wordnet", f"{name}: {description}", now, "harvest-1"))
    con = wh.con

    def load(c):
        c.executemany(
            "INSERT INTO images (image_id, wnid, split, path, bytes, width, height, format, ingested_at, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            images,
        )
        c.executemany(
            "INSERT INTO image_texts (text_id, image_id, source, field, text, raw_text, junk, fetched_at, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            texts,
        )
        c.executemany(
            "INSERT INTO class_texts (wnid, source, text, fetched_at, run_id) VALUES (?, ?, ?, ?, ?)",
            class_texts,
        )

    wh.write(load)
    labels_path = root / "labels.jsonl"
    labels_path.write_text("".join(json.dumps(r) + "\n" for r in labels))
    frame = pl.DataFrame(
        [(t[0], t[1], t[4], t[6]) for t in texts],
        schema=["text_id", "image_id", "text", "junk"],
        orient="row",
    ).with_columns(pl.col("image_id").str.split("_").list.first().alias("wnid"))
    return {
        "root": root,
        "labels": labels_path,
        "texts": frame,
        "images": len(images),
        "snapshot": con.execute("SELECT id FROM current_snapshot()").fetchone()[0],
        "folds": folds,
        "seed": seed,
    }


def train_models(
    wh,
    world: dict,
    models_dir: Path,
    *,
    kinds=("baseline", "transformer"),
    run_id: str = TRAIN_RUN,
    full_model: bool = True,
) -> list[dict]:
    """Fold models (and one on everything) of each kind, saved and registered in `models`."""
    from tasks.model.baseline import save_baseline, train_baseline
    from tasks.model.classifier import build_classifier, save_classifier

    texts: pl.DataFrame = world["texts"]
    folds, seed = world["folds"], world["seed"]
    texts = texts.with_columns(
        pl.col("image_id")
        .map_elements(lambda i: fold_of(i, folds, seed), return_dtype=pl.Int64)
        .alias("fold")
    )
    extra = [(f"{name}: {desc}", w) for w, (name, desc) in CLASSES.items()]
    labels = sorted(CLASSES)
    rows = []
    now = dt.datetime.now(dt.UTC)
    transformer = None
    for kind in kinds:
        for fold in [*range(folds), -1] if full_model else range(folds):
            train = texts.filter(pl.col("fold") != fold)
            train_texts = train["text"].to_list() + [t for t, _ in extra]
            train_labels = train["wnid"].to_list() + [w for _, w in extra]
            model_id = f"{run_id}-{kind}-f{fold}"
            path = models_dir / model_id
            if kind == "baseline":
                save_baseline(train_baseline(train_texts, train_labels, classes=labels), path)
                base, metrics = "tfidf-linear", {"top1": 0.9, "top5": 1.0, "macro_f1": 0.88}
            else:
                # Untrained, so one network serves every fold (building one is the slow part).
                if transformer is None:
                    model, tok, _ = build_classifier("tiny-roberta", labels, corpus=train_texts, seed=1)
                    transformer = save_classifier(model, tok, path)
                else:
                    shutil.copytree(transformer, path, dirs_exist_ok=True)
                base, metrics = "tiny-roberta", {"top1": 0.5, "top5": 0.9, "macro_f1": 0.41}
            params = {"seed": seed, "folds": folds, "kind": kind, "max_length": 128}
            rows.append(
                (
                    model_id,
                    base,
                    fold,
                    folds,
                    world["snapshot"],
                    json.dumps(params),
                    json.dumps(metrics),
                    str(path),
                    now,
                    run_id,
                )
            )
    wh.write(
        lambda c: c.executemany(
            "INSERT INTO models (model_id, base_model, fold, folds, snapshot, params, metrics, path, created_at, run_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    )
    return [
        dict(
            zip(
                ["model_id", "base_model", "fold", "kind"],
                [r[0], r[1], r[2], json.loads(r[5])["kind"]],
                strict=True,
            )
        )
        for r in rows
    ]


def test_world_builder_writes_what_it_says(wh, tmp_path):
    world = build_world(wh, tmp_path / "world", per_class=3)
    con = wh.con
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == world["images"] == 18
    assert con.execute("SELECT count(*) FROM image_texts").fetchone()[0] == world["texts"].height
    labels = [json.loads(line) for line in world["labels"].read_text().splitlines()]
    assert len(labels) == world["texts"].height and any(not r["relevant"] for r in labels)
