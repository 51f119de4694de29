"""The `image_texts` suite: captions, titles, descriptions and tags of single images."""

from __future__ import annotations

import great_expectations.expectations as gxe

from expectations.base import Suite, blocking, has_rows, present, provenance_checks, text_checks, unique
from tasks.harvest.text import MAX_TEXT_CHARS  # where the harvest cleaner cuts texts

SOURCES = ("imagenet-captions", "flickr", "embedded")

SUITE = Suite(
    name="image_texts",
    table="image_texts",
    categorical=("source", "field", "run_id"),
    checks=(
        has_rows("no image text harvested yet: run imtext harvest images"),
        present("text_id"),
        unique("text_id"),
        present("image_id"),
        blocking(
            "image_id_in_images",
            gxe.ExpectColumnValuesToBeNull(column="unknown_image_id"),
            "every text belongs to an ingested image",
        ),
        present("field"),
        *text_checks(MAX_TEXT_CHARS, key="(image_id, source, field, text)"),
        *provenance_checks(),
        blocking(
            "source_known",
            gxe.ExpectColumnValuesToBeInSet(column="source", value_set=list(SOURCES)),
            "one of " + ", ".join(SOURCES),
        ),
    ),
)
