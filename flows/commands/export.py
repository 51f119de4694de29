"""`imtext export`: write the curated dataset."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from flows.commands.common import prefect_env, user_errors


class ExportFormat(str, Enum):
    parquet = "parquet"
    webdataset = "webdataset"
    hf = "hf"


@user_errors
def export(
    format: ExportFormat = typer.Option(
        ExportFormat.parquet,
        "--format",
        "-f",
        help="parquet (partitioned by class), webdataset (tar shards) or hf",
    ),
    out: Path = typer.Option(
        None, "--out", "-o", help="output folder [default: $IMTEXT_HOME/exports/<format>]"
    ),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="samples per shard / parquet file"),
    only_with_text: bool = typer.Option(
        False, "--only-with-text/--all-images", help="leave out images none of whose texts were kept"
    ),
) -> None:
    """Write images, classes, class descriptions and the kept image descriptions, with a manifest."""
    prefect_env()
    from flows.export import export_flow

    summary = export_flow(
        format=format.value,
        out=str(out) if out else None,
        shard_size=shard_size,
        only_with_text=only_with_text,
    )
    typer.echo(
        f"exported {summary['images']:,} images, {summary['texts']:,} kept texts, {summary['classes']:,} classes "
        f"as {summary['format']} ({summary['files']:,} files) to {summary['out']}"
    )
    typer.echo(f"manifest: {summary['manifest']} (warehouse snapshot {summary['snapshot']})")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
