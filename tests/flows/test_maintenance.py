"""Maintenance: old snapshots expire (never one a model, run or export names), unused files are deleted."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner


def parquet_files(settings) -> set[Path]:
    return set(Path(settings.data_path).rglob("*.parquet"))


def fill(wh) -> dict:
    """Three loads, a snapshot a model names, then a load deleted again: its file is needed by no
    snapshot but the unnamed ones in between."""

    def load(c, prefix: str, reason: str) -> None:
        c.execute(
            "INSERT INTO quarantine (path, reason) SELECT ? || range, ? FROM range(3000)", [prefix, reason]
        )

    for batch in range(3):
        wh.write(lambda c, b=batch: load(c, f"b{b}-", "probe"))
    pinned = wh.current_snapshot()
    wh.write(lambda c: c.execute("INSERT INTO models (model_id, snapshot) VALUES ('m1', ?)", [pinned]))
    wh.write(lambda c: load(c, "t-", "temporary"))
    wh.write(lambda c: c.execute("DELETE FROM quarantine WHERE reason = 'temporary'"))
    wh.write(lambda c: c.execute("DELETE FROM quarantine WHERE path LIKE 'b0-%'"))
    return {"pinned": pinned, "latest": wh.current_snapshot()}


def test_maintenance_expires_unnamed_snapshots_and_deletes_their_files(wh, settings):
    from flows.maintenance import maintenance_flow

    state = fill(wh)
    before = parquet_files(settings)
    wh.close()

    dry = maintenance_flow(older_than_days=0, grace_hours=0, dry_run=True)
    assert dry["expired_snapshots"] > 0 and parquet_files(settings) == before  # nothing touched

    done = maintenance_flow(older_than_days=0, grace_hours=0, compact=False)
    assert done["expired_snapshots"] == dry["expired_snapshots"] and done["deleted_files"] >= 1
    after = parquet_files(settings)
    assert len(after) == len(before) - done["deleted_files"] and after < before

    con = wh.reader()
    snapshots = {r[0] for r in con.execute("SELECT snapshot_id FROM ducklake_snapshots('wh')").fetchall()}
    assert {state["pinned"], state["latest"]} <= snapshots  # named and latest snapshots stay
    assert len(snapshots) <= 3
    # the data and the pinned snapshot read as before
    assert con.execute("SELECT count(*) FROM quarantine WHERE reason = 'probe'").fetchone()[0] == 6000
    at_pinned = (
        f"SELECT count(*) FROM quarantine AT (VERSION => {int(state['pinned'])}) WHERE reason = 'probe'"
    )
    assert con.execute(at_pinned).fetchone()[0] == 9000
    con.close()

    again = maintenance_flow(older_than_days=0, grace_hours=0, compact=False)
    assert again["expired_snapshots"] == 0 and again["deleted_files"] == 0


def test_recent_snapshots_are_kept_and_the_cli_reports(wh, settings):
    from flows.cli import app

    fill(wh)
    before = parquet_files(settings)
    wh.close()
    result = CliRunner().invoke(app, ["maintenance", "--no-compact"])  # 30 days: everything is recent
    assert result.exit_code == 0, result.output
    assert "0 snapshots expired, 0 files deleted" in result.output
    assert parquet_files(settings) == before
