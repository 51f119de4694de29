"""The curated rows an export writes, read at one warehouse snapshot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.errors import InputError
from tasks.export.options import SPLIT_NAMES


@dataclass
class CuratedData:
    """Everything an export writes, read at one snapshot."""

    snapshot: int
    curation: dict
    images: pl.DataFrame
    texts: pl.DataFrame
    class_texts: pl.DataFrame
    classes: pl.DataFrame = field(default_factory=pl.DataFrame)
    scorers: list[dict] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def wnids(self) -> list[str]:
        return self.images["wnid"].unique(maintain_order=True).to_list()

    @property
    def label_names(self) -> list[str]:
        """The class names in class_index order; a name two classes share gets its wnid appended."""
        names = self.classes["name"].to_list()
        shared = {n for n in names if names.count(n) > 1}
        return [
            f"{n} ({w})" if n in shared else n
            for n, w in zip(names, self.classes["wnid"].to_list(), strict=True)
        ]


# Every query an export reads the warehouse with (`read_curated`): what it depends on.
QUERIES = (
    "export_snapshot",
    "curate_export_curation",
    "curate_export_images",
    "curate_export_texts",
    "curate_export_class_texts",
    "export_classes",
    "export_scorers",
)


def tables_read(con) -> frozenset[str]:
    """The warehouse tables and views an export reads (views with the tables they read)."""
    from warehouse.changes import tables_read as read_by
    from warehouse.db import load_query

    return read_by(con, *(load_query(q) for q in QUERIES))


def latest_curation(con) -> dict | None:
    """The latest finished curation run (with its scorer ids), or None when none has finished."""
    from warehouse.db import load_query

    frame = con.execute(load_query("curate_export_curation")).pl()
    return None if frame.is_empty() else frame.row(0, named=True)


def _no_curation() -> InputError:
    return InputError("no curation has finished yet: run `imtext curate` before `imtext export`")


def read_curated(con, only_with_text: bool = False) -> CuratedData:
    """Images, kept texts, class texts, classes and scorers of the latest curation, at one snapshot."""
    from warehouse.db import load_query

    con.execute("BEGIN TRANSACTION")
    try:
        snapshot = con.execute(load_query("export_snapshot")).fetchone()[0]
        run = latest_curation(con)
        if run is None:
            raise _no_curation()
        images = con.execute(load_query("curate_export_images")).pl()
        texts = con.execute(load_query("curate_export_texts")).pl()
        class_texts = con.execute(load_query("curate_export_class_texts")).pl()
        classes = con.execute(load_query("export_classes")).pl()
        scorers = con.execute(load_query("export_scorers")).pl().to_dicts()
    finally:
        con.execute("COMMIT")
    if only_with_text:
        images = images.filter(pl.col("image_id").is_in(texts["image_id"].implode()))
    images = images.with_columns(pl.col("split").replace(SPLIT_NAMES))
    curation_info = {
        "run_id": run["run_id"],
        "scorer": run["scorer"],
        "scorer_reason": run["scorer_reason"],
        "training_run": run["training_run"],
        "policy": _json(run["policy"]),
        "model_ids": _json(run["model_ids"]) or [],
        "snapshot": run["snapshot"],
        "finished_at": str(run["finished_at"]),
        "texts": run.get("texts"),
        "kept": run.get("kept"),
        "dropped": run.get("dropped"),
        "metrics": _json(run.get("metrics")),
    }
    for scorer in scorers:
        for key in ("metrics", "members"):
            scorer[key] = _json(scorer.get(key))
    return CuratedData(snapshot, curation_info, images, texts, class_texts, classes, scorers)


def _json(value):
    if not value:
        return {} if value is None or value == "" else value
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def check_ready(con) -> None:
    """An InputError unless a curation has finished (checked before the flow starts)."""
    if latest_curation(con) is None:
        raise _no_curation()


# -- Prefect tasks (thin wrappers the export flow calls) ------------------------------------------


@task(name="read-curated", cache_policy=NO_CACHE)
def read_curated_task(con, only_with_text: bool) -> CuratedData:
    """Read images, kept texts, class texts and scorers of the latest curation at one snapshot."""
    return read_curated(con, only_with_text)
