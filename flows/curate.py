"""The curate flow: score every image text out-of-fold, keep or drop it, report the decisions."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import polars as pl
from prefect import flow, get_run_logger
from pydantic import Field

from flows import artifacts, runners
from flows.runtime import FLOW_RETRY, final_on_user_error
from tasks.common.errors import InputError
from tasks.curate import reuse, store
from tasks.curate.calibration import ensemble_rows, held_out_task, needs_calibration, restore_calibration
from tasks.curate.decisions import apply_policy, per_class_stats, policy_from
from tasks.curate.labels import load_labels, tune_policy
from tasks.curate.masked import lemma_table
from tasks.curate.plan import ScoringPlan, assign_scorers, plan_scoring, read_folds, read_models
from tasks.curate.policy import DEFAULT_JUNK_MIN_P_TRUE, DEFAULT_MIN_P_TRUE, DEFAULT_TOP_K
from tasks.curate.score import score_texts_task
from tasks.curate.scorers import DEFAULT_BATCH_SIZE, KeptBaseline
from tasks.curate.summary import class_table, curation_summary, headline, label_summary, run_row
from tasks.report import curation as reports
from tasks.report.charts import write_report


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
    ] = DEFAULT_MIN_P_TRUE,
    top_k: Annotated[
        int, Field(ge=0, description="or when its class is among the scorer's top k guesses (0: rule off)")
    ] = DEFAULT_TOP_K,
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
    batch_size: Annotated[int, Field(ge=1, description="texts per forward pass")] = DEFAULT_BATCH_SIZE,
    junk_min_p_true: Annotated[
        float,
        Field(ge=0.0, le=1.0, description="a junk-marked text needs p_true at least this (and min_p_true)"),
    ] = DEFAULT_JUNK_MIN_P_TRUE,
    masked_texts: Annotated[
        int, Field(ge=0, description="held-out texts for the masked-class-name evaluation (0: skip)")
    ] = 500,
    device: Annotated[
        str | None, Field(description="torch device for the transformer (default: cuda if present)")
    ] = None,
    task_runner: Annotated[str | None, Field(description="for scoring: " + runners.TASK_RUNNER_HELP)] = None,
    force: Annotated[
        bool,
        Field(
            description="curate again even when nothing it depends on (tables, options, models, code) changed "
            "since the last curation"
        ),
    ] = False,
) -> dict:
    """Score every image text with a model that never saw it, store keep/drop decisions, write the report.

    When nothing curate depends on changed since the latest curation (the tables it reads, the options
    and models, the code), that curation's outcome stands: nothing is scored, decided or written but
    a `curation_checks` row, and the summary says `unchanged` (`force` curates again).
    """
    from flows.runtime import open_warehouse, run_id
    from flows.settings import load_settings

    logger = get_run_logger()
    settings = load_settings()
    if target_precision is not None and labels is None:
        raise InputError("--target-precision needs --labels (a JSONL file of {text_id, relevant})")
    label_frame = load_labels(labels) if labels else None
    policy = policy_from(min_p_true, top_k, junk_min_p_true, target_precision)
    rid = run_id()
    started = dt.datetime.now(dt.UTC)
    wh = open_warehouse(settings)
    try:
        con = wh.con
        start = wh.current_snapshot()  # before the first read: a change after it is seen at the end
        plan = plan_scoring(read_models(con), scorer, training_run)
        logger.info("scorer %s from training run %s: %s", plan.scorer, plan.training_run, plan.reason)
        snapshot = wh.current_snapshot()
        options = {
            "min_p_true": min_p_true,
            "top_k": top_k,
            "junk_min_p_true": junk_min_p_true,
            "target_precision": target_precision,
            "scorer": scorer,
            "training_run": training_run,
            "masked_texts": masked_texts,
            "policy": policy.to_json(),
        }
        fingerprint = reuse.definition(options, plan, labels)
        previous, why = (None, "--force") if force else reuse.reusable_task(con, fingerprint)
        if previous is not None:
            return _unchanged(wh, previous, rid, snapshot, fingerprint, why)
        logger.info("curating: %s", why)
        texts = store.read_texts(con, plan.snapshot)
        if texts.is_empty():
            raise InputError("no image texts to score: run `imtext harvest images` first")
        assigned = assign_scorers(texts, plan, read_folds(con, plan.training_run))
        kept = KeptBaseline()  # the held-out pass's last baseline, scored first by the scoring pass
        held_out = _held_out(wh, plan, assigned, rid, masked_texts, batch_size, device, kept)
        scored_now = _score(
            wh, plan, assigned, policy, rid, task_runner, settings.workers, batch_size, device, kept
        )
        decided = store.read_decisions(con, assigned)
        curve, label_info = None, None
        if label_frame is not None:
            policy, curve, label_info = _tune(decided, label_frame, policy, target_precision)
        decided, policy_used = apply_policy(decided, policy)
        per_class = per_class_stats(con, decided)
        summary = curation_summary(
            rid, plan, snapshot, policy, policy_used, decided, per_class, held_out, scored_now
        )
        if label_frame is not None:
            summary.update(label_summary(decided, label_frame, label_info))
        finished = dt.datetime.now(dt.UTC)
        summary["finished_at"] = finished.isoformat()
        summary["report"] = str(_write_report(summary, decided, per_class, curve, settings.reports_dir))
        row = run_row(summary, policy, policy_used, started, finished)
        summary["changed_decisions"] = store.persist_task(wh, decided, plan, policy, row)
        summary["unchanged"] = False
        wh.compact()
        _record(wh, summary, start, fingerprint)
        _publish(summary, decided, per_class, curve)
        logger.info(
            "kept %d and dropped %d of %d texts; report %s",
            summary["kept"],
            summary["dropped"],
            summary["texts"],
            summary["report"],
        )
        return summary
    finally:
        wh.close()


def _unchanged(wh, previous: reuse.Check, rid: str, snapshot: int, fingerprint: str, why: str) -> dict:
    """Keep the latest curation's outcome: record the check, publish and return its figures."""
    kept = previous.summary
    reuse.record_check_task(
        wh, reuse.check_row(rid, snapshot, fingerprint, "reused", previous.outcome_run, kept)
    )
    summary = kept | {
        "run_id": rid,
        "reused_from": previous.outcome_run,
        "unchanged": True,
        "unchanged_since": previous.snapshot,
        "scored_now": 0,
        "changed_decisions": 0,
    }
    artifacts.publish_summary(
        "Curation",
        headline(summary) | {"unchanged": True, "reused_from": previous.outcome_run},
        key="curation-summary",
    )
    get_run_logger().info(
        "%s: the decisions of curation run %s stand (kept %d and dropped %d of %d texts); "
        "--force curates again",
        why,
        previous.outcome_run,
        summary["kept"],
        summary["dropped"],
        summary["texts"],
    )
    return summary


