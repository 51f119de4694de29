"""Model cards: the `README.md` written beside every saved model (transformer, TF-IDF baseline, encoder heads).

A card says what the model is (base model, head, classes), what it learnt from (warehouse snapshot,
folds, sample counts), how well it did on the images it never saw, what it is for and not for, and how
to load it in a process that has never seen imtext. Everything comes from the model's registry row and
the files in its folder, so a card can be (re)written for any finished model folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CARD_FILE = "README.md"
# Hub names of the offline aliases' weights (for the card's `base_model` metadata).
HUB_NAMES = {"minilm-offline": "sentence-transformers/all-MiniLM-L6-v2"}
_METRICS = (
    ("top1", "top-1 accuracy"),
    ("top5", "top-5 accuracy"),
    ("macro_f1", "macro-F1"),
    ("eval_loss", "cross-entropy"),
)


def folder_labels(model_dir: Path) -> list[str]:
    """The wnid of each output column, read from the saved folder (config.json, baseline.json, encoder.json)."""
    config = model_dir / "config.json"
    if config.exists():
        id2label = json.loads(config.read_text())["id2label"]
        return [id2label[str(i)] for i in range(len(id2label))]
    for meta in ("baseline.json", "encoder.json"):  # the TF-IDF baseline; the frozen-encoder heads
        if (model_dir / meta).exists():
            return list(json.loads((model_dir / meta).read_text())["labels"])
    raise FileNotFoundError(f"no saved model at {model_dir} (config.json, baseline.json or encoder.json)")


def _class_names(labels: list[str]) -> dict[str, str]:
    try:
        from warehouse.catalog import read_classes
    except ImportError:  # pragma: no cover - the catalog ships with imtext
        return {}
    frame = read_classes()
    names = dict(zip(frame["wnid"].to_list(), frame["name"].to_list(), strict=True))
    return {w: names[w] for w in labels if w in names}


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _py(value: object) -> str:
    """A Python string literal of `value` (a path with quotes or backslashes stays valid code)."""
    return json.dumps(str(value))


def _md(text: object) -> str:
    """A value safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


ENCODER_KINDS = ("frozen", "similarity")  # linear heads on a frozen sentence encoder (tasks.model.encoders)


def _versions(kind: str) -> str:
    if kind == "baseline":
        import sklearn

        return f"scikit-learn {sklearn.__version__}"
    import torch
    import transformers

    return f"transformers {transformers.__version__}, torch {torch.__version__}"


def _base_model_hub_name(base_model: str) -> str | None:
    if base_model in HUB_NAMES:
        return HUB_NAMES[base_model]
    looks_like_path = base_model.startswith((".", "/", "~")) or os.path.exists(base_model)
    return None if looks_like_path or base_model in ("tiny-roberta", "tfidf-linear") else base_model


def _alias_note(base_model: str) -> str:
    hub = HUB_NAMES.get(base_model)
    return f" (the weights of `{hub}`, shipped in a Python package)" if hub else ""


def _front_matter(kind: str, base_model: str) -> str:
    library = {"baseline": ["library_name: sklearn"], "transformer": ["library_name: transformers"]}
    lines = [
        "---",
        *library.get(kind, []),  # an encoder head is numpy on top of transformers: neither library alone
        "pipeline_tag: text-classification",
        "tags:",
        "- imtext",
        "- imagenet",
        "- text-classification",
    ]
    hub = _base_model_hub_name(base_model) if kind != "baseline" else None
    if hub:
        lines.append(f"base_model: {hub}")
    return "\n".join([*lines, "---"])


def _folds_text(fold: int, folds: int, seed, train_n, held_n) -> str:
    if fold < 0:
        return (
            f"Trained on every fold ({train_n} texts): the model for texts of new images. It holds nothing "
            f"out, so it has no held-out metrics; its {folds} fold models' metrics estimate its quality."
        )
    others = [str(k) for k in range(folds) if k != fold]
    return (
        f"Fold {fold} of {folds}: trained on the images of fold{'s' if len(others) > 1 else ''} "
        f"{', '.join(others)} ({train_n} texts) and evaluated on "
        f"the {held_n} texts of fold {fold}'s images, which it never saw. Folds split images, not texts "
        f"(seed {seed}), so no image has texts on both sides. Use it to score only fold {fold}'s images "
        "(out-of-fold scoring)."
    )


def _encoder_source(encoder: str) -> str:
    try:
        from tasks.model.classifier import resolve_base_model

        return resolve_base_model(encoder)
    except Exception:  # noqa: BLE001 - the card still names the encoder
        return encoder


