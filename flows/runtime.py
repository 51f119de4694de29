"""What every flow needs at start: settings, the warehouse handle, a run id, progress reporting."""

from __future__ import annotations

import sys
import time
import uuid

from flows.settings import Settings, load_settings
from warehouse.db import Warehouse


def run_id() -> str:
    """The Prefect flow run id when inside a flow run, else a fresh uuid (plain function calls)."""
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
