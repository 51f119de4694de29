"""A blocking validation failure is a Prefect event (`imtext.validation.failed`) an automation can react to."""

from __future__ import annotations

import time

from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.events.worker import EventsWorker

from flows.validate import VALIDATION_FAILED, VALIDATION_PASSED, WAREHOUSE_RESOURCE, validate_flow
from tests.flows.test_validate import seed


def stored_events(name: str, run_id: str, timeout_s: float = 30.0) -> list:
    """The events of that name related to the flow run, once the server has stored them."""
    EventsWorker.drain_all(timeout=10)
    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50)
        found = [e for e in page.events if any(r.id == f"prefect.flow-run.{run_id}" for r in e.related)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_blocking_failure_emits_the_failed_event_with_what_failed(wh):
    seed(wh, duplicate_image=True)

    summary = validate_flow(suite="images")

    assert not summary["success"]
    events = stored_events(VALIDATION_FAILED, summary["run_id"])
    assert len(events) == 1
    event = events[0]
    assert event.resource.id == WAREHOUSE_RESOURCE
    assert event.payload["failed_blocking"] == ["images.image_id_unique"]
    assert event.payload["snapshot"] == summary["snapshot"] and event.payload["suites"] == "images"
    assert stored_events(VALIDATION_PASSED, summary["run_id"], timeout_s=0) == []
