"""The registry of trained models: ids, finished model folders, and their rows in the warehouse.

A model folder is complete once its training record (`training.json`) is written, last; a later run
of the same data and settings finds it and reuses the model. Models, their training curves and the
runs themselves are MERGEd into `models`, `training_history` and `training_runs`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.model.training import TrainResult

TRAINING_FILE = "training.json"  # written last into a model folder: its presence means "complete"


def model_id_for(name: str, fold: int, folds: int, fingerprint: str) -> str:
    """`<base>-fold<k>of<K>-<hash>` (or `-allof<K>-`): the same training of the same data gets the same id."""
    where = "all" if fold < 0 else f"fold{fold}"
    return f"{name}-{where}of{folds}-{fingerprint[:10]}"


def spec_fingerprint(data_fingerprint: str, params: dict) -> str:
    """Hash of the data and every parameter that changes the model."""
    return hashlib.blake2b(
        json.dumps([data_fingerprint, params], sort_keys=True, default=str).encode(), digest_size=10
    ).hexdigest()


def read_complete(model_dir: Path) -> dict | None:
    """The training record of a finished model folder, or None when it is absent or unfinished."""
    record = model_dir / TRAINING_FILE
    if not record.exists():
        return None
    try:
        return json.loads(record.read_text())
    except ValueError:
        return None


def write_complete(model_dir: Path, record: dict) -> None:
    tmp = model_dir / (TRAINING_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, model_dir / TRAINING_FILE)


def remove_checkpoints(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def register_models(wh, rows: list[dict]) -> None:
    """MERGE model rows into `models` (key model_id), in one snapshot."""
    import pyarrow as pa

    from warehouse.db import load_query

    if not rows:
        return
    table = pa.Table.from_pylist(
        [
            {
                "model_id": r["model_id"],
                "base_model": r["base_model"],
                "fold": int(r["fold"]),
                "folds": int(r["folds"]),
                "snapshot": int(r["snapshot"]),
                "params": json.dumps(r["params"], sort_keys=True, default=str),
                "metrics": json.dumps(r["metrics"], sort_keys=True, default=str),
                "path": str(r["path"]),
                "duration_s": float(r["duration_s"]),
                "device": r["device"],
                "created_at": r.get("created_at") or utc_now(),
                "run_id": r["run_id"],
            }
            for r in rows
        ]
    )

    wh.insert_arrow(load_query("train_upsert_models"), new_models=table)


def record_history(wh, run_id: str, model_id: str, result: TrainResult) -> None:
    """Loss curve and held-out evaluations of one model into `training_history`."""
    import pyarrow as pa

    from warehouse.db import load_query

    now = utc_now()
    rows = [
        {
            "model_id": model_id,
            "run_id": run_id,
            "kind": "train",
            "epoch": int(p["epoch"]),
            "step": p["step"],
            "loss": p["loss"],
            "top1": None,
            "top5": None,
            "macro_f1": None,
            "learning_rate": p["learning_rate"],
            "elapsed_s": None,
            "recorded_at": now,
        }
        for p in result.loss_curve
    ] + [
        {
            "model_id": model_id,
            "run_id": run_id,
            "kind": "eval",
            "epoch": math.ceil(e["epoch"]),
            "step": e["step"],
            "loss": e["loss"],
            "top1": e["top1"],
            "top5": e["top5"],
            "macro_f1": e["macro_f1"],
            "learning_rate": e["learning_rate"],
            "elapsed_s": e["elapsed_s"],
            "recorded_at": now,
        }
        for e in result.evals
    ]
    if not rows:
        return
    schema = pa.schema(
        [
            ("model_id", pa.string()),
            ("run_id", pa.string()),
            ("kind", pa.string()),
            ("epoch", pa.int32()),
            ("step", pa.int32()),
            ("loss", pa.float64()),
            ("top1", pa.float64()),
            ("top5", pa.float64()),
            ("macro_f1", pa.float64()),
            ("learning_rate", pa.float64()),
            ("elapsed_s", pa.float64()),
            ("recorded_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)

    wh.insert_arrow(load_query("train_history_insert"), history_rows=table)


def record_training_run(wh, row: dict) -> None:
    """Start or finish a row of `training_runs` (key run_id)."""
    import pyarrow as pa

    from warehouse.db import load_query

    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("base_model", pa.string()),
            ("folds", pa.int32()),
            ("seed", pa.int32()),
            ("snapshot", pa.int64()),
            ("data_fingerprint", pa.string()),
            ("params", pa.string()),
            ("data", pa.string()),
            ("status", pa.string()),
            ("report_path", pa.string()),
            ("started_at", pa.timestamp("us", tz="UTC")),
            ("finished_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    full = {name: row.get(name) for name in schema.names}
    for key in ("params", "data"):
        if full[key] is not None and not isinstance(full[key], str):
            full[key] = json.dumps(full[key], default=str)
    table = pa.Table.from_pylist([full], schema=schema)

    wh.insert_arrow(load_query("train_upsert_run"), run_row=table)
