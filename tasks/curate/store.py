"""Curation's warehouse reads and writes: texts to score, scores, ensembles and keep/drop decisions."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import polars as pl
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.curate.plan import ScoringPlan
from tasks.curate.policy import Policy

log = logging.getLogger(__name__)


def read_texts(con, training_snapshot: int | None) -> pl.DataFrame:
    """Every image text with its image's class; `trained` = present when the models were trained."""
    from warehouse.db import load_query

    texts = con.execute(load_query("curate_texts")).pl()
    if training_snapshot is None:
        return texts.with_columns(pl.lit(True).alias("trained"))
    try:
        seen = con.execute(load_query("curate_texts_at"), {"snapshot": int(training_snapshot)}).pl()
    except Exception as exc:  # an expired snapshot: fall back to the fold models (always safe)
        log.warning(
            "cannot read image_texts at snapshot %s (%s); every text counts as trained",
            training_snapshot,
            exc,
        )
        return texts.with_columns(pl.lit(True).alias("trained"))
    return texts.with_columns(pl.col("text_id").is_in(seen["text_id"].implode()).alias("trained"))


def pending_texts(con, assigned: pl.DataFrame) -> pl.DataFrame:
    """The assigned texts that have no score from their scorer yet."""
    from warehouse.db import load_query

    ids = assigned["model_id"].unique().to_list()
    done = con.execute(load_query("curate_scored"), {"ids": ids}).pl()
    if done.is_empty():
        return assigned
    return assigned.join(done, on=["text_id", "model_id"], how="anti")


def write_scores(wh, table: pa.Table) -> int:
    """Insert score rows not yet present for their (text_id, model_id), in one transaction."""
    from warehouse.db import load_query

    return wh.insert_arrow(load_query("curate_insert_scores"), new_scores=table)


def read_decisions(con, assigned: pl.DataFrame) -> pl.DataFrame:
    """The assigned texts with their scores from their scorer (texts not scored are left out)."""
    from warehouse.db import load_query

    ids = assigned["model_id"].unique().to_list()
    scores = con.execute(load_query("curate_read_scores"), {"ids": ids}).pl()
    return assigned.join(scores, on=["text_id", "model_id"], how="inner")


def read_ensembles(con, ids: Sequence[str]) -> dict[str, dict]:
    """Stored calibration of ensembles, {model_id: {temperatures, weights}} (reused so a resumed run
    scores with the same calibration)."""
    from warehouse.db import load_query

    rows = con.execute(load_query("curate_ensembles"), {"ids": list(ids)}).fetchall()
    out = {}
    for model_id, cal in rows:
        data = json.loads(cal)
        out[model_id] = {"temperatures": list(data["temperatures"]), "weights": data.get("weights")}
    return out


def register_ensembles(wh, rows: list[dict]) -> int:
    """Store new ensembles before they score, so a resumed run scores with the same calibration."""
    from warehouse.db import load_query

    if not rows:
        return 0
    return wh.insert_arrow(load_query("curate_insert_ensembles"), new_ensembles=pa.Table.from_pylist(rows))


def persist_decisions(wh, decided: pl.DataFrame, plan: ScoringPlan, policy: Policy, run: dict) -> int:
    """One transaction: store kept/policy for this curation's rows and the curation row."""
    from warehouse.db import insert_arrow, load_query

    decisions = decided.select("text_id", "model_id", "kept", "reason").to_arrow()
    counts = decided.group_by("model_id").len()
    models = pa.table(
        {
            "run_id": [run["run_id"]] * len(plan.specs),
            "model_id": [s.model_id for s in plan.specs.values()],
            "kind": [s.kind for s in plan.specs.values()],
            "fold": [s.fold for s in plan.specs.values()],
            "role": [s.role for s in plan.specs.values()],
            "texts": [
                int(counts.filter(pl.col("model_id") == s.model_id)["len"].sum()) for s in plan.specs.values()
            ],
        }
    )
    run_row = pa.Table.from_pylist([run])

    def txn(con) -> int:
        changed = insert_arrow(
            con, load_query("curate_apply_policy"), {"policy": policy.to_json()}, decisions=decisions
        )
        insert_arrow(con, load_query("curate_insert_run"), curation_row=run_row, curation_scorers=models)
        return changed

    return wh.write(txn)


@task(name="store-decisions", cache_policy=NO_CACHE)
def persist_task(wh, decided: pl.DataFrame, plan: ScoringPlan, policy: Policy, run: dict) -> int:
    """Store keep/drop decisions and the curation row in one warehouse transaction."""
    return persist_decisions(wh, decided, plan, policy, run)
