"""Scoring pending texts: each by its out-of-fold scorer, longest first, in chunks written as they finish."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import polars as pl
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.curate.decisions import is_junk
from tasks.curate.plan import ScoringPlan
from tasks.curate.policy import Policy
from tasks.curate.scorers import DEFAULT_BATCH_SIZE, KeptBaseline, load_scorer, summarise
from tasks.curate.store import write_scores

DEFAULT_CHUNK_SIZE = 16_384

SCORE_SCHEMA = pa.schema(
    [
        ("text_id", pa.string()),
        ("model_id", pa.string()),
        ("p_true", pa.float64()),
        ("true_rank", pa.int32()),
        ("pred_wnid", pa.string()),
        ("pred_p", pa.float64()),
        ("kept", pa.bool_()),
        ("policy", pa.string()),
        ("run_id", pa.string()),
    ]
)


def score_table(scorer, texts: pl.DataFrame, model_id: str, policy: Policy, run_id: str) -> pa.Table:
    """Score one batch of texts (columns text_id, text, wnid, junk) into text_scores rows."""
    probs = scorer.predict_proba(texts["text"].fill_null("").to_list())
    s = summarise(probs, scorer.labels, texts["wnid"].to_list())
    kept = policy.keep(s["p_true"], s["true_rank"], is_junk(texts["junk"]))
    n = texts.height
    return pa.table(
        {
            "text_id": texts["text_id"].to_arrow(),
            "model_id": pa.array([model_id] * n, pa.string()),
            "p_true": s["p_true"],
            "true_rank": s["true_rank"],
            "pred_wnid": pa.array(list(s["pred_wnid"]), pa.string()),
            "pred_p": s["pred_p"],
            "kept": kept,
            "policy": pa.array([policy.to_json()] * n, pa.string()),
            "run_id": pa.array([run_id] * n, pa.string()),
        },
        schema=SCORE_SCHEMA,
    )


def _chunks(frame: pl.DataFrame, size: int) -> Iterator[pl.DataFrame]:
    for start in range(0, frame.height, size):
        yield frame.slice(start, size)


def score_pending(
    wh,
    plan: ScoringPlan,
    pending: pl.DataFrame,
    policy: Policy,
    run_id: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device=None,
    on_batch: Callable[[int], None] | None = None,
    kept: KeptBaseline | None = None,
) -> int:
    """Score every pending text with its scorer, writing each chunk as it is done; returns rows added.

    `kept`: the baseline the held-out pass loaded last, scored first and dropped at the end.

    The warehouse write of a chunk runs in a background thread while the next chunk is scored (one
    write in flight at most; nothing else touches the connection meanwhile).
    """
    added = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-writer") as writer:
        in_flight: Future | None = None

        def settle() -> None:
            nonlocal added, in_flight
            if in_flight is not None:
                rows, n = in_flight.result()
                added += rows
                in_flight = None
                if on_batch is not None:
                    on_batch(n)

        try:
            kept_path = kept.path if kept is not None else None
            for model_id in _scoring_order(plan, pending["model_id"].unique().to_list(), kept_path):
                spec = plan.spec(model_id)
                todo = (
                    pending.filter(pl.col("model_id") == model_id)
                    .with_columns(pl.col("text").fill_null("").str.len_bytes().alias("_len"))
                    .sort("_len", descending=True)
                )
                scorer = load_scorer(spec, batch_size=batch_size, device=device, kept=kept)
                for chunk in _chunks(todo, chunk_size):
                    table = score_table(scorer, chunk, model_id, policy, run_id)
                    settle()
                    in_flight = writer.submit(lambda t=table, n=chunk.height: (write_scores(wh, t), n))
                kind = scorer.kind
                del scorer
                if kind != "baseline":  # a model on a GPU lets go of its memory at once
                    gc.collect()
            settle()
        finally:
            if kept is not None:
                kept.clear()
            if in_flight is not None:  # a failure while scoring: still store what was scored
                with contextlib.suppress(Exception):
                    settle()
    return added


def _scoring_order(plan: ScoringPlan, model_ids: list[str], kept: str | None) -> list[str]:
    """The scorers by model id, the baseline still loaded from the held-out pass (`kept`) first."""

    def loaded(model_id: str) -> bool:
        spec = plan.spec(model_id)
        return spec.kind == "baseline" and kept is not None and spec.members[0].path == kept

    return sorted(model_ids, key=lambda m: (not loaded(m), m))


@task(name="score-texts", tags=["gpu"], cache_policy=NO_CACHE)
def score_texts_task(
    wh, plan: ScoringPlan, pending: pl.DataFrame, policy: Policy, run_id: str, **kwargs
) -> int:
    """Score the pending texts out-of-fold, writing each chunk as it is done."""
    return score_pending(wh, plan, pending, policy, run_id, **kwargs)
