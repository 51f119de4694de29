"""The ImageNet-1k class catalog bundled with the warehouse (see imagenet_classes.tsv's header)."""

from __future__ import annotations

import functools
from pathlib import Path

import polars as pl

CATALOG_FILE = Path(__file__).with_name("imagenet_classes.tsv")
CATALOG_SOURCE = "wordnet:timm-imagenet-info"


@functools.cache
def read_classes() -> pl.DataFrame:
    """The 1000 classes: class_index, wnid, name, lemmas, gloss, in the standard order."""
    return pl.read_csv(
        CATALOG_FILE,
        separator="\t",
        comment_prefix="#",
        quote_char=None,
        schema={
            "class_index": pl.Int32,
            "wnid": pl.String,
            "name": pl.String,
            "lemmas": pl.String,
            "gloss": pl.String,
        },
    )


def wnid_set() -> frozenset[str]:
    return frozenset(read_classes()["wnid"].to_list())
