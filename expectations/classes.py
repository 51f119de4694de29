"""The `classes` suite: the 1000 ImageNet classes in the standard order, one row each."""

from __future__ import annotations

import great_expectations.expectations as gxe

from expectations.base import Suite, blocking, natural_key, present, warning

SUITE = Suite(
    name="classes",
    table="classes",
    checks=(
        blocking(
            "exactly_1000_rows",
            gxe.ExpectTableRowCountToEqual(value=1000),
            "ImageNet-1k has 1000 classes; a model head is sized by them",
        ),
        *natural_key("class_index", "two classes with one index would swap labels"),
        blocking(
            "class_index_in_0_999",
            gxe.ExpectColumnValuesToBeBetween(column="class_index", min_value=0, max_value=999),
        ),
        *natural_key("wnid"),
        blocking(
            "wnid_format",
            gxe.ExpectColumnValuesToMatchRegex(column="wnid", regex=r"^n\d{8}$"),
            "a WordNet noun synset id: n and eight digits",
        ),
        present("gloss"),
        blocking(
            "gloss_not_blank",
            gxe.ExpectColumnValuesToMatchRegex(column="gloss", regex=r"\S"),
            "every class needs its WordNet definition",
        ),
        present("name", is_blocking=False),
        warning(
            "has_class_texts",
            gxe.ExpectColumnValuesToBeBetween(column="class_texts", min_value=1),
            "classes without any description: run imtext harvest classes",
        ),
    ),
)
