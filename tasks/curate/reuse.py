"""A curation's outcome that still holds: nothing curate depends on changed since its last run.

Curate depends on the tables its queries read (`QUERIES`), on its options, on the models it picks
and their files, and on the code that scores and decides. When the latest recorded check has the
same definition (a fingerprint of all but the tables), no snapshot since changed one of those tables
and its outcome is still the curation the `curated` view follows, that outcome stands: no scores,
decisions or `curation_runs` row are written, only a row in `curation_checks`, which export does
not read. Deciding this reads the catalog's snapshot log and a few stored rows, never a table's data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.fingerprint import source_fingerprint
from tasks.curate.plan import ScoringPlan

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]

# Every query the curate flow reads the warehouse with, and the one that names the curation the
# `curated` view follows: the tables they read are what a curation's outcome depends on.
QUERIES = (
    "curate_models",
    "curate_texts",
    "curate_texts_at",
    "curate_training_folds",
    "curate_ensembles",
    "curate_scored",
    "curate_read_scores",
    "curate_lemmas",
    "curate_class_images",
    "curate_latest_run",
)
# The table of the checks themselves: recording a check changes no outcome.
CHECKS = "curation_checks"
# Tables a curation writes itself: a change to them during its own run is its own.
WRITTEN = frozenset({"text_scores", "ensembles", "curation_runs", "curation_models"})
# The code that computes scores and decisions; an edit to any of it counts as a new definition,
# which at worst curates once more than needed.
CODE = (
    "flows/curate.py",
    "tasks/curate/*.py",
    "tasks/model/baseline.py",
    "tasks/model/classifier.py",
    "tasks/model/encoders.py",
    "tasks/model/modeling_mean_pooled.py",
    "tasks/model/folds.py",
    "tasks/common/probability.py",
    "tasks/common/metrics.py",
    "warehouse/queries/curate_*.sql",
)
PACKAGES = ("numpy", "polars", "scikit-learn", "torch", "transformers", "sentence-transformers")


@dataclass(frozen=True)
class Check:
    """The latest recorded curation check."""

    run_id: str
    snapshot: int
    definition: str
    source: str
    outcome_run: str
    summary: dict


def code_fingerprint() -> str:
    """The curate code's source files and the versions of the packages it scores with."""
    return source_fingerprint((p for pattern in CODE for p in sorted(ROOT.glob(pattern))), PACKAGES)


def model_files(path: str) -> list[tuple[str, int, int]]:
    """A model folder's files (training checkpoints left out) with their sizes and modification times."""
    root = Path(path)
    if root.is_file():
        stat = root.stat()
        return [(root.name, stat.st_size, stat.st_mtime_ns)]
    if not root.is_dir():
        return []
    files = []
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root)
        if file.is_file() and not relative.parts[0].startswith("checkpoint"):
            stat = file.stat()
            files.append((relative.as_posix(), stat.st_size, stat.st_mtime_ns))
    return files


def definition(options: dict, plan: ScoringPlan, labels: str | None) -> str:
    """A fingerprint of what decides a curation's outcome besides the warehouse's tables: the options
    that change scores or decisions, the labels file's content, the plan's scorers with every member
    model's id, path and files, and the code. Batch size, device and task runner change how texts are
    scored, not the decisions (a stored score is never recomputed), so they are left out."""
    members = {
        spec.model_id: [(m.model_id, m.kind, m.fold, m.path, model_files(m.path)) for m in spec.members]
        for spec in plan.specs.values()
    }
    described = {
        "options": options,
        "labels": hashlib.sha256(Path(labels).read_bytes()).hexdigest() if labels else None,
        "training_run": plan.training_run,
        "scorer": plan.scorer,
        "folds": [plan.folds, plan.seed],
        "scorers": members,
        "code": code_fingerprint(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:32]


def tables_read(con) -> frozenset[str]:
    """The warehouse tables and views a curation's outcome depends on (its checks left out)."""
    from warehouse.changes import tables_read as read_by
    from warehouse.db import load_query

    return read_by(con, *(load_query(q) for q in QUERIES)) - {CHECKS}


def previous_check(con) -> Check | None:
    """The latest recorded curation check, or None before the first."""
    from warehouse.db import load_query

    row = con.execute(load_query("curate_previous_check")).fetchone()
    if row is None:
        return None
    run_id, snapshot, fingerprint, source, outcome_run, summary = row
    return Check(run_id, int(snapshot), fingerprint, source, outcome_run, json.loads(summary or "{}"))


def reusable(con, fingerprint: str) -> tuple[Check | None, str]:
    """The latest check when its outcome still holds, else None; and why it does or does not."""
    from warehouse.changes import changed_since
    from warehouse.db import load_query

    check = previous_check(con)
    if check is None or not check.summary:
        return None, "no earlier curation recorded"
    if check.definition != fingerprint:
        return None, f"options, models or code differ from curation run {check.outcome_run}"
    changed = changed_since(con, tables_read(con), check.snapshot)
    if changed:
        return None, f"{', '.join(sorted(changed))} changed since snapshot {check.snapshot}"
    latest = con.execute(load_query("curate_latest_run")).fetchone()
    if latest is None or latest[0] != check.outcome_run:
        return None, f"curation run {check.outcome_run} is no longer the latest"
    if sorted(latest[1] or []) != sorted(check.summary.get("model_ids") or []):
        return None, f"curation run {check.outcome_run} lists other scorers"
    report = check.summary.get("report")
    if report and not Path(report).exists():
        return None, f"the report of curation run {check.outcome_run} is gone"
    return check, f"nothing curate reads changed since snapshot {check.snapshot}"


def outcome_snapshot(con, start: int) -> tuple[int, set[str]]:
    """After a curation has written its outcome: the snapshot that outcome holds at, and the tables
    others changed while it ran (read since `start`, written by someone else). When they did, the
    outcome holds only at `start`, so the next run curates again."""
    from warehouse.changes import changed_since

    now = con.execute("SELECT id FROM current_snapshot()").fetchone()[0]
    changed = changed_since(con, tables_read(con) - WRITTEN, start)
    return (start, changed) if changed else (now, changed)


def check_row(
    run_id: str, snapshot: int, fingerprint: str, source: str, outcome_run: str, summary: dict
) -> dict:
    """The `curation_checks` row of a run."""
    return {
        "run_id": run_id,
        "snapshot": int(snapshot),
        "definition": fingerprint,
        "source": source,
        "outcome_run": outcome_run,
        "summary": json.dumps(summary, default=str),
        "recorded_at": dt.datetime.now(dt.UTC),
    }


@task(name="record-curation-check", cache_policy=NO_CACHE)
def record_check_task(wh, row: dict) -> int:
    """Store the run's curation check (a table export does not read)."""
    from warehouse.db import load_query

    return wh.insert_arrow(load_query("curate_insert_check"), check_row=pa.Table.from_pylist([row]))


@task(name="reusable-curation", cache_policy=NO_CACHE)
def reusable_task(con, fingerprint: str) -> tuple[Check | None, str]:
    """The latest curation's outcome when nothing it depends on changed since (see `reusable`)."""
    return reusable(con, fingerprint)
