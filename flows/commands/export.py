"""`imtext export`: write the curated dataset."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from flows.commands.common import prefect_env, run_flow, user_errors


class ExportFormat(str, Enum):
    parquet = "parquet"
    webdataset = "webdataset"
    hf = "hf"


def preflight(out: Path | None, fmt: str, shard_size: int, shard_max_mb: float) -> None:
    """Check the options, the target folder and that a curation finished, before any flow starts.

    A failed check is one line and exit code 2, not a flow run with a traceback.
    """
    from flows.settings import load_settings
    from tasks.common.errors import InputError
    from tasks.export.options import options_from
    from tasks.export.read import check_ready
    from tasks.export.target import check_target
    from warehouse.db import Warehouse, WarehouseError

    options_from(shard_size, shard_max_mb, 0, False)
    settings = load_settings()
    check_target(out or settings.home / "exports" / fmt)
    try:
        con = Warehouse.from_settings(settings).reader()
    except WarehouseError as exc:
        raise InputError(
            f"no curation has finished yet: run `imtext curate` before `imtext export` ({exc})"
        ) from None
    try:
        check_ready(con)
    finally:
        con.close()


@user_errors
def export(
    format: ExportFormat = typer.Option(
        ExportFormat.parquet,
        "--format",
        "-f",
        help="parquet (data/{split}-*.parquet), webdataset ({split}/shard-*.tar) or hf (a DatasetDict folder)",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        "-o",
        help="output folder (default $IMTEXT_HOME/exports/<format>); only a folder an earlier export wrote is replaced",
    ),
    shard_size: int = typer.Option(1000, "--shard-size", help="samples per shard / parquet file, at most"),
    shard_max_mb: float = typer.Option(500.0, "--shard-max-mb", help="MB per shard / parquet file, at most"),
    seed: int = typer.Option(0, "--seed", help="seed of the sample order within each split"),
    only_with_text: bool = typer.Option(
        False,
        "--only-with-text/--all-images",
        help="export only the images with at least one kept text, or all images",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="write the export again; by default an export in --out of the same options whose tables are "
        "unchanged since it was written is kept as it is",
    ),
) -> None:
    """Write images, labels, class descriptions and the kept image texts, with a dataset card and manifest."""
    prefect_env()  # before tasks.export imports Prefect
    preflight(out, format.value, shard_size, shard_max_mb)
    from flows.export import export_flow

    summary = run_flow(
        export_flow,
        format=format.value,
        out=str(out) if out else None,
        shard_size=shard_size,
        shard_max_mb=shard_max_mb,
        seed=seed,
        only_with_text=only_with_text,
        force=force,
    )
    if summary["unchanged"]:
        typer.echo(
            f"unchanged since warehouse snapshot {summary['snapshot']}: the export in {summary['out']} is kept "
            "as it is (--force writes it again)"
        )
    splits = ", ".join(f"{s} {i['images']:,}" for s, i in summary["splits"].items())
    typer.echo(
        f"exported {summary['images']:,} images ({splits}), {summary['texts']:,} kept texts, "
        f"{summary['classes']:,} classes as {summary['format']} ({summary['files']:,} files) to {summary['out']}"
    )
    typer.echo(f"dataset card: {summary['card']}")
    typer.echo(f"manifest: {summary['manifest']} (warehouse snapshot {summary['snapshot']})")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
