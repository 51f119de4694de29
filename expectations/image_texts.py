"""The `image_texts` suite: captions, titles, descriptions and tags of single images."""

from __future__ import annotations

from expectations.base import (
    Suite,
    has_rows,
    known,
    natural_key,
    one_of,
    present,
    provenance_checks,
    text_checks,
)
from tasks.harvest.text import MAX_TEXT_CHARS  # where the harvest cleaner cuts texts

SOURCES = ("imagenet-captions", "flickr", "embedded")

SUITE = Suite(
    name="image_texts",
    table="image_texts",
    categorical=("source", "field", "run_id"),
    checks=(
        has_rows("no image text harvested yet: run imtext harvest images"),
        *natural_key("text_id"),
        present("image_id"),
        known("image_id_in_images", "image_id", "every text belongs to an ingested image"),
        present("field"),
        *text_checks(MAX_TEXT_CHARS, key="(image_id, source, field, text)"),
        *provenance_checks(),
        one_of("source", SOURCES),
    ),
)
