"""`imtext serve`: local Prefect server + work pool + every deployment + a worker, for the UI."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from flows.commands.common import prefect_env, user_errors


@user_errors
def serve(
    host: str = typer.Option("127.0.0.1", help="address the Prefect server listens on"),
    port: int = typer.Option(4200, help="port of the Prefect server (UI and REST API)"),
    server: bool = typer.Option(
        True, "--server/--no-server", help="start a local server; --no-server uses PREFECT_API_URL"
    ),
    worker: bool = typer.Option(True, "--worker/--no-worker", help="start a process worker on the pool"),
    limit: int = typer.Option(0, help="flow runs the worker runs at once; 0 means no limit"),
    prefect_file: Path = typer.Option(None, help="deployments file; default the project's prefect.yaml"),
    log_dir: Path = typer.Option(None, help="server and worker logs; default $PREFECT_HOME/serve"),
    only: str = typer.Option(None, help="register only these deployments (comma-separated names)"),
) -> None:
    """Run Prefect locally with every imtext deployment; Ctrl-C stops the server and the worker."""
    from flows.settings import load_settings

    # Flow runs start in the project directory: make IMTEXT_HOME absolute so they find the same
    # warehouse as this shell, and keep Prefect's database beside it unless PREFECT_HOME is set.
    home = load_settings().home.resolve()
    os.environ["IMTEXT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    # The CLI quietens Prefect's logging; flow runs should log at INFO for the UI unless told otherwise.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    prefect_env(api=False)

    from flows.deployments import PREFECT_FILE
    from flows.serve import ServeOptions
    from flows.serve import serve as run_serve

    options = ServeOptions(
        host=host,
        port=port,
        server=server,
        worker=worker,
        worker_limit=limit or None,
        prefect_file=prefect_file or PREFECT_FILE,
        log_dir=log_dir,
        only=frozenset(n.strip() for n in only.split(",") if n.strip()) if only else None,
    )
    code = run_serve(options, echo=typer.echo)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
