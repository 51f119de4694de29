"""What a curation reports and records: its summary, its `curation_runs` row, its headline figures."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl

from tasks.curate.decisions import REASON_COLUMNS, reason_counts
from tasks.curate.labels import label_metrics
from tasks.curate.plan import ScoringPlan
from tasks.curate.policy import Policy

# Summary entries stored in `curation_runs.metrics` (with the per-class thresholds of the policy).
RUN_METRICS = ("labels", "masked", "candidates", "temperatures", "weights", "evidence", "dropped_by_reason")
# Summary entries shown on the flow run's summary artifact.
HEADLINE = ("scorer", "scorer_reason", "texts", "scored_now", "kept", "dropped", "dropped_by_reason")
# Per-class columns published as the flow run's table artifact.
CLASS_COLUMNS = ("wnid", "name", "images", "texts", "kept", "kept_ratio", "images_with_text", *REASON_COLUMNS)


def curation_summary(
    run_id: str,
    plan: ScoringPlan,
    snapshot: int | None,
    policy: Policy,
    policy_used: dict,
    decided: pl.DataFrame,
    per_class: pl.DataFrame,
    held_out: dict,
    scored_now: int,
) -> dict:
    """The flow's summary: scorer and why, calibration and evidence, policy and thresholds, counts."""
    kept = int(decided["kept"].sum())
    return {
        "run_id": run_id,
        "scorer": plan.scorer,
        "scorer_reason": plan.reason,
        "training_run": plan.training_run,
        "model_ids": plan.model_ids,
        "candidates": plan.candidates,
        "temperatures": plan.kind_temperatures() if plan.scorer == "ensemble" else {},
        "snapshot": snapshot,
        "policy": policy.as_dict(),
        "texts": decided.height,
        "scored_now": scored_now,
        "kept": kept,
        "dropped": decided.height - kept,
        "kept_ratio": kept / decided.height if decided.height else None,
        "classes_without_text": int(per_class.filter((pl.col("texts") > 0) & (pl.col("kept") == 0)).height),
        "classes_without_any_text": int(per_class.filter(pl.col("texts") == 0).height),
        "masked": held_out["masked"],
        "evidence": held_out.get("evidence", {}),
        "weights": plan.kind_weights(),
        "dropped_by_reason": reason_counts(decided),
        "thresholds": {k: v for k, v in policy_used.items() if k != "thresholds"},
    }


def label_summary(decided: pl.DataFrame, labels: pl.DataFrame, label_info: dict) -> dict:
    """Summary entries of a labelled run: the label figures, and drop/keep precision and recall."""
    metrics = label_metrics(decided, labels)
    return {
        "labels": {**label_info, **metrics},
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "keep_precision": metrics["keep_precision"],
        "keep_recall": metrics["keep_recall"],
    }


def run_row(
    summary: dict, policy: Policy, policy_used: dict, started: dt.datetime, finished: dt.datetime
) -> dict:
    """The `curation_runs` row of a finished curation (its summary written in `metrics`)."""
    metrics = {k: summary.get(k) for k in RUN_METRICS} | {"class_thresholds": policy_used.get("thresholds")}
    return {
        "run_id": summary["run_id"],
        "scorer": summary["scorer"],
        "scorer_reason": summary["scorer_reason"],
        "training_run": summary["training_run"],
        "policy": policy.to_json(),
        "snapshot": summary["snapshot"],
        "texts": summary["texts"],
        "kept": summary["kept"],
        "dropped": summary["dropped"],
        "metrics": json.dumps(metrics, default=str),
        "report_path": summary["report"],
        "started_at": started,
        "finished_at": finished,
    }


def headline(summary: dict) -> dict:
    """The few figures of the flow run's summary artifact."""
    return {k: summary[k] for k in HEADLINE} | {
        "policy": summary["policy"],
        "precision": summary.get("precision"),
        "recall": summary.get("recall"),
    }


def class_table(per_class: pl.DataFrame) -> pl.DataFrame:
    """The per-class columns published beside the report."""
    return per_class.select(*CLASS_COLUMNS)
