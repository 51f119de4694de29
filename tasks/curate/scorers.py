"""The scorer kinds behind one interface (`.labels`, `.log_proba(texts)`, `.predict_proba(texts)`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.common.probability import log_softmax as _log_softmax
from tasks.common.probability import softmax as _softmax
from tasks.curate.plan import ModelRef, ScorerSpec

DEFAULT_BATCH_SIZE = 256


class TransformerScorer:
    """A saved classifier behind the scorer interface: `.labels`, `.log_proba(texts)`.

    Fast inference: texts are tokenised once without padding, sorted by length and scored in large
    batches padded to their own longest text, under `torch.inference_mode`, in bf16 on CUDA.
    """

    kind = "transformer"

    def __init__(self, model, tokenizer, *, batch_size: int = DEFAULT_BATCH_SIZE, device=None):
        import torch

        from tasks.model.classifier import default_device, labels_of, max_length_of

        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            model = model.to(torch.bfloat16)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length_of(model)
        self.labels = labels_of(model)

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> TransformerScorer:
        from tasks.model.classifier import load_classifier

        model, tokenizer = load_classifier(path)
        return cls(model, tokenizer, **kwargs)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        from tasks.model.classifier import predict_logits

        return predict_logits(
            self.model,
            self.tokenizer,
            [t or "" for t in texts],
            batch_size=self.batch_size,
            max_length=self.max_length,
            device=self.device,
        )

    def log_proba(self, texts: Sequence[str]) -> np.ndarray:
        return _log_softmax(self.logits(texts))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.exp(self.log_proba(texts))


class BaselineScorer:
    """A saved TF-IDF + linear baseline behind the scorer interface."""

    kind = "baseline"

    def __init__(self, model):
        self.model = model
        self.labels = list(model.labels)

    @classmethod
    def load(cls, path: str | Path, **_) -> BaselineScorer:
        from tasks.model.baseline import load_baseline

        return cls(load_baseline(path))

    def log_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = [t or "" for t in texts]
        if hasattr(self.model, "decision_function") and hasattr(self.model, "temperature"):
            return _log_softmax(self.model.decision_function(texts) / self.model.temperature)
        return np.log(np.clip(self.model.predict_proba(texts), 1e-30, None))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.exp(self.log_proba(texts))


class EnsembleScorer:
    """A weighted average of its members' probabilities, each sharpened or softened by its temperature.

    Weights default to equal; the curate flow fits them on held-out texts (`fit_weights`).
    """

    kind = "ensemble"

    def __init__(
        self, members: Sequence, temperatures: Sequence[float], weights: Sequence[float] | None = None
    ):
        if len(members) != len(temperatures) or not members:
            raise ValueError("an ensemble needs one temperature per member")
        self.members = list(members)
        self.temperatures = [float(t) for t in temperatures]
        weights = [1.0] * len(self.members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.members) or sum(weights) <= 0:
            raise ValueError("an ensemble needs one non-negative weight per member, not all zero")
        total = sum(weights)
        self.weights = [w / total for w in weights]
        labels: list[str] = []
        for member in self.members:
            labels.extend(w for w in member.labels if w not in set(labels))
        self.labels = labels
        index = {w: i for i, w in enumerate(labels)}
        self._columns = [np.array([index[w] for w in m.labels]) for m in self.members]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for member, temperature, weight, columns in zip(
            self.members, self.temperatures, self.weights, self._columns, strict=True
        ):
            if weight > 0:
                out[:, columns] += weight * _softmax(member.log_proba(texts) / temperature)
        return out.astype(np.float32)

    def log_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(texts), 1e-30, None))


class KeptBaseline:
    """The baseline one curation run loaded last, handed from its held-out pass to its scoring pass.

    Both passes load the same fold models; the scoring pass starts with the one kept here
    (`path`), so that one is read from disk once. Only one is kept, and it is dropped before any
    other model loads, so no more models are in memory at once than without it. The run creates
    one, hands it to both passes, and `clear()`s it when scoring is done or happens elsewhere.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self.path: str | None = None
        self._scorer: BaselineScorer | None = None

    def load(self, path: str | Path) -> BaselineScorer:
        try:
            key = _file_key(path)
        except OSError:
            key = None
        if key is not None and key == self._key:
            return self._scorer
        self.clear()
        scorer = BaselineScorer.load(path)
        if key is not None:
            self._key, self.path, self._scorer = key, str(path), scorer
        return scorer

    def clear(self) -> None:
        """Drop the kept model (its memory goes once no caller holds it)."""
        self._key = self.path = self._scorer = None


