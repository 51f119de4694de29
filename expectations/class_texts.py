"""The `class_texts` suite: descriptions of the classes (WordNet, Wikipedia, user files)."""

from __future__ import annotations

import great_expectations.expectations as gxe

from expectations.base import (
    Suite,
    blocking,
    has_rows,
    known,
    natural_key,
    present,
    provenance_checks,
    text_checks,
)
from tasks.harvest.text import MAX_TEXT_CHARS  # where the harvest cleaner cuts texts

SUITE = Suite(
    name="class_texts",
    table="class_texts",
    categorical=("source", "run_id"),
    checks=(
        has_rows("no class text harvested yet: run imtext harvest classes"),
        *natural_key("text_id"),
        present("wnid"),
        known("wnid_in_classes", "wnid", "every text describes one of the 1000 classes"),
        *text_checks(MAX_TEXT_CHARS, key="(wnid, source, text)"),
        *provenance_checks(),
        blocking(
            "source_known",
            gxe.ExpectColumnValuesToMatchRegex(column="source", regex=r"^(?:wordnet|wikipedia|file:.+)$"),
            "wordnet, wikipedia or file:<name>",
        ),
    ),
)
