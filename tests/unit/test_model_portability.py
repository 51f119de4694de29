"""Saved classifiers are products: they load and predict the same classes in a process without imtext,
and each carries a model card."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tasks.model.classifier import (
    MINILM_OFFLINE,
    TINY_ROBERTA,
    build_classifier,
    check_base_model,
    labels_of,
    load_classifier,
    make_portable,
    predict_logits,
    save_classifier,
)
from tasks.model.data import TrainingData
from tasks.model.fits import RunSpec, fit_baseline_fold, fit_transformer_fold
from tasks.model.training import TrainConfig
from tests.unit.test_classifier import one_torch_thread  # noqa: F401 - autouse fixture
from tests.unit.test_training import CLASS_WORDS, synthetic_texts

WNIDS = list(CLASS_WORDS)
LONG = " ".join(["my old teapot with tea in the kettle at home"] * 12)  # beyond 32 tokens: truncated
PROBES = [
    "goldfish in an orange bowl",
    "my retriever puppy playing fetch",
    "porcelain teapot and a kettle",
    "an angler with a tench from the lake",
    "photo taken at home with friends",
    LONG,
]

# Runs in a plain interpreter: -I (no PYTHON* variables, no script folder, no user site) and -S (no
# .pth files, so imtext's editable install is not found); site-packages is then added as a bare path.
CHILD = r"""
import json, sys

site, folder, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.append(site)
for name in ("tasks", "flows", "warehouse"):
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"imtext's package {name!r} is importable")
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

out = {}
try:
    AutoModelForSequenceClassification.from_pretrained(folder)
    out["without_flag"] = "loaded"
except ValueError:
    out["without_flag"] = "refused"
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
with torch.no_grad():
    logits = model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits
out["auto"] = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]
out["logits"] = logits.tolist()
classify = pipeline("text-classification", model=folder, trust_remote_code=True)
out["pipeline"] = [r["label"] for r in classify(texts, truncation=True)]
out["id2label"] = {str(k): v for k, v in model.config.id2label.items()}
out["class"] = type(model).__name__
card = open(f"{folder}/README.md").read().split("## How to load", 1)[1]
exec(card.split("```python", 1)[1].split("```", 1)[0], {})  # the card's own loading code runs as written
out["card_code"] = "ran"
out["imtext_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("tasks", "flows", "warehouse"))
print("RESULT", json.dumps(out))  # transformers' trust prompt also writes to stdout
"""


def load_outside_imtext(folder: Path, texts: list[str], workdir: Path, child: str = CHILD) -> dict:
    """Load `folder` with plain transformers in a fresh interpreter that cannot import imtext."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "load_model.py"
    script.write_text(child)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "IMTEXT_"))}
    env |= {"HF_HOME": str(workdir / "hf-home"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            str(script),
            sysconfig.get_paths()["purelib"],
            str(folder),
            json.dumps(texts),
        ],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.rsplit("RESULT ", 1)[1])


def imtext_predictions(folder: Path, texts: list[str]) -> list[str]:
    model, tokenizer = load_classifier(folder)
    labels = labels_of(model)
    return [labels[i] for i in predict_logits(model, tokenizer, texts).argmax(axis=1)]


def training_data(images_per_class: int = 10) -> TrainingData:
    """Texts of CLASS_WORDS' classes with folds by image (two folds) and one class text each."""
    rng = random.Random(0)
    rows = []
    for wnid in WNIDS:
        rows.append((f"c-{wnid}", " ".join(CLASS_WORDS[wnid]), wnid, None, "wordnet", None, "class", -1))
        for n in range(images_per_class):
            for j, text in enumerate(synthetic_texts(rng, wnid, 2)):
                rows.append((f"{wnid}_{n}-{j}", text, wnid, f"{wnid}_{n}", "test", "title", "image", n % 2))
    columns = ["text_id", "text", "wnid", "image_id", "source", "field", "origin", "fold"]
    frame = pl.DataFrame(rows, schema=columns, orient="row").with_columns(pl.col("fold").cast(pl.Int32))
    return TrainingData(frame, WNIDS, snapshot=7, folds=2, seed=0)


