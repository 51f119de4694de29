"""The `images` suite: one row per ingested image file, each in a known class and split."""

from __future__ import annotations

import great_expectations.expectations as gxe

from expectations.base import Suite, blocking, has_rows, known, natural_key, one_of, present, unique, warning

SPLITS = ("train", "val", "test")

SUITE = Suite(
    name="images",
    table="images",
    categorical=("wnid", "split"),
    checks=(
        has_rows("no image ingested yet: run imtext ingest"),
        *natural_key("image_id", "the natural key: a repeated load must never add a row twice"),
        present("path"),
        unique("path", "one file is one image"),
        present("wnid"),
        known("wnid_in_classes", "wnid", "every image's class is one of the 1000 classes"),
        present("split"),
        one_of("split", SPLITS),
        present("width"),
        present("height"),
        blocking(
            "width_positive", gxe.ExpectColumnValuesToBeBetween(column="width", min_value=1), "decoded pixels"
        ),
        blocking(
            "height_positive",
            gxe.ExpectColumnValuesToBeBetween(column="height", min_value=1),
            "decoded pixels",
        ),
        present("sha256"),
        blocking(
            "sha256_format",
            gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$"),
            "64 lowercase hex characters",
        ),
        warning(
            "sha256_single_class",
            gxe.ExpectColumnValuesToBeNull(column="sha256_in_other_class"),
            "byte-identical files filed under different classes: one label is wrong",
        ),
    ),
)
