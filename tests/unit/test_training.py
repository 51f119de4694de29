"""The training loop and its data: folds by image, loss falls, held-out accuracy, resume, reproducibility."""

from __future__ import annotations

import datetime as dt
import hashlib
import random

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tasks.model.classifier import (
    TINY_ROBERTA,
    build_classifier,
    load_classifier,
    predict_logits,
    save_classifier,
)
from tasks.model.data import class_balance, fold_split, prepare_training_data
from tasks.model.evaluation import classification_metrics
from tasks.model.training import TrainConfig, length_grouped_batches, train_classifier
from tests.unit.test_classifier import one_torch_thread  # noqa: F401 - autouse fixture

# Four real ImageNet classes with the words their texts use.
CLASS_WORDS = {
    "n01440764": ["tench", "fish", "lake", "angler"],
    "n01443537": ["goldfish", "bowl", "orange", "aquarium"],
    "n02099601": ["retriever", "dog", "puppy", "fetch"],
    "n04398044": ["teapot", "tea", "kettle", "porcelain"],
}
FILLER = [
    "photo",
    "my",
    "the",
    "a",
    "today",
    "nice",
    "at",
    "home",
    "with",
    "friends",
    "picture",
    "old",
    "new",
]


def synthetic_texts(rng: random.Random, wnid: str, n: int) -> list[str]:
    words = CLASS_WORDS[wnid]
    out = []
    for _ in range(n):
        parts = rng.sample(FILLER, 4) + rng.sample(words, 2)
        rng.shuffle(parts)
        out.append(" ".join(parts))
    return out