def _load_encoder_head_text(folder: Path, encoder: str, example: str) -> str:
    from tasks.model.encoders import EMBED_MAX_LENGTH

    source = _encoder_source(encoder)
    return f"""The folder holds only the head (`head.npz`: `weight`, `bias`) and `encoder.json` (encoder,
labels, temperature); the encoder is referenced, not copied. Plain transformers, torch and numpy load it:

```python
import json

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

folder = {_py(folder)}
meta = json.load(open(f"{{folder}}/encoder.json"))
head = np.load(f"{{folder}}/head.npz")
encoder = "{source}"  # `{encoder}`
tokenizer = AutoTokenizer.from_pretrained(encoder)
model = AutoModel.from_pretrained(encoder).eval()

texts = ["{example}"]
batch = tokenizer(texts, padding=True, truncation=True, max_length={EMBED_MAX_LENGTH}, return_tensors="pt")
with torch.no_grad():
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
mask = batch["attention_mask"].unsqueeze(-1).float()
embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=1).numpy()
logits = (embeddings @ head["weight"].T + head["bias"]) / meta["temperature"]
[meta["labels"][i] for i in logits.argmax(1)]  # wnids; softmax(logits) gives probabilities
```

Inside imtext: `tasks.model.encoders.EncoderScorer.load({_py(folder)})`."""


def _load_text(kind: str, pooling: str | None, folder: Path, example: str, max_length) -> str:
    if kind == "baseline":
        return f"""The baseline is a pickled Python object (joblib). Unpickling imports its classes from
imtext's `tasks.model.baseline`, so it loads where imtext is installed, with the scikit-learn version named
above. A joblib file runs code when it is loaded: load only files you trust.

```python
import joblib

model = joblib.load({_py(folder / "model.joblib")})
model.predict(["{example}"])         # wnids
model.predict_proba(["{example}"])   # one column per class, in model.labels order
```

Inside imtext: `tasks.model.baseline.load_baseline({_py(folder)})`. The wnids are also listed, in column order,
in `baseline.json`."""
    truncation = f"texts are cut at {max_length} tokens, as in training" if max_length else "as in training"
    if pooling == "mean":
        remote = """This model averages the encoder's token states (mean pooling) before its linear head.
transformers has no such head for this encoder, so its code is saved beside the weights in
`modeling_mean_pooled.py` (it imports only torch and transformers; read it before trusting it) and
`config.json` names it in `auto_map`. Loading therefore needs **`trust_remote_code=True`**; without it,
loading stops with an error (the model type `mean-pooled-...` is not a stock one) instead of
silently putting an untrained head on the encoder.

"""
        flag = ", trust_remote_code=True"
    else:
        remote = "This is a stock transformers sequence-classification model: no custom code is needed.\n\n"
        flag = ""
    return f"""{remote}```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

folder = {_py(folder)}
classify = pipeline("text-classification", model=folder{flag})
classify(["{example}"], truncation=True, top_k=5)  # labels are wnids; truncation=True: {truncation}

model = AutoModelForSequenceClassification.from_pretrained(folder{flag})
tokenizer = AutoTokenizer.from_pretrained(folder)
logits = model(**tokenizer(["{example}"], truncation=True, return_tensors="pt")).logits
model.config.id2label[int(logits.argmax(-1))]  # a wnid
```

Inside imtext: `tasks.model.classifier.load_classifier({_py(folder)})`."""