def _record(wh, summary: dict, start: int, fingerprint: str) -> None:
    """Record the snapshot this curation's outcome holds at, for the next run to compare with."""
    checked, changed = reuse.outcome_snapshot(wh.con, start)
    if changed:
        get_run_logger().info(
            "%s changed while curating: the next run curates again", ", ".join(sorted(changed))
        )
    stored = {k: v for k, v in summary.items() if k != "changed_decisions"}
    reuse.record_check_task(
        wh, reuse.check_row(summary["run_id"], checked, fingerprint, "curated", summary["run_id"], stored)
    )


def _held_out(
    wh, plan: ScoringPlan, assigned: pl.DataFrame, rid: str, masked_texts, batch_size, device, kept
) -> dict:
    """Calibrate (or reuse a stored ensemble's calibration), measure on held-out texts, register ensembles."""
    con = wh.con
    restore_calibration(plan, store.read_ensembles(con, plan.model_ids) if plan.scorer == "ensemble" else {})
    held_out = held_out_task(
        plan,
        assigned,
        lemma_table(con),
        calibrate=needs_calibration(plan, masked_texts),
        masked_texts=masked_texts,
        batch_size=batch_size,
        device=device,
        seed=plan.seed,
        temperatures=plan.kind_temperatures(),
        kept=kept,
    )
    if plan.scorer == "ensemble":
        store.register_ensembles(
            wh, ensemble_rows(plan, held_out["temperatures"], rid, held_out.get("weights"))
        )
    return held_out


def _score(
    wh,
    plan: ScoringPlan,
    assigned: pl.DataFrame,
    policy,
    rid: str,
    task_runner,
    workers,
    batch_size,
    device,
    kept: KeptBaseline,
) -> int:
    """Score the texts that have no score from their scorer yet; rows added."""
    from flows.runtime import Progress

    logger = get_run_logger()
    pending = store.pending_texts(wh.con, assigned)
    logger.info("%d of %d texts need a score", pending.height, assigned.height)
    if pending.is_empty():
        kept.clear()  # the baseline the held-out pass kept is not needed
        return 0
    progress = Progress(pending.height, "scoring texts")
    # A transformer already uses every core of its machine: a local cluster gets one scoring
    # process unless IMTEXT_WORKERS says otherwise.
    with runners.fan_out(task_runner, workers or 1) as runner:
        if runner is None:
            scored = score_texts_task(
                wh,
                plan,
                pending,
                policy,
                rid,
                batch_size=batch_size,
                device=device,
                on_batch=progress.advance,
                kept=kept,
            )
        else:
            kept.clear()  # the shards load their own models
            scored = runners.score_on(
                runner, wh, plan, pending, policy, rid, progress, batch_size=batch_size, device=device
            )
    progress.close()
    return scored


def _tune(decided: pl.DataFrame, labels: pl.DataFrame, policy, target_precision: float | None):
    """The PR curve on the labelled texts, and the policy's threshold for a target precision."""
    policy, curve, label_info = tune_policy(decided, labels, policy, target_precision)
    if target_precision is not None:
        get_run_logger().info(
            "min_p_true %.4f from the labels (target precision %s %s)",
            policy.min_p_true,
            target_precision,
            "reached" if label_info["target_reached"] else "NOT reached",
        )
    return policy, curve, label_info


def _write_report(summary: dict, decided: pl.DataFrame, per_class: pl.DataFrame, curve, reports_dir):
    html = reports.curation_report_html(
        summary,
        p_true=decided["p_true"].to_numpy(),
        kept=decided["kept"].to_numpy(),
        per_class=per_class,
        curve=curve,
    )
    return write_report(html, reports_dir, f"curate-{summary['run_id']}.html")


def _publish(summary: dict, decided: pl.DataFrame, per_class: pl.DataFrame, curve) -> None:
    """The flow run's artifacts: per-class table, markdown report, headline figures."""
    description = f"kept {summary['kept']:,} of {summary['texts']:,} texts ({summary['scorer']} scorer)"
    artifacts.publish_table(
        class_table(per_class), key="curation-classes", description=f"per class: {description}", max_rows=1000
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
    artifacts.publish_summary("Curation", headline(summary), key="curation-summary")
