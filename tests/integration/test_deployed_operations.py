"""What a team sees on a served imtext: the maintenance deployment with its schedule off, a run whose
`warehouse.*` log is in the run logs, and a failed validation as an `imtext.validation.failed` event."""

from __future__ import annotations

import time

import pytest

from tests.integration.test_rest_api import assert_completed, base_env, serve, trigger, wait_for_run

pytestmark = pytest.mark.slow


def seed(home) -> None:
    """A warehouse with one image loaded twice (a blocking failure) and a load deleted again."""
    from warehouse.db import Warehouse

    wh = Warehouse(catalog=f"sqlite:{home}/warehouse/catalog.sqlite", data_path=f"{home}/warehouse/data/")
    image = (
        "INSERT INTO images (image_id, wnid, split, path, width, height, sha256, run_id) "
        "VALUES ('n01440764_0', 'n01440764', 'train', ?, 50, 40, sha256(?), 'seed')"
    )
    wh.write(lambda c: c.execute(image, ["/a/n01440764_0.JPEG", "a"]))
    wh.write(lambda c: c.execute(image, ["/b/n01440764_0.JPEG", "b"]))
    load = "INSERT INTO quarantine (path, reason) SELECT 't-' || range, 'temporary' FROM range(3000)"
    wh.write(lambda c: c.execute(load))
    wh.write(lambda c: c.execute("DELETE FROM quarantine WHERE reason = 'temporary'"))
    wh.close()


def run_logs(served, run_id: str) -> list[dict]:
    found = served.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    assert found.ok, found.text
    return found.json()


def events_of(served, name: str, run_id: str, timeout_s: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        page = served.post("/events/filter", {"filter": {"event": {"name": [name]}}, "limit": 50}).json()
        found = [
            e
            for e in page["events"]
            if any(r["prefect.resource.id"] == f"prefect.flow-run.{run_id}" for r in e["related"])
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_maintenance_and_validation_as_a_team_sees_them(tmp_path):
    env = base_env(tmp_path)
    seed(tmp_path / "home")
    with serve(env, only="maintenance,validate") as served:
        deployment = served.get("/deployments/name/maintenance/maintenance").json()
        assert [(s["schedule"]["cron"], s["active"]) for s in deployment["schedules"]] == [
            ("30 3 * * *", False)
        ]

        run_id = trigger(served, "maintenance", "maintenance", {"older_than_days": 0, "grace_hours": 0})
        run = wait_for_run(served, run_id)
        assert_completed(served, run)
        # a log of the project's own `warehouse.db` logger, stored with the run's logs (logs are
        # shipped in batches, so they may land a moment after the run is marked completed)
        deadline = time.monotonic() + 30
        while True:
            logs = [(entry["name"], entry["message"]) for entry in run_logs(served, run_id)]
            found = [m for n, m in logs if n == "warehouse.db" and "files were deleted" in m]
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert found and found[0].endswith("expired, 1 files were deleted"), logs

        run_id = trigger(served, "validate", "validate", {"suite": "images"})
        assert_completed(served, wait_for_run(served, run_id))  # a failed check is an outcome, not a crash
        (event,) = events_of(served, "imtext.validation.failed", run_id)
        assert event["resource"]["prefect.resource.id"] == "imtext.warehouse"
        assert event["payload"]["failed_blocking"] == ["images.image_id_unique"]
