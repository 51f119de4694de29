"""Held-out measures of a classifier's logits, and how many texts per second a scorer reads."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from tasks.common.metrics import macro_f1


def classification_metrics(logits: np.ndarray, y: np.ndarray) -> dict:
    """top1, top5 and macro-F1 (over the classes present in `y`) of logits against true column indices."""
    if len(y) == 0:
        return {"top1": None, "top5": None, "macro_f1": None}
    y = np.asarray(y)
    pred = logits.argmax(axis=1)
    return {
        "top1": float((pred == y).mean()),
        "top5": float(_in_top5(logits, y).mean()),
        "macro_f1": macro_f1(pred, y),
    }


def _in_top5(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row: whether the true column is among the five largest logits."""
    k = min(5, logits.shape[1])
    return (np.argpartition(-logits, k - 1, axis=1)[:, :k] == y[:, None]).any(axis=1)


def _row_nll(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row: the negative log-likelihood of the true column under softmax(logits)."""
    z = logits - logits.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]


def chunked_metrics(
    logits_of: Callable[[Sequence[str]], np.ndarray],
    texts: Sequence[str],
    y: Sequence[int] | np.ndarray,
    *,
    temperature: float = 1.0,
    chunk_size: int = 16_384,
) -> dict:
    """`classification_metrics` and `eval_loss` of `logits_of(texts)`, scored `chunk_size` texts at a time.

    The same figures as scoring every text at once, in the memory of one chunk: a million held-out
    texts of 1000 classes are 4 GB of logits at once, and several such temporaries in the metrics.
    """
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return {"top1": None, "top5": None, "macro_f1": None, "eval_loss": None}
    pred = np.empty(len(y), dtype=np.int64)
    in_top5 = np.empty(len(y), dtype=bool)
    nll = np.empty(len(y), dtype=np.float64)
    for start in range(0, len(y), chunk_size):
        logits = np.asarray(logits_of(list(texts[start : start + chunk_size])), dtype=np.float32)
        rows = slice(start, start + len(logits))
        truth = y[rows]
        pred[rows] = logits.argmax(axis=1)
        in_top5[rows] = _in_top5(logits, truth)
        nll[rows] = _row_nll(logits.astype(np.float64) / temperature, truth)
    return {
        "top1": float((pred == y).mean()),
        "top5": float(in_top5.mean()),
        "macro_f1": macro_f1(pred, y),
        "eval_loss": float(nll.mean()),
    }


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(_row_nll(logits, y).mean())


def scoring_speed(score: Callable[[list[str]], object], texts: Sequence[str], limit: int = 2000) -> float:
    """Texts per second of `score` over up to `limit` texts, tokenisation included."""
    sample = list(texts[:limit])
    if not sample:
        return float("nan")
    started = time.perf_counter()
    score(sample)
    return len(sample) / max(time.perf_counter() - started, 1e-9)