def render_model_card(
    row: dict, labels: list[str], *, folder: str | Path, class_names: dict[str, str] | None = None
) -> str:
    """The markdown card of the model described by its registry `row`, with `labels` its output wnids."""
    params = row.get("params") or {}
    metrics = row.get("metrics") or {}
    kind = params.get("kind", "transformer")
    base_model = str(row.get("base_model") or params.get("base_model"))
    fold, folds = int(row["fold"]), int(row["folds"])
    names = class_names if class_names is not None else _class_names(labels)
    pooling = params.get("pooling")
    max_length = params.get("max_length")
    first = names.get(labels[0], labels[0]).split(",")[0] if labels else "thing"
    example = f"a photo of my {first}".replace('"', "'")

    if kind == "baseline":
        what = (
            "TF-IDF features (word 1-2 grams and character 3-5 grams) and a linear SVM; probabilities are a "
            f"softmax of the SVM margins over a temperature fitted on the held-out split "
            f"({_fmt(params.get('temperature'))})."
        )
        head = "linear SVM over TF-IDF"
    elif kind in ENCODER_KINDS:
        what = (
            (
                f"A multinomial logistic regression on the L2-normalised, mean-pooled embeddings of the frozen "
                f"sentence encoder `{base_model}`, trained on the same texts and folds as the fine-tuned "
                "transformer."
                if kind == "frozen"
                else f"Each class is the normalised mean embedding, by the frozen sentence encoder `{base_model}`, "
                "of its class texts (WordNet gloss and names, Wikipedia summary, description files); a text's "
                "logits are its cosine similarity to every class. It never learns from image texts."
            )
            + f" Logits are divided by a temperature fitted on held-out texts ({_fmt(params.get('temperature'))})."
        )
        head = f"{kind}: a linear head on frozen embeddings"
    else:
        from_scratch = base_model == "tiny-roberta"
        what = (
            "A small RoBERTa built from scratch, with a byte-level BPE tokenizer trained on its training texts."
            if from_scratch
            else f"`{base_model}`{_alias_note(base_model)} fine-tuned with a new classification head."
        )
        head = {
            "mean": "mean of the token states, then a linear layer",
            "cls": "the architecture's own first-token head",
        }.get(pooling, str(pooling))

    model_rows = [
        ("model id", f"`{row['model_id']}`"),
        ("kind", {"baseline": "TF-IDF + linear SVM baseline"}.get(kind, kind)),
        ("base model", f"`{base_model}`"),
        ("head", head),
        ("classes", f"{len(labels)} ImageNet classes (outputs labelled with wnids)"),
    ]
    if kind == "transformer" and max_length:
        model_rows.append(("max tokens", str(max_length)))
    model_rows += [
        (
            "trained",
            f"run `{row.get('run_id')}` on {row.get('device')}, {_fmt(metrics.get('train_time_s'), 1)} s",
        ),
        ("software", _versions(kind)),
    ]
    metric_rows = "\n".join(f"| {label} | {_fmt(metrics.get(key))} |" for key, label in _METRICS)
    class_rows = "\n".join(f"| {i} | {w} | {_md(names.get(w, ''))} |" for i, w in enumerate(labels))
    cap = params.get("max_train_samples")
    held_note = (
        "none: this model saw every fold (see its fold models)"
        if fold < 0
        else f"fold {fold}, {metrics.get('heldout_samples')} texts"
    )
    return f"""{_front_matter(kind, base_model)}

# {row["model_id"]}

A text → ImageNet-class classifier trained by imtext: given a short text written
about an image (a Flickr title, description or tags, a caption), it predicts which of {len(labels)}
ImageNet classes the image belongs to. Its outputs are labelled with WordNet ids (wnids, e.g.
`{labels[0] if labels else "n01440764"}`); the table at the end names them. {what}

## Model

| | |
|---|---|
{chr(10).join(f"| {k} | {_md(v)} |" for k, v in model_rows)}

## Training data

- Warehouse snapshot **{row.get("snapshot")}** (DuckLake; `... AT (VERSION => {
        row.get("snapshot")
    })` reads exactly
  these rows again); data fingerprint `{params.get("data_fingerprint")}`.
- Examples: every image text without a junk mark, labelled with its image's class, plus the class texts
  (WordNet glosses, Wikipedia summaries, description files), which are in every fold and never held out.
- {_folds_text(fold, folds, params.get("seed"), metrics.get("train_samples"), metrics.get("heldout_samples"))}
- Registered in the warehouse table `models` under this model id, with the same metrics and parameters.
- Training texts: {metrics.get("train_samples")}{f" (capped at {cap})" if cap else ""}; seed {
        params.get("seed")
    }.

## Held-out metrics

On the held-out split ({held_note}); labels are the images' classes.

| metric | value |
|---|---|
{metric_rows}

Scoring speed when measured: {_fmt(metrics.get("texts_per_s"), 1)} texts/s on {row.get("device")}.

## Intended use

- Scoring how well a text describes its image's ImageNet class, to curate image-text pairs: a fold model
  scores only the images of its own fold (it never saw them); the model on every fold scores texts of
  new images.
- Research on ImageNet with text: routing, filtering or weak labelling of short image descriptions.

## Limits

- A closed set: it knows only these {len(labels)} classes and always answers with one of them, also for a
  text about something else. Use the probability (or the margin to the second class) to abstain.
- Labels are weak: every text of an image gets the image's class, though many texts (camera names,
  dates, places) say nothing about it. Held-out metrics are measured against these same noisy labels.
- Trained on short, mostly English web texts; other languages and long documents are out of its domain.
- The training texts are user-written Flickr and caption texts: the model can carry their biases and
  may have memorised rare strings from them. ImageNet's terms of access (non-commercial research) and
  the licences of the harvested texts apply to what it learnt; the weights inherit the base model's
  licence.
- Not for decisions about people, and not a replacement for looking at the images.

## How to load

{
        _load_encoder_head_text(Path(folder), base_model, example)
        if kind in ENCODER_KINDS
        else _load_text(kind, pooling, Path(folder), example, max_length)
    }

## Parameters

```json
{json.dumps(params, indent=1, sort_keys=True, default=str)}
```

## Classes

<details><summary>{len(labels)} classes, in output order</summary>

| output | wnid | name |
|---|---|---|
{class_rows}

</details>
"""


def write_model_card(model_dir: str | Path, row: dict, *, class_names: dict[str, str] | None = None) -> Path:
    """Write `README.md` into a saved model folder from its registry row; returns its path."""
    model_dir = Path(model_dir)
    labels = folder_labels(model_dir)
    text = render_model_card(row, labels, folder=model_dir.resolve(), class_names=class_names)
    path = model_dir / CARD_FILE
    tmp = path.with_name(CARD_FILE + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def finish_model_folder(model_dir: str | Path, row: dict) -> Path:
    """Make a saved model folder self-describing and loadable without imtext: its card, and for a
    mean-pooled transformer saved by an older imtext, the code and `auto_map` beside the weights."""
    model_dir = Path(model_dir)
    if (row.get("params") or {}).get("kind", "transformer") == "transformer":
        from tasks.model.classifier import make_portable

        make_portable(model_dir)
    return write_model_card(model_dir, {k: v for k, v in row.items() if k != "created_at"})
