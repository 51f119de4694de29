"""Shared helpers of the CLI commands: environment defaults and user-facing error handling."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import typer

F = TypeVar("F", bound=Callable)
T = TypeVar("T")


def prefect_env(api: bool = True) -> None:
    """Offline-friendly Prefect defaults, set before Prefect is first imported.

    With `api`, also the Prefect API the command's runs are recorded on: PREFECT_API_URL or a
    running `imtext serve` when one answers, else a local server started now, while Prefect and
    the flow libraries are imported (see flows/prefect_api.py).
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # The ephemeral API server can take a while to come up on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if api:
        from flows.prefect_api import ensure_api

        ensure_api(preload=PRELOAD)


def run_flow(fn: Callable[..., T], /, *args, **kwargs) -> T:
    """Run a flow (or code that runs flows) in this process, as the CLI commands do.

    Prefect's flow-run heartbeat thread sleeps in one-second steps and is joined when the flow
    ends, so every flow run lasted until the next whole second after its start: 0.5 s on average,
    up to a second, added to every command. Here the heartbeat is off unless
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set: these runs live in the terminal that started them,
    which sees a crash; the runs a worker starts from the deployments keep Prefect's default.
    """
    if any(
        k in os.environ for k in ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")
    ):
        return fn(*args, **kwargs)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return fn(*args, **kwargs)


# What every flow command imports anyway: imported while a local Prefect server starts.
PRELOAD = ("prefect", "prefect.flow_engine", "prefect.task_engine", "polars", "duckdb", "pyarrow")


def user_errors(fn: F) -> F:
    """Turn input and warehouse errors into a one-line message on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from tasks.common.errors import InputError
        from warehouse.db import WarehouseError

        try:
            return fn(*args, **kwargs)
        except (InputError, WarehouseError, FileNotFoundError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("interrupted; re-run the same command to resume", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
