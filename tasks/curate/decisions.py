"""Keep/drop decisions: the policy applied to scored texts, drop reasons, per-class counts."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import polars as pl

from tasks.curate.policy import (
    DEFAULT_MIN_P_TRUE,
    DEFAULT_TOP_K,
    REASON_BELOW,
    REASON_JUNK,
    REASON_NONE,
    REASON_OTHER,
    Policy,
    decide,
    reason_kind,
)

# Per-class counts of dropped texts, one column per reason.
REASON_COLUMNS = ("dropped_other_class", "dropped_no_class", "dropped_junk", "dropped_below_threshold")


def policy_from(
    min_p_true: float | None, top_k: int, junk_min_p_true: float, target_precision: float | None
) -> Policy:
    """The policy of a curate run's options; a target precision starts from the fixed rule (labels
    then choose its threshold)."""
    policy = Policy(
        min_p_true=min_p_true,
        top_k=top_k,
        junk_min_p_true=junk_min_p_true,
        threshold_source="default" if (min_p_true, top_k) == (DEFAULT_MIN_P_TRUE, DEFAULT_TOP_K) else "user",
    )
    if target_precision is not None and policy.min_p_true is None:
        policy = dataclasses.replace(policy, min_p_true=policy.fixed_threshold)
    return policy


def is_junk(marks: pl.Series | Sequence[str | None]) -> np.ndarray:
    """A junk mark is any non-empty string (the harvesting step writes the reason)."""
    series = marks if isinstance(marks, pl.Series) else pl.Series(list(marks), dtype=pl.String)
    return series.fill_null("").str.strip_chars().str.len_chars().gt(0).to_numpy()


def apply_policy(decided: pl.DataFrame, policy: Policy) -> tuple[pl.DataFrame, dict]:
    """`kept` and `reason` (why a dropped text was dropped) for the policy; and what the policy used.

    In the relative policy only out-of-fold scores set the class thresholds.
    """
    evidence = (decided["role"] == "out-of-fold").to_numpy() if "role" in decided.columns else None
    kept, reasons, used = decide(
        policy,
        wnid=decided["wnid"].to_list(),
        p_true=decided["p_true"].to_numpy(),
        true_rank=decided["true_rank"].to_numpy(),
        pred_wnid=decided["pred_wnid"].to_list(),
        pred_p=decided["pred_p"].to_numpy(),
        junk=is_junk(decided["junk"]),
        evidence=evidence,
    )
    return (
        decided.with_columns(
            pl.Series("kept", kept, dtype=pl.Boolean), pl.Series("reason", reasons, dtype=pl.String)
        ),
        used,
    )


def reason_counts(decided: pl.DataFrame) -> dict[str, int]:
    """Dropped texts per reason kind (`another class` without its wnid)."""
    kinds = [reason_kind(r) for r in decided["reason"].to_list() if r is not None]
    return {k: kinds.count(k) for k in sorted(set(kinds))}


def per_class_stats(con, decided: pl.DataFrame) -> pl.DataFrame:
    """Per class with ingested images: images, texts, kept texts, kept ratio, images left with text,
    and the dropped texts by reason."""
    from warehouse.db import load_query

    classes = con.execute(load_query("curate_class_images")).pl()
    reason = pl.col("reason").fill_null("")
    texts = decided.group_by("wnid").agg(
        pl.len().alias("texts"),
        pl.col("kept").sum().cast(pl.Int64).alias("kept"),
        pl.col("image_id").filter(pl.col("kept")).n_unique().alias("images_with_text"),
        (reason.str.starts_with(REASON_OTHER)).sum().cast(pl.Int64).alias("dropped_other_class"),
        (reason == REASON_NONE).sum().cast(pl.Int64).alias("dropped_no_class"),
        (reason == REASON_JUNK).sum().cast(pl.Int64).alias("dropped_junk"),
        (reason == REASON_BELOW).sum().cast(pl.Int64).alias("dropped_below_threshold"),
    )
    counts = ["texts", "kept", "images_with_text", *REASON_COLUMNS]
    out = classes.join(texts, on="wnid", how="left").with_columns(pl.col(c).fill_null(0) for c in counts)
    return out.with_columns(
        pl.when(pl.col("texts") > 0).then(pl.col("kept") / pl.col("texts")).alias("kept_ratio")
    ).sort("class_index")
