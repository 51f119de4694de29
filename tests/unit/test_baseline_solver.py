"""The baseline's solver choice, and the factored softmax it uses on large training sets."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.common.errors import InputError
from tasks.model.baseline import BaselineConfig, load_baseline, pick_solver, save_baseline, train_baseline
from tests.unit.test_classifier import LABELS, TEXTS, WNIDS, one_torch_thread  # noqa: F401 - autouse fixture


def test_auto_picks_the_svm_up_to_the_limit_and_factored_above():
    config = BaselineConfig(svm_max_texts=100)
    assert pick_solver(config, 100) == "svm"
    assert pick_solver(config, 101) == "factored"
    assert pick_solver(BaselineConfig(solver="svm"), 10**7) == "svm"
    assert pick_solver(BaselineConfig(solver="factored"), 1) == "factored"
    with pytest.raises(InputError, match="unknown baseline solver 'sgd'"):
        pick_solver(BaselineConfig(solver="sgd"), 10)


def _texts(n_classes: int, per_class: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    rng = np.random.default_rng(seed)
    classes = [f"n{i:08d}" for i in range(n_classes)]
    names = [f"creature{i}" for i in range(n_classes)]
    filler = "my photo of the from a trip today nice light with friends at home".split()
    texts, labels = [], []
    for _ in range(per_class):
        for wnid, name in zip(classes, names, strict=True):
            words = list(rng.choice(filler, size=4)) + [name]
            rng.shuffle(words)
            texts.append(" ".join(words))
            labels.append(wnid)
    return texts, labels, classes


def test_factored_learns_separable_classes_and_round_trips(tmp_path):
    texts, labels, classes = _texts(30, 12)
    held_texts, held_labels, _ = _texts(30, 3, seed=1)
    config = BaselineConfig(solver="factored", epochs=15, dim=16)
    model = train_baseline(
        texts, labels, classes=classes, eval_texts=held_texts, eval_labels=held_labels, config=config
    )
    assert model.solver == "factored"
    proba = model.predict_proba(held_texts)
    assert proba.shape == (len(held_texts), 30)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    accuracy = np.mean([classes[i] == w for i, w in zip(proba.argmax(axis=1), held_labels, strict=True)])
    assert accuracy > 0.95
    save_baseline(model, tmp_path / "b")
    loaded = load_baseline(tmp_path / "b")
    assert loaded.solver == "factored"
    np.testing.assert_allclose(loaded.predict_proba(held_texts), proba, atol=1e-6)


def test_factored_keeps_columns_for_classes_without_texts_and_the_same_seed_gives_the_same_model():
    config = BaselineConfig(solver="factored", epochs=3, dim=8)
    a = train_baseline(TEXTS, LABELS, classes=[*WNIDS, "n09999999"], config=config)
    b = train_baseline(TEXTS, LABELS, classes=[*WNIDS, "n09999999"], config=config)
    scores = a.decision_function(["goldfish bowl today", "an empty text of unseen words"])
    assert scores.shape == (2, 4)
    np.testing.assert_array_equal(
        scores, b.decision_function(["goldfish bowl today", "an empty text of unseen words"])
    )
    assert a.predict(["goldfish bowl today"]) == ["n01443537"]


def test_an_old_pickled_baseline_without_a_solver_reads_as_the_svm(tmp_path):
    model = train_baseline(TEXTS, LABELS, classes=WNIDS)
    del model.__dict__["solver"]  # what a baseline pickled before the factored solver holds
    save_baseline(model, tmp_path / "old")
    assert load_baseline(tmp_path / "old").solver == "svm"
