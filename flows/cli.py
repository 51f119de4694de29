"""The `imtext` command line. Commands import their flows lazily to keep start-up fast."""

from __future__ import annotations

import typer

from flows.commands import sql as sql_cmd

app = typer.Typer(
    name="imtext",
    help="ImageNet + text: ingest, harvest, validate, train, curate and export, on a DuckLake warehouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("sql")(sql_cmd.sql)
app.command("snapshots")(sql_cmd.snapshots)


def _register() -> None:
    """Attach every command module; each imports its flow only when its command runs."""
    import importlib

    for name in ("ingest", "harvest", "validate", "train", "curate", "export", "maintenance", "serve", "demo"):
        importlib.import_module(f"flows.commands.{name}").register(app)


_register()

if __name__ == "__main__":
    app()
