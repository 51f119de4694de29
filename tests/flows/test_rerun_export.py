"""`imtext export` over unchanged data: an export in the folder, of the same format and options, whose
files are all there and whose tables did not change since the snapshot its manifest names, is kept
as it is; a change to a table it reads, other options, a damaged file or `--force` write it again."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app
from tests.flows.test_export import curated, env  # noqa: F401 - the module's curated world


def stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file with its inode and modification time: a rewrite changes them."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def exports_recorded() -> int:
    """Rows in `exports` of the home the `env` fixture points at."""
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    reader = Warehouse.from_settings(load_settings()).reader()
    try:
        return reader.execute("SELECT count(*) FROM exports").fetchone()[0]
    finally:
        reader.close()


def write(sql: str) -> None:
    """One write transaction on the home the `env` fixture points at."""
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    wh = Warehouse.from_settings(load_settings())
    try:
        wh.write(lambda c: c.execute(sql))
    finally:
        wh.close()


def test_a_second_export_over_unchanged_tables_keeps_the_folder(env, tmp_path, monkeypatch):  # noqa: F811
    from flows.export import export_flow
    from tasks.export import target

    out = tmp_path / "pq"
    first = export_flow(format="parquet", out=str(out), shard_size=10)
    assert first["unchanged"] is False
    before, recorded = stamps(out), exports_recorded()
    # a write to a table the export does not read changes nothing for it
    write("INSERT INTO quarantine (path, reason) VALUES ('/elsewhere.jpg', 'not an image')")

    def refuse(*args, **kwargs):
        raise AssertionError("the export was written again")

    monkeypatch.setattr(target, "export_dataset", refuse)
    again = export_flow(format="parquet", out=str(out), shard_size=10)

    assert again["unchanged"] is True
    assert stamps(out) == before and exports_recorded() == recorded
    assert again["export_run"] == first["run_id"] and again["snapshot"] == first["snapshot"]
    for key in ("images", "texts", "classes", "splits", "files", "curation_run", "manifest", "card"):
        assert again[key] == first[key], key

    shown = CliRunner().invoke(
        app, ["export", "--format", "parquet", "--out", str(out), "--shard-size", "10"]
    )
    assert shown.exit_code == 0, shown.output
    assert f"unchanged since warehouse snapshot {first['snapshot']}" in shown.output
    assert f"exported {first['images']:,} images" in shown.output
    assert stamps(out) == before


def test_a_change_to_a_table_the_export_reads_writes_it_again(env, tmp_path):  # noqa: F811
    from flows.export import export_flow

    out = tmp_path / "wds"
    first = export_flow(format="webdataset", out=str(out))
    write(
        "INSERT INTO class_texts (text_id, wnid, source, field, text, fetched_at, run_id) "
        "VALUES ('ct-more', 'n01443537', 'file:more.json', 'description', 'a small orange fish', now(), 'later')",
    )

    again = export_flow(format="webdataset", out=str(out))

    assert again["unchanged"] is False and again["snapshot"] > first["snapshot"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["export_run_id"] == again["run_id"] != first["run_id"]
    assert export_flow(format="webdataset", out=str(out))["unchanged"] is True


def test_force_other_options_or_a_damaged_file_write_it_again(env, tmp_path):  # noqa: F811
    from flows.export import export_flow

    out = tmp_path / "pq"
    export_flow(format="parquet", out=str(out))
    assert export_flow(format="parquet", out=str(out))["unchanged"] is True

    forced = export_flow(format="parquet", out=str(out), force=True)
    assert forced["unchanged"] is False
    assert json.loads((out / "manifest.json").read_text())["export_run_id"] == forced["run_id"]

    assert export_flow(format="parquet", out=str(out), seed=3)["unchanged"] is False
    assert export_flow(format="parquet", out=str(out), seed=3)["unchanged"] is True
    assert export_flow(format="parquet", out=str(out), seed=3, shard_size=2)["unchanged"] is False

    shard = sorted((out / "data").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    repaired = export_flow(format="parquet", out=str(out), seed=3, shard_size=2)
    assert repaired["unchanged"] is False
    entry = next(
        f for f in json.loads((out / "manifest.json").read_text())["files"] if f["path"].endswith(shard.name)
    )
    assert shard.stat().st_size == entry["bytes"]
