"""`imtext maintenance`: compact the warehouse, expire old snapshots, delete unused Parquet files."""

from __future__ import annotations

import typer

from flows.commands.common import prefect_env, run_flow, user_errors


@user_errors
def maintenance(
    older_than_days: float = typer.Option(
        30.0, "--older-than-days", min=0, help="expire snapshots older than this (named ones are kept)"
    ),
    grace_hours: float = typer.Option(
        24.0, "--grace-hours", min=0, help="delete a data file once unused for this many hours"
    ),
    compact: bool = typer.Option(True, "--compact/--no-compact", help="merge small adjacent files first"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only report what would be expired and deleted"),
) -> None:
    """Compact the warehouse, expire old snapshots and delete the Parquet files no snapshot needs."""
    prefect_env()
    from flows.maintenance import maintenance_flow

    summary = run_flow(
        maintenance_flow,
        older_than_days=older_than_days,
        grace_hours=grace_hours,
        compact=compact,
        dry_run=dry_run,
    )
    would = "would be " if dry_run else ""
    typer.echo(
        f"{summary['expired_snapshots']} snapshots {would}expired, {summary['deleted_files']} files {would}"
        f"deleted{', small files compacted' if summary['compacted'] else ''}; snapshot {summary['snapshot']}"
    )


def register(app: typer.Typer) -> None:
    app.command("maintenance")(maintenance)
