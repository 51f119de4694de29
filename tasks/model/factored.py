"""The baseline's linear model for large training sets: a softmax whose weights are factored.

A one-vs-rest linear SVM costs about (texts x classes) per pass and keeps a dense classes x features
weight matrix: at ImageNet size (1.3 million texts, 1000 classes, ~1 million TF-IDF features) that is
hours of fitting and 8 GB of float64 weights. Here the same sparse TF-IDF rows are mapped to `dim`
numbers (a weighted sum of one learned vector per feature) and then to class margins, trained with
cross-entropy by Adam over a few epochs: the cost per text is (its features x dim + dim x classes),
and the weights are features x dim + dim x classes.

Fitting needs torch; scoring is numpy and scipy only, so loading a fitted baseline stays light.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class FactoredSoftmax:
    """Class margins `(X @ embed) @ out + bias` for sparse rows X; `classes_` as in scikit-learn."""

    def __init__(self, embed: np.ndarray, out: np.ndarray, bias: np.ndarray):
        self.embed = np.ascontiguousarray(embed, dtype=np.float32)
        self.out = np.ascontiguousarray(out, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.classes_ = np.arange(self.out.shape[1])

    def decision_function(self, features) -> np.ndarray:
        hidden = np.asarray(features @ self.embed, dtype=np.float32)
        return hidden @ self.out + self.bias


def fit_factored(
    features,
    y: np.ndarray,
    n_classes: int,
    *,
    dim: int = 64,
    epochs: int = 5,
    batch_size: int = 256,
    lr: float = 0.01,
    seed: int = 0,
    on_epoch: Callable[[int, float], object] | None = None,
) -> FactoredSoftmax:
    """Fit on CSR rows `features` with integer labels `y` in [0, n_classes); `on_epoch(epoch, mean loss)`."""
    import torch

    features = features.tocsr()
    n_rows, n_features = features.shape
    if n_rows != len(y):
        raise ValueError("features and labels differ in length")
    generator = torch.Generator().manual_seed(seed)
    embed = torch.nn.EmbeddingBag(n_features, dim, mode="sum", sparse=True)
    out = torch.nn.Linear(dim, n_classes)
    with torch.no_grad():
        embed.weight.normal_(0.0, 0.01, generator=generator)
        out.weight.normal_(0.0, dim**-0.5, generator=generator)
        out.bias.zero_()
    sparse_opt = torch.optim.SparseAdam(list(embed.parameters()), lr=lr)
    dense_opt = torch.optim.Adam(out.parameters(), lr=lr)
    targets = torch.from_numpy(np.asarray(y, dtype=np.int64))
    indices = features.indices.astype(np.int64)
    weights = features.data.astype(np.float32)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(n_rows)
        total = 0.0
        for start in range(0, n_rows, batch_size):
            rows = order[start : start + batch_size]
            bag, offsets, bag_weights = _bags(features.indptr, indices, weights, rows)
            logits = out(embed(bag, offsets, per_sample_weights=bag_weights))
            loss = torch.nn.functional.cross_entropy(logits, targets[rows])
            sparse_opt.zero_grad()
            dense_opt.zero_grad()
            loss.backward()
            sparse_opt.step()
            dense_opt.step()
            total += float(loss.detach()) * len(rows)
        if on_epoch is not None:
            on_epoch(epoch, total / max(n_rows, 1))
    return FactoredSoftmax(
        embed.weight.detach().numpy(), out.weight.detach().numpy().T, out.bias.detach().numpy()
    )


def _bags(indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray, rows: np.ndarray):
    """EmbeddingBag inputs (feature ids, bag offsets, per-feature weights) of the CSR rows `rows`."""
    import torch

    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    offsets = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    # Positions of every stored value of the chosen rows, in row order, without a Python loop.
    positions = np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))
    return (
        torch.from_numpy(indices[positions]),
        torch.from_numpy(offsets),
        torch.from_numpy(weights[positions]),
    )
