"""Labelled relevance: a labels file, precision/recall of the decisions, the PR curve and its threshold."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl

from tasks.common.errors import InputError
from tasks.curate.decisions import is_junk
from tasks.curate.policy import Policy


def load_labels(path: str | Path) -> pl.DataFrame:
    """A JSONL file of `{"text_id": ..., "relevant": true|false}` as a frame (the last line wins)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no labels file at {path}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text_id, relevant = row["text_id"], row["relevant"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}:{number}: expected a JSON object with text_id and relevant") from None
        if not isinstance(relevant, bool) and relevant not in (0, 1):
            raise InputError(f"{path}:{number}: relevant must be true or false, not {relevant!r}")
        rows.append((str(text_id), bool(relevant)))
    if not rows:
        raise InputError(f"{path} holds no labels")
    frame = pl.DataFrame(rows, schema={"text_id": pl.String, "relevant": pl.Boolean}, orient="row")
    return frame.unique("text_id", keep="last", maintain_order=True)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def relevance_metrics(kept, relevant) -> dict:
    """Precision and recall of the keep and of the drop decisions against labelled relevance.

    `precision`/`recall` are those of the drop decisions (of the dropped texts, how many were
    irrelevant; of the irrelevant texts, how many were dropped); `keep_precision` is the purity of
    what the dataset keeps and `keep_recall` the share of relevant texts it keeps.
    """
    kept = np.asarray(kept, dtype=bool)
    relevant = np.asarray(relevant, dtype=bool)
    tp_keep = int((kept & relevant).sum())
    fp_keep = int((kept & ~relevant).sum())
    fn_keep = int((~kept & relevant).sum())
    tn_keep = int((~kept & ~relevant).sum())
    out = {
        "labelled": int(kept.size),
        "relevant": int(relevant.sum()),
        "irrelevant": int((~relevant).sum()),
        "kept": int(kept.sum()),
        "dropped": int((~kept).sum()),
        "keep_precision": _ratio(tp_keep, tp_keep + fp_keep),
        "keep_recall": _ratio(tp_keep, tp_keep + fn_keep),
        "drop_precision": _ratio(tn_keep, tn_keep + fn_keep),
        "drop_recall": _ratio(tn_keep, tn_keep + fp_keep),
    }
    out["precision"] = out["drop_precision"]
    out["recall"] = out["drop_recall"]
    return out


def pr_curve(p_true, relevant, *, always=None, floor=None) -> pl.DataFrame:
    """Precision/recall of the kept texts for every threshold on `p_true` (one row per threshold).

    `always` marks texts kept whatever the threshold (the rank rule); `floor` is a per-text lower
    bound on the threshold (the junk rule: a junk text needs `p_true >= junk_min_p_true` too).
    """
    p = np.asarray(p_true, dtype=np.float64)
    y = np.asarray(relevant, dtype=bool)
    always = np.zeros(p.shape, bool) if always is None else np.asarray(always, dtype=bool)
    floor = np.zeros(p.shape) if floor is None else np.asarray(floor, dtype=np.float64)
    total_relevant = int(y.sum())
    base_tp, base_n = int((always & y).sum()), int(always.sum())
    # A text the threshold can keep is kept for every threshold <= its p_true (if above its floor).
    free = ~always & (p >= floor)
    order = np.argsort(-p[free], kind="stable")
    values = p[free][order]
    tp = np.cumsum(y[free][order])
    n = np.arange(1, values.size + 1)
    # Keep the last position of each distinct value: the threshold t = value keeps all >= t.
    last = np.r_[values[1:] != values[:-1], True] if values.size else np.array([], bool)
    thresholds = np.r_[values[last], np.nextafter(1.0, 2.0)] if values.size else np.array([1.0])
    kept = np.r_[base_n + n[last], base_n] if values.size else np.array([base_n])
    true_pos = np.r_[base_tp + tp[last], base_tp] if values.size else np.array([base_tp])
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(kept > 0, true_pos / np.maximum(kept, 1), np.nan)
        recall = true_pos / total_relevant if total_relevant else np.full(kept.shape, np.nan)
    frame = pl.DataFrame(
        {"threshold": thresholds, "kept": kept, "precision": precision, "recall": recall},
        schema={"threshold": pl.Float64, "kept": pl.Int64, "precision": pl.Float64, "recall": pl.Float64},
    )
    return frame.with_columns(pl.col("precision").fill_nan(None)).sort("threshold")


def choose_threshold(curve: pl.DataFrame, target_precision: float) -> tuple[float, bool]:
    """The threshold with the highest recall whose kept texts reach `target_precision`.

    Returns (threshold, reached). When no threshold reaches the target, the most precise one.
    """
    if not 0.0 < target_precision <= 1.0:
        raise InputError(f"--target-precision must be within (0, 1], not {target_precision}")
    usable = curve.filter(pl.col("precision").is_not_null())
    if usable.is_empty():
        return 1.0, False
    reaching = usable.filter(pl.col("precision") >= target_precision - 1e-12)
    if not reaching.is_empty():
        best = reaching.sort(["recall", "threshold"], descending=[True, True]).row(0, named=True)
        return min(float(best["threshold"]), 1.0), True
    best = usable.sort(["precision", "recall"], descending=[True, True]).row(0, named=True)
    return min(float(best["threshold"]), 1.0), False


def tune_policy(
    decided: pl.DataFrame, labels: pl.DataFrame, policy: Policy, target_precision: float | None
) -> tuple[Policy, pl.DataFrame, dict]:
    """Precision/recall curve on the labelled texts, and the policy for a target precision if asked."""
    joined = decided.join(labels, on="text_id", how="inner")
    if joined.is_empty():
        raise InputError(
            f"none of the {labels.height} labelled text ids was scored: do the labels belong to this warehouse?"
        )
    junk = is_junk(joined["junk"])
    rank = joined["true_rank"].to_numpy()
    always = ~junk & (rank <= policy.top_k) & (policy.top_k > 0)
    floor = np.where(junk, policy.junk_min_p_true, 0.0)
    curve = pr_curve(joined["p_true"].to_numpy(), joined["relevant"].to_numpy(), always=always, floor=floor)
    info: dict = {"labelled_scored": joined.height}
    if target_precision is not None:
        threshold, reached = choose_threshold(curve, target_precision)
        policy = dataclasses.replace(
            policy, min_p_true=threshold, threshold_source=f"labels:target_precision={target_precision:g}"
        )
        info.update(target_precision=target_precision, target_reached=reached, chosen_threshold=threshold)
    return policy, curve, info


def label_metrics(decided: pl.DataFrame, labels: pl.DataFrame) -> dict:
    """Precision/recall of the decisions in `decided` (needs `kept`) on the labelled texts."""
    joined = decided.join(labels, on="text_id", how="inner")
    return relevance_metrics(joined["kept"].to_numpy(), joined["relevant"].to_numpy())


def evaluate_curation(con, labels: str | Path | pl.DataFrame) -> dict:
    """Precision/recall of the latest curation's keep/drop decisions against a labels file."""
    from warehouse.db import load_query

    labels = labels if isinstance(labels, pl.DataFrame) else load_labels(labels)
    decisions = con.execute(load_query("curate_latest_decisions")).pl()
    if decisions.is_empty():
        raise InputError("no curation has finished yet: run `imtext curate` first")
    out = label_metrics(decisions, labels)
    out["unscored_labels"] = labels.height - out["labelled"]
    return out
