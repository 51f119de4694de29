"""The curate flow: score every image text out-of-fold, keep or drop it, report the decisions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Annotated

import polars as pl
from prefect import flow, get_run_logger
from pydantic import Field

from flows import artifacts, runners
from flows.runtime import FLOW_RETRY, final_on_user_error
from tasks import report as reports
from tasks import scoring
from tasks.errors import InputError


@flow(name="curate", **FLOW_RETRY)
@final_on_user_error()
def curate_flow(
    min_p_true: Annotated[
        float | None,
        Field(
            ge=0.0,
            le=1.0,
            description="fixed rule: keep a text when its class probability p_true is at least this "
            "(default: none, the relative per-class policy)",
        ),
    ] = scoring.DEFAULT_MIN_P_TRUE,
    top_k: Annotated[
        int, Field(ge=0, description="or when its class is among the scorer's top k guesses (0: rule off)")
    ] = scoring.DEFAULT_TOP_K,
    scorer: Annotated[
        str,
        Field(
            description="transformer, baseline, frozen, similarity, ensemble (every kind trained), or auto "
            "(the ensemble, weighted by held-out likelihood, when two kinds or more were trained)"
        ),
    ] = "auto",
    training_run: Annotated[
        str | None,
        Field(description="run id of the training run whose models score (default: latest complete)"),
    ] = None,
    labels: Annotated[
        str | None,
        Field(description="JSONL of {text_id, relevant}: measure the decisions, draw the PR curve"),
    ] = None,
    target_precision: Annotated[
        float | None,
        Field(
            gt=0.0,
            le=1.0,
            description="with labels: pick min_p_true as the lowest threshold reaching this precision",
        ),
    ] = None,
    batch_size: Annotated[
        int, Field(ge=1, description="texts per forward pass")
    ] = scoring.DEFAULT_BATCH_SIZE,
    junk_min_p_true: Annotated[
        float,
        Field(ge=0.0, le=1.0, description="a junk-marked text needs p_true at least this (and min_p_true)"),
    ] = scoring.DEFAULT_JUNK_MIN_P_TRUE,
    masked_texts: Annotated[
        int, Field(ge=0, description="held-out texts for the masked-class-name evaluation (0: skip)")
    ] = 500,
    device: Annotated[
        str | None, Field(description="torch device for the transformer (default: cuda if present)")
    ] = None,
    task_runner: Annotated[str | None, Field(description="for scoring: " + runners.TASK_RUNNER_HELP)] = None,
) -> dict:
    """Score every image text with a model that never saw it, store keep/drop decisions, write the report."""
    from flows.runtime import Progress, open_warehouse, run_id
    from flows.settings import load_settings

    logger = get_run_logger()
    settings = load_settings()
    if target_precision is not None and labels is None:
        raise InputError("--target-precision needs --labels (a JSONL file of {text_id, relevant})")
    label_frame = scoring.load_labels(labels) if labels else None
    policy = scoring.Policy(
        min_p_true=min_p_true,
        top_k=top_k,
        junk_min_p_true=junk_min_p_true,
        threshold_source="default"
        if (min_p_true, top_k) == (scoring.DEFAULT_MIN_P_TRUE, scoring.DEFAULT_TOP_K)
        else "user",
    )
    if target_precision is not None and policy.min_p_true is None:
        policy = dataclasses.replace(policy, min_p_true=policy.fixed_threshold)
    rid = run_id()
    started = dt.datetime.now(dt.UTC)
    wh = open_warehouse(settings)
    try:
        con = wh.con
        plan = scoring.plan_scoring(scoring.read_models(con), scorer, training_run)
        logger.info("scorer %s from training run %s: %s", plan.scorer, plan.training_run, plan.reason)
        snapshot = wh.current_snapshot()
        texts = scoring.read_texts(con, plan.snapshot)
        if texts.is_empty():
            raise InputError("no image texts to score: run `imtext harvest images` first")
        assigned = scoring.assign_scorers(texts, plan, scoring.read_folds(con, plan.training_run))

        stored = scoring.read_ensembles(con, plan.model_ids) if plan.scorer == "ensemble" else {}
        for spec in plan.specs.values():
            if spec.model_id in stored:
                spec.temperatures = stored[spec.model_id]["temperatures"]
                spec.weights = stored[spec.model_id]["weights"]
        uncalibrated = plan.scorer == "ensemble" and any(s.temperatures is None for s in plan.specs.values())
        # Several kinds trained: calibrate them anyway (2,000 texts) so the masked-name table and the
        # held-out evidence show every kind and the ensemble.
        calibrate = uncalibrated or (len(plan.by_kind) >= 2 and masked_texts > 0)
        held_out = scoring.held_out_task(
            plan,
            assigned,
            scoring.lemma_table(con),
            calibrate=calibrate,
            masked_texts=masked_texts,
            batch_size=batch_size,
            device=device,
            seed=plan.seed,
            temperatures=_stored_temperatures(plan),
        )
        if plan.scorer == "ensemble":
            scoring.register_ensembles(
                wh, scoring.ensemble_rows(plan, held_out["temperatures"], rid, held_out.get("weights"))
            )

        pending = scoring.pending_texts(con, assigned)
        logger.info("%d of %d texts need a score", pending.height, assigned.height)
        scored_now = 0
        if not pending.is_empty():
            progress = Progress(pending.height, "scoring texts")
            # A transformer already uses every core of its machine: a local cluster gets one
            # scoring process unless IMTEXT_WORKERS says otherwise.
            with runners.fan_out(task_runner, settings.workers or 1) as runner:
                if runner is None:
                    scored_now = scoring.score_texts_task(
                        wh,
                        plan,
                        pending,
                        policy,
                        rid,
                        batch_size=batch_size,
                        device=device,
                        on_batch=progress.advance,
                    )
                else:
                    scored_now = runners.score_on(
                        runner, wh, plan, pending, policy, rid, progress, batch_size=batch_size, device=device
                    )
            progress.close()
        decided = scoring.read_decisions(con, assigned)

        curve = None
        label_info: dict | None = None
        if label_frame is not None:
            policy, curve, label_info = scoring.tune_policy(decided, label_frame, policy, target_precision)
            if target_precision is not None:
                logger.info(
                    "min_p_true %.4f from the labels (target precision %s %s)",
                    policy.min_p_true,
                    target_precision,
                    "reached" if label_info["target_reached"] else "NOT reached",
                )
        decided, policy_used = scoring.apply_policy(decided, policy)
        kept = int(decided["kept"].sum())
        per_class = scoring.per_class_stats(con, decided)
        summary = {
            "run_id": rid,
            "scorer": plan.scorer,
            "scorer_reason": plan.reason,
            "training_run": plan.training_run,
            "model_ids": plan.model_ids,
            "candidates": plan.candidates,
            "temperatures": _stored_temperatures(plan) if plan.scorer == "ensemble" else {},
            "snapshot": snapshot,
            "policy": policy.as_dict(),
            "texts": decided.height,
            "scored_now": scored_now,
            "kept": kept,
            "dropped": decided.height - kept,
            "kept_ratio": kept / decided.height if decided.height else None,
            "classes_without_text": int(
                per_class.filter((pl.col("texts") > 0) & (pl.col("kept") == 0)).height
            ),
            "classes_without_any_text": int(per_class.filter(pl.col("texts") == 0).height),
            "masked": held_out["masked"],
            "evidence": held_out.get("evidence", {}),
            "weights": _stored_weights(plan),
            "dropped_by_reason": scoring.reason_counts(decided),
            "thresholds": {k: v for k, v in policy_used.items() if k != "thresholds"},
        }
        if label_frame is not None:
            metrics = scoring.label_metrics(decided, label_frame)
            summary["labels"] = {**label_info, **metrics}
            summary.update(precision=metrics["precision"], recall=metrics["recall"])
            summary.update(keep_precision=metrics["keep_precision"], keep_recall=metrics["keep_recall"])
        finished = dt.datetime.now(dt.UTC)
        summary["finished_at"] = finished.isoformat()
        html = reports.curation_report_html(
            summary,
            p_true=decided["p_true"].to_numpy(),
            kept=decided["kept"].to_numpy(),
            per_class=per_class,
            curve=curve,
        )
        report = reports.write_report(html, settings.reports_dir, f"curate-{rid}.html")
        summary["report"] = str(report)
        run_row = {
            "run_id": rid,
            "scorer": plan.scorer,
            "scorer_reason": plan.reason,
            "training_run": plan.training_run,
            "policy": policy.to_json(),
            "snapshot": snapshot,
            "texts": decided.height,
            "kept": kept,
            "dropped": decided.height - kept,
            "metrics": json.dumps(
                {
                    k: summary.get(k)
                    for k in (
                        "labels",
                        "masked",
                        "candidates",
                        "temperatures",
                        "weights",
                        "evidence",
                        "dropped_by_reason",
                    )
                }
                | {"class_thresholds": policy_used.get("thresholds")},
                default=str,
            ),
            "report_path": str(report),
            "started_at": started,
            "finished_at": finished,
        }
        summary["changed_decisions"] = scoring.persist_task(wh, decided, plan, policy, run_row)
        wh.compact()
        description = f"kept {kept:,} of {decided.height:,} texts ({plan.scorer} scorer)"
        artifacts.publish_table(
            per_class.select(
                "wnid",
                "name",
                "images",
                "texts",
                "kept",
                "kept_ratio",
                "images_with_text",
                *scoring.REASON_COLUMNS,
            ),
            key="curation-classes",
            description=f"per class: {description}",
            max_rows=1000,
        )
        artifacts.publish_markdown(
            reports.curation_report_markdown(
                summary,
                p_true=decided["p_true"].to_numpy(),
                kept=decided["kept"].to_numpy(),
                per_class=per_class,
                curve=curve,
            ),
            key="curation-report",
            description=description,
        )
        artifacts.publish_summary(
            "Curation",
            {
                k: summary[k]
                for k in (
                    "scorer",
                    "scorer_reason",
                    "texts",
                    "scored_now",
                    "kept",
                    "dropped",
                    "dropped_by_reason",
                )
            }
            | {
                "policy": summary["policy"],
                "precision": summary.get("precision"),
                "recall": summary.get("recall"),
            },
            key="curation-summary",
        )
        logger.info(
            "kept %d and dropped %d of %d texts; report %s",
            kept,
            decided.height - kept,
            decided.height,
            report,
        )
        return summary
    finally:
        wh.close()


def _stored_weights(plan: scoring.ScoringPlan) -> dict[str, float]:
    """The ensemble's weight per kind (empty for a single kind)."""
    for spec in plan.specs.values():
        if spec.kind == "ensemble" and spec.weights is not None:
            return {m.kind: w for m, w in zip(spec.members, spec.weights, strict=True)}
    return {}


def _stored_temperatures(plan: scoring.ScoringPlan) -> dict[str, float]:
    """Temperatures per kind from an ensemble already registered (so a re-run keeps its calibration)."""
    for spec in plan.specs.values():
        if spec.kind == "ensemble" and spec.temperatures is not None:
            return {m.kind: t for m, t in zip(spec.members, spec.temperatures, strict=True)}
    return {}