def spec(tmp_path: Path, base_model: str, max_steps: int) -> RunSpec:
    config = TrainConfig(max_steps=max_steps, batch_size=8, max_length=32, eval_batch_size=64)
    return RunSpec(base_model, 2, config, run_id="run-portable", models_dir=tmp_path / "models")


@pytest.mark.parametrize(
    ("base_model", "max_steps"),
    [(TINY_ROBERTA, 40), pytest.param(MINILM_OFFLINE, 12, marks=pytest.mark.slow)],
)
def test_saved_model_predicts_the_same_classes_without_imtext(tmp_path, monkeypatch, base_model, max_steps):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    row, _ = fit_transformer_fold(training_data(), 0, spec(tmp_path, base_model, max_steps))
    folder = Path(row["path"])
    expected = imtext_predictions(folder, PROBES)
    outside = load_outside_imtext(folder, PROBES, tmp_path / "elsewhere")
    assert outside["imtext_modules"] == [] and outside["card_code"] == "ran"
    assert outside["id2label"] == {str(i): w for i, w in enumerate(WNIDS)}
    assert outside["class"] == (
        "MeanPooledRobertaForSequenceClassification"
        if base_model == TINY_ROBERTA
        else "MeanPooledBertForSequenceClassification"
    )
    assert outside["auto"] == expected
    model, tokenizer = load_classifier(folder)  # not just the same winner: the same numbers
    np.testing.assert_allclose(
        np.array(outside["logits"]), predict_logits(model, tokenizer, PROBES), atol=1e-4
    )
    assert outside["pipeline"] == expected
    assert len(set(expected)) > 1  # a trained model, not one answer for everything
    # without trust_remote_code the custom head is refused, never replaced by a random one
    assert outside["without_flag"] == "refused"
    assert (folder / "modeling_mean_pooled.py").exists()