def seed_warehouse(wh, images_per_class: int = 16, texts_per_image: int = 2, seed: int = 0) -> dict:
    """Images, image texts (a few junk-marked) and class texts of CLASS_WORDS' classes, in one snapshot."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    images, texts, class_texts = [], [], []
    for wnid in CLASS_WORDS:
        class_texts.append(
            {"text_id": f"c-{wnid}", "wnid": wnid, "source": "wordnet", "text": " ".join(CLASS_WORDS[wnid])}
        )
        for n in range(images_per_class):
            image_id = f"{wnid}_{n}"
            images.append({"image_id": image_id, "wnid": wnid, "split": "train"})
            for j, text in enumerate(synthetic_texts(rng, wnid, texts_per_image)):
                tid = hashlib.md5(f"{image_id}|{j}|{text}".encode()).hexdigest()
                texts.append(
                    {
                        "text_id": tid,
                        "image_id": image_id,
                        "source": "test",
                        "field": "title",
                        "text": text,
                        "junk": None,
                    }
                )
            if n == 0:  # a junk-marked camera file name: left out of training
                texts.append(
                    {
                        "text_id": f"junk-{image_id}",
                        "image_id": image_id,
                        "source": "test",
                        "field": "title",
                        "text": "IMG_1234",
                        "junk": "camera-file-name",
                    }
                )
    frames = {
        "i": pa.Table.from_pylist(images),
        "t": pa.Table.from_pylist(texts),
        "c": pa.Table.from_pylist(class_texts),
    }

    def write(con):
        for name, table in frames.items():
            con.register(f"new_{name}", table)
        con.execute("INSERT INTO images (image_id, wnid, split, ingested_at) SELECT *, ? FROM new_i", [now])
        con.execute(
            "INSERT INTO image_texts (text_id, image_id, source, field, text, junk, fetched_at) "
            "SELECT *, ? FROM new_t",
            [now],
        )
        con.execute(
            "INSERT INTO class_texts (text_id, wnid, source, text, fetched_at) SELECT *, ? FROM new_c", [now]
        )

    wh.write(write)
    return {"images": len(images), "texts": len(texts), "class_texts": len(class_texts)}


@pytest.fixture
def data(wh):
    seed_warehouse(wh)
    return prepare_training_data(wh.con, wh.current_snapshot(), folds=2, seed=0)


def test_training_data_splits_by_image_and_keeps_class_texts_in_training(data):
    texts = data.texts
    assert data.labels == list(CLASS_WORDS)  # standard ImageNet order
    assert data.junk_excluded == 4 and not texts["text"].str.contains("IMG_").any()
    per_image = texts.filter(pl.col("origin") == "image").group_by("image_id").agg(pl.col("fold").n_unique())
    assert per_image["fold"].max() == 1  # no image on both sides
    for fold in (0, 1):
        train, held = fold_split(data, fold)
        assert set(train["image_id"].drop_nulls()).isdisjoint(set(held["image_id"]))
        assert (held["origin"] == "image").all() and (train["origin"] == "class").sum() == 4
    train, held = fold_split(data, -1)
    assert train.height == texts.height and held.height == 0
    assert fold_split(data, 0, max_train_samples=10)[0].height == 10
    balance = class_balance(data)
    assert (
        balance["classes"] == 4 and balance["image_texts"] == 128 and balance["texts_per_class"]["min"] == 32
    )
    assert sum(f["images"] for f in balance["per_fold"].values()) == 64


def test_length_grouped_batches_cover_everything_once_and_group_lengths():
    lengths = np.random.default_rng(0).integers(1, 100, size=1000)
    batches = length_grouped_batches(lengths, 16, seed=1, epoch=0, group=10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    plain = length_grouped_batches(lengths, 16, seed=1, epoch=0, group=1)
    assert spread < 0.3 * np.mean([lengths[b].max() - lengths[b].min() for b in plain])
    again = length_grouped_batches(lengths, 16, seed=1, epoch=0, group=10)
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))
    other_epoch = length_grouped_batches(lengths, 16, seed=1, epoch=1, group=10)
    assert not all(len(a) == len(b) and (a == b).all() for a, b in zip(batches, other_epoch, strict=False))


def test_metrics():
    logits = np.array([[3.0, 1, 0], [0, 2, 1], [0, 1, 2], [2, 1, 0]])
    m = classification_metrics(logits, np.array([0, 1, 1, 1]))
    assert m["top1"] == 0.5 and m["top5"] == 1.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)  # class 2 absent from y: not counted


def _fold0(data):
    train, held = fold_split(data, 0)
    index = {w: i for i, w in enumerate(data.labels)}
    return (
        train["text"].to_list(),
        [index[w] for w in train["wnid"]],
        held["text"].to_list(),
        [index[w] for w in held["wnid"]],
    )


CONFIG = TrainConfig(
    epochs=4, batch_size=8, checkpoint_every=5, log_every=2, max_length=32, early_stopping_patience=10
)


def _train(data, **kwargs):
    texts, y, held_texts, held_y = _fold0(data)
    model, tok, _ = build_classifier(TINY_ROBERTA, data.labels, corpus=texts, max_length=32, seed=0)
    return model, tok, train_classifier(model, tok, texts, y, held_texts, held_y, CONFIG, **kwargs)


def test_tiny_roberta_learns_and_reproduces(data, tmp_path):
    model, tok, result = _train(data)
    losses = [p["loss"] for p in result.loss_curve]
    assert losses[-1] < 0.5 * losses[0]
    assert result.metrics["top1"] >= 0.8  # chance is 0.25
    assert len(result.evals) == 4 and result.steps == 4 * 8  # 60 texts (fold 1 + class texts): 8 batches of 8
    # saved and loaded, it gives the same held-out predictions
    save_classifier(model, tok, tmp_path / "m")
    loaded, loaded_tok = load_classifier(tmp_path / "m")
    held = _fold0(data)[2]
    np.testing.assert_allclose(
        predict_logits(loaded, loaded_tok, held), predict_logits(model, tok, held), atol=1e-5
    )
    # the same seed gives the same curve and metrics on CPU
    _, _, again = _train(data)
    assert again.metrics == result.metrics
    assert [p["loss"] for p in again.loss_curve] == losses


class Interrupted(Exception):
    pass


def test_resumed_run_continues_from_its_checkpoint(data, tmp_path):
    _, _, uninterrupted = _train(data)

    def stop_at_12(step, total):
        if step == 12:
            raise Interrupted

    with pytest.raises(Interrupted):
        _train(data, checkpoint_dir=tmp_path / "ckpt", on_step=stop_at_12)
    steps = []
    _, _, resumed = _train(
        data, checkpoint_dir=tmp_path / "ckpt", on_step=lambda step, total: steps.append(step)
    )
    assert resumed.resumed_from_step == 10  # the last checkpoint before the interruption
    assert steps[0] == 11 and steps[-1] == uninterrupted.steps
    assert resumed.metrics == uninterrupted.metrics
    assert resumed.loss_curve == uninterrupted.loss_curve

    def timeless(evals):
        return [{k: v for k, v in e.items() if k != "elapsed_s"} for e in evals]

    assert timeless(resumed.evals) == timeless(uninterrupted.evals)


@pytest.mark.gpu
def test_cuda_training_uses_bf16_and_learns(data):
    import torch

    from tasks.model.devices import DistInfo

    texts, y, held_texts, held_y = _fold0(data)
    model, tok, _ = build_classifier(TINY_ROBERTA, data.labels, corpus=texts, max_length=32, seed=0)
    dtypes = set()
    model.classifier.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    dist = DistInfo(device=torch.device("cuda"))
    result = train_classifier(model, tok, texts, y, held_texts, held_y, CONFIG, dist=dist)
    assert torch.bfloat16 in dtypes  # autocast on CUDA
    assert next(model.parameters()).device.type == "cuda"
    assert result.metrics["top1"] >= 0.8 and result.peak_memory_mb > 0
    on_gpu = predict_logits(model, tok, held_texts)
    on_cpu = predict_logits(model.to("cpu").float(), tok, held_texts)
    assert (on_gpu.argmax(1) == on_cpu.argmax(1)).mean() >= 0.95


@pytest.mark.gpu
def test_minilm_fine_tunes_on_cuda(data):
    import torch

    from tasks.model.classifier import MINILM_OFFLINE
    from tasks.model.devices import DistInfo

    texts, y, held_texts, held_y = _fold0(data)
    model, tok, _ = build_classifier(MINILM_OFFLINE, data.labels, max_length=32, seed=0)
    config = TrainConfig(epochs=3, batch_size=16, max_length=32)
    result = train_classifier(
        model, tok, texts, y, held_texts, held_y, config, dist=DistInfo(device=torch.device("cuda"))
    )
    assert result.metrics["top1"] >= 0.9


def test_epoch_evaluations_read_a_sample_and_final_metrics_all_of_the_held_out_split(data):
    texts, y, held_texts, held_y = _fold0(data)
    model, tok, _ = build_classifier(TINY_ROBERTA, data.labels, corpus=texts, max_length=32, seed=0)
    config = TrainConfig(max_steps=8, batch_size=8, max_length=32, eval_max_samples=10)
    result = train_classifier(model, tok, texts, y, held_texts, held_y, config)
    logits = predict_logits(model, tok, held_texts)
    assert result.metrics["top1"] == classification_metrics(logits, np.array(held_y))["top1"]
    assert all(abs(e["top1"] * 10 - round(e["top1"] * 10)) < 1e-9 for e in result.evals)  # 10 texts each


def test_chunked_metrics_equal_the_metrics_of_all_logits_at_once():
    from tasks.model.evaluation import chunked_metrics, classification_metrics, cross_entropy

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(1003, 40)).astype(np.float32)
    y = rng.integers(0, 40, size=1003)
    logits[np.arange(600), y[:600]] += 3.0  # most rows right, some not
    texts = [str(i) for i in range(len(y))]
    whole = {**classification_metrics(logits, y), "eval_loss": cross_entropy(logits / 2.0, y)}
    calls = []

    def logits_of(chunk):
        calls.append(len(chunk))
        return logits[[int(t) for t in chunk]]

    got = chunked_metrics(logits_of, texts, y, temperature=2.0, chunk_size=100)
    assert calls == [100] * 10 + [3]
    assert got.keys() == whole.keys()
    for key in whole:
        assert got[key] == pytest.approx(whole[key], rel=1e-6)
    assert chunked_metrics(logits_of, [], []) == dict.fromkeys(whole)


def test_trainer_reads_the_length_grouped_batches_of_each_epoch(data):
    """The Trainer's data loader hands the model exactly the batches `length_grouped_batches` draws."""
    from tasks.model.classifier import encode

    texts, y, _, _ = _fold0(data)
    model, tok, _ = build_classifier(TINY_ROBERTA, data.labels, corpus=texts, max_length=32, seed=0)
    seen = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(sorted(kwargs["attention_mask"].sum(1).tolist())),
        with_kwargs=True,
    )
    config = TrainConfig(epochs=2, batch_size=6, max_length=32, length_group=2, eval_max_samples=None)
    train_classifier(model, tok, texts, y, config=config)
    lengths = encode(tok, texts, 32).lengths
    expected = [
        sorted(lengths[b].tolist())
        for epoch in (0, 1)
        for b in length_grouped_batches(lengths, 6, seed=config.seed, epoch=epoch, group=2)
    ]
    assert seen == expected  # both epochs, in order, and the short batch last in each
    per_epoch = len(seen) // 2
    assert len(texts) % 6 and len(seen[per_epoch - 1]) == len(texts) % 6  # a short batch, and it came last


