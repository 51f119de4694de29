"""The `text_scores` suite: out-of-fold scores and keep/drop decisions, once curation has run."""

from __future__ import annotations

import great_expectations.expectations as gxe

from expectations.base import Suite, blocking, known, present


def probability(column: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=0, max_value=1)


SUITE = Suite(
    name="text_scores",
    table="text_scores",
    categorical=("model_id",),
    skip_when_empty=True,
    checks=(
        present("text_id"),
        present("model_id"),
        blocking(
            "one_row_per_text_and_model",
            gxe.ExpectColumnValuesToBeNull(column="duplicate_key"),
            "the natural key (text_id, model_id)",
        ),
        present("p_true"),
        blocking("p_true_in_0_1", probability("p_true"), "a probability"),
        blocking(
            "true_rank_at_least_1",
            gxe.ExpectColumnValuesToBeBetween(column="true_rank", min_value=1),
            "rank 1 is the top prediction",
        ),
        blocking("pred_p_in_0_1", probability("pred_p")),
        present("kept"),
        known(
            "text_id_known",
            "text_id",
            "a score for a text that is in neither image_texts nor class_texts",
            is_blocking=False,
        ),
        known("pred_wnid_in_classes", "pred_wnid", is_blocking=False),
    ),
)