def test_model_cards_describe_the_transformer_and_the_baseline(tmp_path):
    data = training_data(images_per_class=6)
    run = spec(tmp_path, TINY_ROBERTA, 8)
    row, _ = fit_transformer_fold(data, 1, run)
    card = (Path(row["path"]) / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    assert f"# {row['model_id']}" in card
    assert "Warehouse snapshot **7**" in card and data.fingerprint in card
    assert "Fold 1 of 2: trained on the images of fold 0 " in card
    assert f"| top-1 accuracy | {row['metrics']['top1']:.3f} |" in card
    assert "trust_remote_code=True" in card and 'pipeline("text-classification"' in card
    assert "| 3 | n04398044 | teapot |" in card  # classes named, in output order
    assert "## Intended use" in card and "## Limits" in card

    everything, _ = fit_transformer_fold(data, -1, run)
    card = (Path(everything["path"]) / "README.md").read_text()
    assert "Trained on every fold" in card and "| top-1 accuracy | n/a |" in card

    baseline = fit_baseline_fold(data, 0, run)
    card = (Path(baseline["path"]) / "README.md").read_text()
    assert "library_name: sklearn" in card and "joblib.load(" in card and "model.joblib" in card
    assert "trust_remote_code" not in card
    assert f"| top-1 accuracy | {baseline['metrics']['top1']:.3f} |" in card

    # a re-run reuses the finished folders and keeps their cards
    (Path(baseline["path"]) / "README.md").unlink()
    assert fit_baseline_fold(data, 0, run)["reused"]
    assert fit_transformer_fold(data, 1, run)[0]["reused"]
    assert (Path(baseline["path"]) / "README.md").exists()


# Runs the "How to load" code of an encoder-head card with the probe texts, without imtext.
ENCODER_CHILD = r"""
import json, sys

site, folder, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.append(site)
card = open(f"{folder}/README.md").read().split("## How to load", 1)[1]
code = card.split("```python", 1)[1].split("```", 1)[0]
namespace = {}
exec(code.replace('texts = [', f'texts = {texts!r} or ['), namespace)
labels = [namespace["meta"]["labels"][i] for i in namespace["logits"].argmax(1)]
imtext = sorted(m for m in sys.modules if m.split(".")[0] in ("tasks", "flows", "warehouse"))
print("RESULT", json.dumps({"labels": labels, "imtext_modules": imtext}))
"""


@pytest.mark.slow
def test_encoder_head_cards_load_without_imtext(tmp_path, monkeypatch):
    from tasks.model.encoders import ENCODER_KINDS, EncoderScorer, embed_training_texts, fit_encoder_fold

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = training_data(images_per_class=4)
    run = spec(tmp_path, TINY_ROBERTA, 1)
    embeddings, _ = embed_training_texts(data, MINILM_OFFLINE)
    for kind in ENCODER_KINDS:
        row = fit_encoder_fold(data, 0, run, embeddings, kind, MINILM_OFFLINE)
        folder = Path(row["path"])
        scorer = EncoderScorer.load(folder)
        expected = [scorer.labels[i] for i in scorer.predict_proba(PROBES).argmax(axis=1)]
        card = (folder / "README.md").read_text()
        assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card and "library_name" not in card
        outside = load_outside_imtext(folder, PROBES, tmp_path / f"elsewhere-{kind}", child=ENCODER_CHILD)
        assert outside == {"labels": expected, "imtext_modules": []}, kind


def test_a_cls_model_needs_no_custom_code(tmp_path):
    texts = [t for w in WNIDS for t in synthetic_texts(random.Random(1), w, 4)]
    model, tokenizer, pooling = build_classifier(
        TINY_ROBERTA, WNIDS, corpus=texts, pooling="cls", max_length=32
    )
    assert pooling == "cls"
    save_classifier(model, tokenizer, tmp_path / "cls")
    config = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert config["model_type"] == "roberta" and "auto_map" not in config
    assert not (tmp_path / "cls" / "modeling_mean_pooled.py").exists()


def test_a_mean_pooled_model_saved_by_an_older_imtext_is_made_portable(tmp_path):
    texts = [t for w in WNIDS for t in synthetic_texts(random.Random(2), w, 4)]
    model, tokenizer, _ = build_classifier(TINY_ROBERTA, WNIDS, corpus=texts, max_length=32, seed=4)
    folder = save_classifier(model, tokenizer, tmp_path / "old")
    before = predict_logits(model, tokenizer, PROBES)
    # what older imtext wrote: the stock model type, no code, no auto_map
    config = json.loads((folder / "config.json").read_text())
    config.pop("auto_map")
    config |= {"model_type": "roberta", "architectures": ["RobertaForSequenceClassification"]}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_mean_pooled.py").unlink()
    assert predict_logits(*load_classifier(folder), PROBES) == pytest.approx(before, abs=1e-5)

    assert make_portable(folder) is True
    assert json.loads((folder / "config.json").read_text())["model_type"] == "mean-pooled-roberta"
    assert (folder / "modeling_mean_pooled.py").exists()
    assert predict_logits(*load_classifier(folder), PROBES) == pytest.approx(before, abs=1e-5)
    assert make_portable(folder) is False  # already portable


def test_a_saved_classifier_is_a_base_model_for_the_next_training(tmp_path):
    texts = [t for w in WNIDS for t in synthetic_texts(random.Random(3), w, 4)]
    model, tokenizer, _ = build_classifier(TINY_ROBERTA, WNIDS, corpus=texts, max_length=32, seed=5)
    folder = str(save_classifier(model, tokenizer, tmp_path / "first"))
    assert check_base_model(folder) == str(Path(folder).resolve())

    again, again_tok, pooling = build_classifier(folder, WNIDS, max_length=32)
    assert pooling == "mean" and type(again).__name__ == "MeanPooledRobertaForSequenceClassification"
    # same classes: the head comes along, so the predictions are the saved model's
    assert predict_logits(again, again_tok, PROBES) == pytest.approx(
        predict_logits(model, tokenizer, PROBES), abs=1e-5
    )

    fewer, _, _ = build_classifier(folder, WNIDS[:2], max_length=32)  # other classes: a new head
    assert labels_of(fewer) == WNIDS[:2] and fewer.classifier.out_features == 2
    first_token, _, pooling = build_classifier(folder, WNIDS, pooling="cls", max_length=32)
    assert pooling == "cls" and first_token.config.model_type == "roberta"
