"""Loading imtext's own saved classifiers never stops to ask whether to run their saved code."""

from __future__ import annotations

import builtins
import sys

from tests.unit.test_classifier import one_torch_thread  # noqa: F401 - autouse fixture


def test_loading_a_saved_mean_pooled_model_asks_nothing(tmp_path, monkeypatch):
    from tasks.model.classifier import build_classifier, labels_of, load_classifier, save_classifier

    corpus = ["a goldfish in a bowl", "a tench in a lake", "an orange goldfish", "an old tench"] * 8
    model, tokenizer, pooling = build_classifier("tiny-roberta", ["n01440764", "n01443537"], corpus=corpus)
    assert pooling == "mean"
    save_classifier(model, tokenizer, tmp_path / "m")

    asked: list[str] = []

    def no_questions(prompt="", *_args, **_kwargs):
        asked.append(prompt)
        return "n"

    # as on a terminal: transformers asks only when stdin is a tty
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(builtins, "input", no_questions)
    loaded, tok = load_classifier(tmp_path / "m")
    assert labels_of(loaded) == ["n01440764", "n01443537"] and tok("goldfish")["input_ids"]
    # and a saved classifier as the base model of the next training
    again, _, _ = build_classifier(str(tmp_path / "m"), ["n01440764", "n01443537"], corpus=corpus)
    assert again.config.num_labels == 2
    assert asked == []
