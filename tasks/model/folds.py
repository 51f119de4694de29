"""Cross-fitting folds: every image belongs to exactly one fold, and twins share it.

An image's fold comes from a hash of its group's key, so it is stable across runs, machines and row
order. A group is a set of images joined by a shared description: Flickr users paste one description
onto many photos, and a text judged by a model that trained on its twin would look more certain than
it is. Two images are joined when one of their texts has the same normalised content (case,
punctuation and spacing ignored) and is long enough to be a pasted description rather than a common
word (`MIN_TWIN_CHARS`, `MIN_TWIN_WORDS`) but not so common that it is boilerplate
(`MAX_TWIN_IMAGES`), or when they share an uploader (where one is known). A
group's key is its smallest image id; an image with no twin is its own group, so without twins the
folds are exactly `fold_of(image_id)`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import polars as pl

MIN_TWIN_CHARS = 16
MIN_TWIN_WORDS = 3
# A text under more images than this is boilerplate (a licence line, "Uploaded from my phone"): it
# says nothing of a class, and joining by it put 62% of ImageNet-shaped captions in one group, so
# one fold held 81% of the images.
MAX_TWIN_IMAGES = 100
MAX_GROUP_IMAGES = 500
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def fold_of(key: str, folds: int, seed: int = 0) -> int:
    """Fold of one image (or group) key: stable across runs, machines and row order."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % folds


def assign_folds(image_ids: pl.Series, folds: int, seed: int = 0) -> pl.Series:
    """`fold_of` over a column, for frames."""
    return image_ids.map_elements(lambda i: fold_of(i, folds, seed), return_dtype=pl.Int32).alias("fold")


def twin_key(text: str | None) -> str | None:
    """The normalised content two twin texts share, or None for a text too short to count."""
    if not text:
        return None
    norm = _NOT_WORD.sub(" ", text.casefold()).strip()
    if len(norm) < MIN_TWIN_CHARS or norm.count(" ") + 1 < MIN_TWIN_WORDS:
        return None
    return norm


def image_groups(
    image_ids: Sequence[str], texts: Sequence[str | None], owners: Sequence[str | None] | None = None
) -> dict[str, str]:
    """image_id -> group key (the smallest image id of its group), from rows of (image, text[, owner]).

    A join that would make a group larger than `MAX_GROUP_IMAGES` is not made: chains of shared
    texts can otherwise reach across classes into one group that fills a fold. Rows are joined in
    sorted order, so the groups do not depend on the order they come in.
    """
    parent: dict[str, str] = {}
    size: dict[str, int] = {}

    def find(x: str) -> str:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb and size[ra] + size[rb] <= MAX_GROUP_IMAGES:
            if rb < ra:
                ra, rb = rb, ra
            parent[rb] = ra  # the smaller id stays the root, so the key is the group's minimum
            size[ra] += size.pop(rb)

    owners = owners if owners is not None else [None] * len(image_ids)
    rows = sorted(
        (image_id, key or "", owner or "")
        for image_id, key, owner in zip(image_ids, map(twin_key, texts), owners, strict=True)
        if image_id is not None
    )
    images_of: dict[str, set[str]] = {}
    for image_id, key, _ in rows:
        if key:
            images_of.setdefault(key, set()).add(image_id)
    boilerplate = {key for key, images in images_of.items() if len(images) > MAX_TWIN_IMAGES}
    first_seen: dict[tuple[str, str], str] = {}
    for image_id, key, owner in rows:
        if image_id not in parent:
            parent[image_id], size[image_id] = image_id, 1
        for link in (("text", "" if key in boilerplate else key), ("owner", owner)):
            if not link[1]:
                continue
            other = first_seen.setdefault(link, image_id)
            if other != image_id:
                union(other, image_id)
    return {image_id: find(image_id) for image_id in parent}


def group_folds(frame: pl.DataFrame, folds: int, seed: int = 0) -> pl.DataFrame:
    """One row per image of `frame` (columns image_id, text, optional owner): image_id, group, fold."""
    owners = frame["owner"].to_list() if "owner" in frame.columns else None
    groups = image_groups(frame["image_id"].to_list(), frame["text"].to_list(), owners)
    keys = list(groups)
    group = [groups[k] for k in keys]
    return pl.DataFrame(
        {
            "image_id": pl.Series(keys, dtype=pl.String),
            "group": pl.Series(group, dtype=pl.String),
            "fold": pl.Series([fold_of(g, folds, seed) for g in group], dtype=pl.Int32),
        }
    )
