"""Classification measures shared by training (held-out evaluation) and curation (held-out evidence)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def macro_f1(pred: Sequence | np.ndarray, true: Sequence | np.ndarray) -> float:
    """Mean F1 over the classes present in `true` (a class never predicted scores 0); NaN when empty.

    Labels may be class names or column indices. A class that is predicted but absent from `true`
    has no F1 of its own; its wrong predictions lower the recall of the classes they missed.
    """
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.size == 0:
        return float("nan")
    _, codes = np.unique(np.concatenate([true, pred]), return_inverse=True)
    codes = codes.reshape(-1)
    t, p = codes[: true.size], codes[true.size :]
    n = int(codes.max()) + 1
    tp = np.bincount(t[p == t], minlength=n)
    predicted = np.bincount(p, minlength=n)
    actual = np.bincount(t, minlength=n)
    present = actual > 0
    return float((2 * tp[present] / (predicted[present] + actual[present])).mean())


def top1_accuracy(pred: Sequence | np.ndarray, true: Sequence | np.ndarray) -> float:
    """Share of predictions equal to the truth; NaN when empty."""
    if not len(true):
        return float("nan")
    return float(np.mean(np.asarray(pred, dtype=object) == np.asarray(true, dtype=object)))
