"""Cross-fitting folds: every image belongs to exactly one fold, decided by its id alone."""

from __future__ import annotations

import hashlib

import polars as pl


def fold_of(image_id: str, folds: int, seed: int = 0) -> int:
    """Fold of one image: stable across runs, machines and row order."""
    digest = hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % folds


def assign_folds(image_ids: pl.Series, folds: int, seed: int = 0) -> pl.Series:
    """`fold_of` over a column, for frames."""
    return image_ids.map_elements(lambda i: fold_of(i, folds, seed), return_dtype=pl.Int32).alias("fold")
