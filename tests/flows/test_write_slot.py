"""warehouse_write_slot: one slot of the `warehouse-write` global limit inside a flow run, none outside."""

from __future__ import annotations

from prefect import flow
from prefect.client.orchestration import get_client

from flows.deployments import WAREHOUSE_WRITE_LIMIT, warehouse_write_slot


def _active_slots() -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(WAREHOUSE_WRITE_LIMIT).active_slots


@flow(name="write-slot-probe")
def probe() -> int:
    """Report the limit's active slots while holding the write slot."""
    with warehouse_write_slot(timeout_s=30):
        return _active_slots()


def test_write_slot_is_held_in_a_flow_run_and_released_after():
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(WAREHOUSE_WRITE_LIMIT, 1)
    assert probe() == 1
    assert _active_slots() == 0
    with warehouse_write_slot():  # outside a flow run: nothing to acquire
        assert _active_slots() == 0
