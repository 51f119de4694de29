"""What every flow needs at start: settings, the warehouse handle, a run id, progress reporting,
its retry policy, and the project's loggers in the run logs."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from flows.settings import Settings, load_settings
from warehouse.db import Warehouse

F = TypeVar("F", bound=Callable)
log = logging.getLogger(__name__)

# Every flow is safe to run again (loads are MERGEs or anti-joins, harvests and scoring resume), so
# a failed run of a deployment is retried once after a pause: long enough for a busy catalog, a
# restarted worker or a flaky network to recover. User errors are final (`final_on_user_error`).
FLOW_RETRIES = 1
FLOW_RETRY_DELAY_S = 60
FLOW_RETRY = {"retries": FLOW_RETRIES, "retry_delay_seconds": FLOW_RETRY_DELAY_S}

# The project's own loggers, whose records go to the run logs in the UI (what Prefect's
# PREFECT_LOGGING_EXTRA_LOGGERS does, plus their level and no warnings outside a run).
PROJECT_LOGGERS = ("tasks", "warehouse", "expectations", "flows")


def final_on_user_error(*extra: type[BaseException]) -> Callable[[F], F]:
    """Decorate a flow's function (under `@flow`): a user error, or one of `extra`, ends the run
    without the retries the flow has for transient failures (a second try would fail the same way,
    after the delay)."""
    from tasks.common.retrying import USER_ERRORS

    final = (*USER_ERRORS, *extra)

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except final:
                stop_retries()
                raise

        # Prefect validates parameters against the signature with the wrapper's module globals:
        # hand it the signature with its annotations already evaluated in the flow's own module.
        wrapper.__signature__ = inspect.signature(fn, eval_str=True)
        return wrapper  # type: ignore[return-value]

    return decorate


def stop_retries() -> bool:
    """Set the current flow run's retries to 0 on the server; True when there was a run to update."""
    try:
        from prefect import get_client
        from prefect.context import FlowRunContext

        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None:
            return False
        policy = ctx.flow_run.empirical_policy.model_copy(update={"retries": 0})
        with get_client(sync_client=True) as client:
            client.update_flow_run(ctx.flow_run.id, empirical_policy=policy)
        ctx.flow_run.empirical_policy = policy
        return True
    except Exception as exc:  # the run still fails with the user's error, only perhaps after a retry
        log.warning("could not cancel the retries of this flow run: %s", exc)
        return False


class _InRun(logging.Filter):
    """Pass records made inside a flow or task run: outside one there is no run log to write to."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.context import FlowRunContext, TaskRunContext

        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def attach_project_loggers() -> None:
    """Send records of the project's loggers (`tasks.*`, `warehouse.*`, ...) to the run logs in the UI.

    Each gets Prefect's API log handler (once, also when PREFECT_LOGGING_EXTRA_LOGGERS already gave it
    one) and, when it has no level of its own, Prefect's log level (PREFECT_LOGGING_LEVEL: INFO by
    default, WARNING in CLI runs), so `log.info` in a task reaches the run page.
    """
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_LOGGING_LEVEL

    level = logging.getLevelName(str(PREFECT_LOGGING_LEVEL.value()).upper())
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):
            handler = APILogHandler()
            handler.addFilter(_InRun())
            logger.addHandler(handler)
        if logger.level == logging.NOTSET and isinstance(level, int):
            logger.setLevel(level)


def run_id() -> str:
    """The Prefect flow run id when inside a flow run, else a fresh uuid (plain function calls).

    Called first thing by every flow, so it also sends the project's loggers to the run logs.
    """
    try:
        attach_project_loggers()
    except Exception as exc:  # logging is never worth failing the run for
        log.debug("project loggers not attached: %s", exc)
    try:
        from prefect.runtime import flow_run

        rid = flow_run.id
        if rid:
            return str(rid)
    except Exception:
        pass
    return str(uuid.uuid4())


def open_warehouse(settings: Settings | None = None) -> Warehouse:
    """One read-write handle per flow run, schema applied; pass it down to tasks."""
    settings = settings or load_settings()
    wh = Warehouse.from_settings(settings)
    wh.con  # noqa: B018 - attaches the catalog and applies the schema now, not mid-task
    return wh


class Progress:
    """Progress of long work: a Prefect progress artifact on the flow run and a line on the terminal.

    Updates are throttled (at most one every `every_s` seconds) so a million items cost nothing.
    """

    def __init__(self, total: int, description: str, every_s: float = 1.0, terminal: bool | None = None):
        self.total = max(int(total), 0)
        self.done = 0
        self.description = description
        self.every_s = every_s
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self._last = 0.0
        self._start = time.monotonic()
        self._artifact_id = None
        try:
            from prefect.artifacts import create_progress_artifact
            from prefect.context import FlowRunContext

            if FlowRunContext.get() is not None:
                self._artifact_id = create_progress_artifact(progress=0.0, description=description)
        except Exception:
            self._artifact_id = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            self._report()

    def _report(self) -> None:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        if self._artifact_id is not None:
            try:
                from prefect.artifacts import update_progress_artifact

                update_progress_artifact(artifact_id=self._artifact_id, progress=min(pct, 100.0))
            except Exception:
                self._artifact_id = None
        if self.terminal:
            rate = self.done / max(time.monotonic() - self._start, 1e-9)
            sys.stderr.write(f"\r{self.description}: {self.done}/{self.total} ({pct:5.1f}%, {rate:,.0f}/s)")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.done < self.total:
            self.done = self.total
        self._report()