def test_early_stopping_ends_the_run_and_keeps_the_best_epoch(data):
    texts, y, held_texts, held_y = _fold0(data)
    model, tok, _ = build_classifier(TINY_ROBERTA, data.labels, corpus=texts, max_length=32, seed=0)
    # No learning: every evaluation equals the first, so the first stays best and patience 1 stops at 2.
    config = TrainConfig(
        epochs=5,
        batch_size=8,
        max_length=32,
        learning_rate=0.0,
        head_learning_rate=0.0,
        early_stopping_patience=1,
    )
    result = train_classifier(model, tok, texts, y, held_texts, held_y, config)
    assert result.stopped_early and len(result.evals) == 2 and result.best_epoch == 1
    assert result.steps == 2 * 8 and result.epochs_run == 2.0


def test_a_checkpoint_of_another_schedule_is_not_resumed(data, tmp_path):
    _train(data, checkpoint_dir=tmp_path / "ckpt")
    assert any((tmp_path / "ckpt").glob("checkpoint-*"))
    texts, y, held_texts, held_y = _fold0(data)
    model, tok, _ = build_classifier(TINY_ROBERTA, data.labels, corpus=texts, max_length=32, seed=0)
    other = TrainConfig(**{**CONFIG.__dict__, "batch_size": 4})
    result = train_classifier(
        model, tok, texts, y, held_texts, held_y, other, checkpoint_dir=tmp_path / "ckpt"
    )
    assert result.resumed_from_step is None and result.steps == 4 * 16  # 64 texts in batches of 4
    assert result.loss_curve[0]["step"] == 2
