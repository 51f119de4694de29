"""The `models` suite: trained classifiers, once training has run."""

from __future__ import annotations

import great_expectations.expectations as gxe

from expectations.base import Suite, natural_key, present, warning

SUITE = Suite(
    name="models",
    table="models",
    skip_when_empty=True,
    checks=(
        *natural_key("model_id"),
        present("path"),
        present("base_model", is_blocking=False),
        warning(
            "metrics_are_json",
            gxe.ExpectColumnValuesToBeJsonParseable(column="metrics"),
            "metrics are stored as a JSON object",
        ),
    ),
)
