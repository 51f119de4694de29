"""Building, saving and loading classifiers: tiny-roberta, minilm-offline, the baseline, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.model.baseline import BASELINE_NAME, load_baseline, save_baseline, train_baseline
from tasks.model.classifier import (
    MINILM_OFFLINE,
    TINY_ROBERTA,
    ModelNotFoundError,
    build_classifier,
    labels_of,
    load_classifier,
    predict_logits,
    predict_proba,
    save_classifier,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared machine: one thread is faster than contended ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


WNIDS = ["n01440764", "n01443537", "n02085620"]
WORDS = {"n01440764": "tench fish", "n01443537": "goldfish bowl", "n02085620": "chihuahua dog"}
TEXTS = [f"my {WORDS[w]} number {i} on a sunny day" for i in range(6) for w in WNIDS]
LABELS = [w for _ in range(6) for w in WNIDS]


def test_tiny_roberta_round_trip(tmp_path):
    model, tokenizer, pooling = build_classifier(TINY_ROBERTA, WNIDS, corpus=TEXTS, max_length=32, seed=1)
    assert pooling == "mean"
    before = predict_logits(model, tokenizer, TEXTS[:4])
    assert before.shape == (4, 3)
    save_classifier(model, tokenizer, tmp_path / "m")
    loaded, tok = load_classifier(tmp_path / "m")
    assert labels_of(loaded) == WNIDS
    assert loaded.config.id2label[2] == "n02085620"
    enc = tok(TEXTS[:2], padding=True, return_tensors="pt")
    logits = loaded(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    assert tuple(logits.shape) == (2, 3)
    np.testing.assert_allclose(predict_logits(loaded, tok, TEXTS[:4]), before, atol=1e-5)
    proba = predict_proba(loaded, tok, TEXTS[:4])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_same_seed_same_tiny_model():
    a, tok_a, _ = build_classifier(TINY_ROBERTA, WNIDS, corpus=TEXTS, max_length=32, seed=3)
    b, tok_b, _ = build_classifier(TINY_ROBERTA, WNIDS, corpus=TEXTS, max_length=32, seed=3)
    np.testing.assert_array_equal(predict_logits(a, tok_a, TEXTS), predict_logits(b, tok_b, TEXTS))


def test_minilm_offline_loads_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer, pooling = build_classifier(MINILM_OFFLINE, WNIDS, max_length=32)
    assert pooling == "mean"  # a sentence-transformers checkpoint trained for mean pooling
    assert model.config.imtext_base_model == MINILM_OFFLINE
    save_classifier(model, tokenizer, tmp_path / "minilm")
    loaded, tok = load_classifier(tmp_path / "minilm")
    np.testing.assert_allclose(
        predict_logits(loaded, tok, TEXTS[:3]), predict_logits(model, tokenizer, TEXTS[:3]), atol=1e-4
    )


def test_missing_model_names_the_offline_aliases(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(ModelNotFoundError) as err:
        build_classifier("no-such-org/no-such-model", WNIDS)
    assert MINILM_OFFLINE in str(err.value) and TINY_ROBERTA in str(err.value)
    with pytest.raises(ModelNotFoundError, match="no model folder"):
        build_classifier("./not/a/folder", WNIDS)
    with pytest.raises(FileNotFoundError):
        load_classifier(tmp_path / "nothing-here")


def test_baseline_round_trip(tmp_path):
    train_t, train_y = TEXTS[:12], LABELS[:12]
    held_t, held_y = TEXTS[12:], LABELS[12:]
    model = train_baseline(train_t, train_y, classes=WNIDS, eval_texts=held_t, eval_labels=held_y)
    assert model.labels == WNIDS
    proba = model.predict_proba(held_t)
    assert proba.shape == (len(held_t), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert [WNIDS[i] for i in proba.argmax(axis=1)] == held_y
    save_baseline(model, tmp_path / "b", extra={"model_id": "x"})
    loaded = load_baseline(tmp_path / "b")
    assert loaded.labels == WNIDS and BASELINE_NAME == "tfidf-linear"
    np.testing.assert_allclose(loaded.predict_proba(held_t), proba, atol=1e-6)


def test_baseline_keeps_columns_for_classes_without_training_texts():
    model = train_baseline(TEXTS[:6], LABELS[:6], classes=WNIDS + ["n09999999"])
    assert model.predict_proba(["tench fish"]).shape == (1, 4)
    assert model.predict(["goldfish bowl today"]) == ["n01443537"]