def _file_key(path: str | Path) -> tuple:
    """What identifies a saved baseline's file as it is now (a retrained model is not reused)."""
    from tasks.model.baseline import MODEL_FILE

    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    stat = file.stat()
    return (str(file.resolve()), stat.st_mtime_ns, stat.st_size)


def load_scorer(
    spec_or_ref: ScorerSpec | ModelRef,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device=None,
    members=None,
    kept: KeptBaseline | None = None,
):
    """A ready scorer for a plan entry (or one model row); baselines go through `kept` when given."""
    if isinstance(spec_or_ref, ModelRef):
        ref = spec_or_ref
        if ref.kind == "baseline":
            return kept.load(ref.path) if kept is not None else BaselineScorer.load(ref.path)
        if kept is not None:
            kept.clear()
        if ref.kind in ("frozen", "similarity"):
            from tasks.model.encoders import EncoderScorer

            return EncoderScorer.load(ref.path, device=device)
        return TransformerScorer.load(ref.path, batch_size=batch_size, device=device)
    spec = spec_or_ref
    loaded = members or [
        load_scorer(m, batch_size=batch_size, device=device, kept=kept) for m in spec.members
    ]
    if spec.kind == "ensemble":
        if spec.temperatures is None:
            raise ValueError(f"the ensemble {spec.model_id} is not calibrated")
        return EnsembleScorer(loaded, spec.temperatures, spec.weights)
    return loaded[0]


def summarise(probs: np.ndarray, labels: Sequence[str], true_wnids: Sequence[str]) -> dict[str, np.ndarray]:
    """Per text: p_true, true_rank (1 = best; ties count in the text's favour), pred_wnid, pred_p.

    A class the scorer has no output for gets p_true 0 and rank len(labels) + 1.
    """
    probs = np.asarray(probs)
    index = {w: i for i, w in enumerate(labels)}
    true_idx = np.array([index.get(w, -1) for w in true_wnids], dtype=np.int64)
    known = true_idx >= 0
    rows = np.arange(len(true_idx))
    p_true = np.where(known, probs[rows, np.maximum(true_idx, 0)], 0.0) if len(rows) else np.zeros(0)
    rank = (probs > p_true[:, None]).sum(axis=1) + 1 if len(rows) else np.zeros(0, np.int64)
    rank = np.where(known, rank, len(labels) + 1)
    pred = probs.argmax(axis=1) if len(rows) else np.zeros(0, np.int64)
    labels_arr = np.asarray(labels, dtype=object)
    return {
        "p_true": p_true.astype(np.float64),
        "true_rank": rank.astype(np.int32),
        "pred_wnid": labels_arr[pred] if len(rows) else np.zeros(0, object),
        "pred_p": probs[rows, pred].astype(np.float64) if len(rows) else np.zeros(0),
    }


def union_labels(lists: Sequence[Sequence[str]]) -> list[str]:
    """Every label of the lists, in the order first seen."""
    out: list[str] = []
    seen: set[str] = set()
    for labels in lists:
        for w in labels:
            if w not in seen:
                seen.add(w)
                out.append(w)
    return out


def widen(scored: tuple[np.ndarray, list[str]], labels: Sequence[str]) -> np.ndarray:
    """Log-probabilities on the common label order (about -inf for classes the scorer lacks)."""
    values, own = scored
    if own == list(labels):
        return values
    out = np.full((values.shape[0], len(labels)), -69.0, dtype=np.float32)
    index = {w: i for i, w in enumerate(labels)}
    out[:, [index[w] for w in own]] = values
    return out
