"""`imtext curate` over unchanged data: when nothing curate depends on (the tables it reads, its
options, its models and their files, its code) changed since the latest curation, that curation's
outcome stands: nothing is scored, decided or written but a `curation_checks` row, so a following
export stays unchanged too; a new text, a new model, other options or `--force` curate again."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.flows.test_export import curated, env  # noqa: F401 - the module's curated world

OPTIONS = {"scorer": "baseline", "min_p_true": 0.4, "masked_texts": 0}


def reader():
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    return Warehouse.from_settings(load_settings()).reader()


def state() -> dict:
    """Curation rows, the current snapshot and the tables export reads, in the `env` home."""
    from tasks.export.read import tables_read

    con = reader()
    try:
        return {
            "runs": con.execute("SELECT count(*) FROM curation_runs").fetchone()[0],
            "scores": con.execute("SELECT count(*) FROM text_scores").fetchone()[0],
            "snapshot": con.execute("SELECT id FROM current_snapshot()").fetchone()[0],
            "export_reads": tables_read(con),
        }
    finally:
        con.close()


def changed_since(names, snapshot: int) -> set[str]:
    from warehouse.changes import changed_since as changed

    con = reader()
    try:
        return changed(con, names, snapshot)
    finally:
        con.close()


def write(sql: str, params=None) -> None:
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    wh = Warehouse.from_settings(load_settings())
    try:
        wh.write(lambda c: c.execute(sql, params or []))
    finally:
        wh.close()


def refuse_curating(monkeypatch) -> None:
    """From now on reading the texts or storing decisions fails the test."""
    from tasks.curate import store

    def refuse(*args, **kwargs):
        raise AssertionError("the curation was computed again")

    monkeypatch.setattr(store, "read_texts", refuse)
    monkeypatch.setattr(store, "persist_task", refuse)


def test_a_second_run_over_unchanged_data_keeps_the_outcome(env, monkeypatch):  # noqa: F811
    from flows.curate import curate_flow

    first = curate_flow(**OPTIONS)
    assert not first.get("unchanged")
    before = state()
    # a write to a table curate does not read changes nothing for it
    write("INSERT INTO quarantine (path, reason) VALUES ('/elsewhere.jpg', 'not an image')")

    with monkeypatch.context() as mp:
        refuse_curating(mp)
        again = curate_flow(**OPTIONS)

    assert again.get("unchanged") is True and again["reused_from"] == first["run_id"] != again["run_id"]
    for key in ("texts", "kept", "dropped", "scorer", "model_ids", "policy", "snapshot", "report"):
        assert again[key] == first[key], key
    assert again["scored_now"] == 0
    after = state()
    assert (after["runs"], after["scores"]) == (before["runs"], before["scores"])
    assert changed_since(before["export_reads"], before["snapshot"]) == set()

    shown = CliRunner().invoke(
        app, ["curate", "--scorer", "baseline", "--min-p-true", "0.4", "--masked-texts", "0"]
    )
    assert shown.exit_code == 0, shown.output
    assert f"the decisions of curation run {first['run_id']} stand" in shown.output
    assert f"kept {first['kept']:,} and dropped {first['dropped']:,}" in shown.output
    assert state()["runs"] == before["runs"]


def test_a_new_text_a_new_model_or_other_options_curate_again(env):  # noqa: F811
    from flows.curate import curate_flow

    curate_flow(**OPTIONS)
    assert curate_flow(**OPTIONS).get("unchanged") is True

    write(
        "INSERT INTO image_texts (text_id, image_id, source, field, text, raw_text, fetched_at, run_id) "
        "VALUES ('later-text', 'n01443537_0', 'test', 'title', 'a goldfish', 'a goldfish', now(), 'later')"
    )
    runs = state()["runs"]
    grown = curate_flow(**OPTIONS)
    assert grown.get("unchanged") is False and grown["scored_now"] == 1
    assert state()["runs"] == runs + 1
    assert curate_flow(**OPTIONS).get("unchanged") is True

    # an unfinished cross-fitting of another run: no scorer changes, but `models` did
    write(
        "INSERT INTO models (model_id, base_model, fold, folds, snapshot, params, metrics, path, created_at, run_id) "
        "VALUES ('other-f0', 'tfidf-linear', 0, 2, 1, ?, '{}', '/nowhere', now(), 'train-run-2')",
        [json.dumps({"kind": "baseline", "folds": 2, "seed": 0})],
    )
    assert curate_flow(**OPTIONS).get("unchanged") is False
    assert curate_flow(**OPTIONS).get("unchanged") is True

    stricter = curate_flow(**(OPTIONS | {"min_p_true": 0.6}))
    assert stricter.get("unchanged") is False and stricter["kept"] <= grown["kept"]
    # back to the earlier options: the stricter run is the latest, so its decisions are redone
    back = curate_flow(**OPTIONS)
    assert back.get("unchanged") is False and back["kept"] == grown["kept"]
    assert curate_flow(**OPTIONS).get("unchanged") is True


def test_force_curates_again(env):  # noqa: F811
    from flows.curate import curate_flow

    curate_flow(**OPTIONS)
    kept = curate_flow(**OPTIONS)
    assert kept.get("unchanged") is True
    runs = state()["runs"]

    forced = curate_flow(**OPTIONS, force=True)
    assert forced.get("unchanged") is False and forced["kept"] == kept["kept"]
    assert state()["runs"] == runs + 1

    shown = CliRunner().invoke(
        app, ["curate", "--scorer", "baseline", "--min-p-true", "0.4", "--masked-texts", "0", "--force"]
    )
    assert shown.exit_code == 0, shown.output
    assert "stand" not in shown.output
    assert state()["runs"] == runs + 2
    assert curate_flow(**OPTIONS).get("unchanged") is True


@pytest.mark.parametrize("format", ["parquet"])
def test_an_export_after_an_unchanged_curation_stays_unchanged(env, tmp_path, format):  # noqa: F811
    from flows.curate import curate_flow
    from flows.export import export_flow

    curate_flow(**OPTIONS)
    out = tmp_path / format
    first = export_flow(format=format, out=str(out))
    manifest = (out / "manifest.json").read_text()

    rerun = curate_flow(**OPTIONS)
    again = export_flow(format=format, out=str(out))

    assert again["unchanged"] is True and again["curation_run"] == first["curation_run"]
    assert (out / "manifest.json").read_text() == manifest
    assert rerun["unchanged"] is True and rerun["reused_from"] == first["curation_run"]


def test_a_retrained_model_file_or_other_labels_curate_again(env, tmp_path):  # noqa: F811
    from flows.curate import curate_flow

    curate_flow(**OPTIONS)
    assert curate_flow(**OPTIONS).get("unchanged") is True

    con = reader()
    try:
        paths = [
            r[0]
            for r in con.execute("SELECT path FROM models WHERE model_id LIKE 'train-run-1-%'").fetchall()
        ]
    finally:
        con.close()
    model_file = next(f for p in sorted(paths) for f in sorted(Path(p).rglob("*")) if f.is_file())
    stat = model_file.stat()
    os.utime(model_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert curate_flow(**OPTIONS).get("unchanged") is False
    assert curate_flow(**OPTIONS).get("unchanged") is True

    labels = tmp_path / "labels.jsonl"
    labels.write_text((env["root"] / "world" / "labels.jsonl").read_text())
    assert curate_flow(**OPTIONS, labels=str(labels)).get("unchanged") is False
    assert curate_flow(**OPTIONS, labels=str(labels)).get("unchanged") is True
    first = labels.read_text().splitlines()
    flipped = json.loads(first[0]) | {"relevant": not json.loads(first[0])["relevant"]}
    labels.write_text("\n".join([json.dumps(flipped), *first[1:]]) + "\n")
    assert curate_flow(**OPTIONS, labels=str(labels)).get("unchanged") is False


def test_every_query_the_flow_reads_with_is_a_dependency():
    """A new read in the curate code must be listed in `reuse.QUERIES`, or its table is not watched."""
    from tasks.curate import reuse

    root = Path(reuse.__file__).resolve().parents[2]
    writes = {"curate_insert_scores", "curate_insert_ensembles", "curate_apply_policy", "curate_insert_run"}
    writes |= {"curate_insert_check", "curate_previous_check"}  # the checks themselves
    outside = {"curate_latest_decisions"}  # `evaluate_curation`, not the flow
    used = set()
    for path in [root / "flows" / "curate.py", *sorted((root / "tasks" / "curate").glob("*.py"))]:
        used |= set(re.findall(r'load_query\(\s*"(curate_\w+)"', path.read_text()))
    assert used - writes - outside == set(reuse.QUERIES)
