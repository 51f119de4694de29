"""A train run that would repeat the last one keeps it: same request, unchanged texts, its models on disk.

`imtext train` run again with the same options over a warehouse whose training tables no snapshot
has changed since the last finished run would train (or reuse) the very same models. It then writes
nothing (no run row, no folds, no model rows, so `latest_models` and everything read from it stay as
they are) and returns the last run's summary, marked `unchanged`. Deciding this reads the catalog's
snapshot log and a few rows, never the texts. `--no-resume` trains again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from tasks.model.devices import DistInfo
from tasks.model.registry import read_complete
from tasks.model.steps import training_summary

log = logging.getLogger(__name__)

TRAINING_QUERIES = ("train_texts", "train_junk_count")


def request_fingerprint(request: dict) -> str:
    """A hash of what a run was asked to train (options, kinds, processes), not of the data."""
    text = json.dumps(request, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def kept_run(con, request: str) -> dict | None:
    """The last finished run's summary when this request would repeat it, else None (and why, logged)."""
    from warehouse.changes import changed_since, tables_read
    from warehouse.db import load_query

    last = con.execute(load_query("train_last_done")).fetchone()
    if last is None:
        return None
    run_id, snapshot, base_model, folds, params, data, report = last
    if json.loads(params or "{}").get("request") != request:
        return None  # other options (or a run from before requests were recorded)
    changed = changed_since(con, tables_read(con, *map(load_query, TRAINING_QUERIES)), snapshot)
    if changed:
        log.info(
            "%s changed since run %s (snapshot %d): training again",
            ", ".join(sorted(changed)),
            run_id,
            snapshot,
        )
        return None
    rows = [
        {
            "model_id": model_id,
            "base_model": model_base,
            "fold": fold,
            "folds": model_folds,
            "params": json.loads(model_params),
            "metrics": json.loads(metrics),
            "path": path,
            "device": device,
        }
        for model_id, model_base, fold, model_folds, model_params, metrics, path, device in con.execute(
            load_query("train_run_models"), {"run_id": run_id}
        ).fetchall()
    ]
    missing = [r["model_id"] for r in rows if read_complete(Path(r["path"])) is None]
    if not rows or missing:
        log.info(
            "models of run %s are gone (%s): training again", run_id, ", ".join(missing) or "none registered"
        )
        return None
    devices = sorted({r["device"] for r in rows if r["params"].get("kind") == "transformer"})
    run = {"run_id": run_id, "snapshot": snapshot, "base_model": base_model, "folds": folds}
    summary = training_summary(run, rows, json.loads(data or "{}"), DistInfo())
    return summary | {"device": devices[0] if devices else "cpu", "report": report, "unchanged": True}
