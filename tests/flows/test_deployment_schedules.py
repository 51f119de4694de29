"""The scheduled maintenance deployments: registered with nightly schedules that are off until the one
switch in prefect.yaml is turned on; registering again updates them in place."""

from __future__ import annotations

from pathlib import Path

from prefect.client.orchestration import get_client

from flows.deployments import PREFECT_FILE, PROJECT_DIR, load_project, setup_project

SCHEDULED = {"maintenance", "harvest-images-retry-failed"}


def schedules_of(registered) -> dict[str, list]:
    with get_client(sync_client=True) as client:
        return {
            name.split("/", 1)[1]: client.read_deployment(deployment_id).schedules
            for name, deployment_id in registered.deployments.items()
        }


def with_switch(tmp_path: Path, on: bool) -> Path:
    text = PREFECT_FILE.read_text()
    assert text.count("scheduled: &scheduled false") == 1  # the one switch
    copy = tmp_path / "prefect.yaml"
    copy.write_text(text.replace("scheduled: &scheduled false", f"scheduled: &scheduled {str(on).lower()}"))
    return copy


def test_maintenance_schedules_are_off_by_default_and_one_switch_turns_them_on(tmp_path):
    spec = {d.name: d for d in load_project().deployments}
    assert SCHEDULED <= {name for name, d in spec.items() if d.schedules}
    assert spec["harvest-images-retry-failed"].parameters == {"embedded": True, "retry_failed": True}

    off = schedules_of(setup_project(PREFECT_FILE, PROJECT_DIR, only=SCHEDULED))
    assert set(off) == SCHEDULED
    assert all(len(s) == 1 and not s[0].active for s in off.values())
    assert off["maintenance"][0].schedule.cron == "30 3 * * *"
    assert off["harvest-images-retry-failed"][0].schedule.cron == "0 2 * * *"

    on = schedules_of(setup_project(with_switch(tmp_path, True), PROJECT_DIR, only=SCHEDULED))
    assert all(len(s) == 1 and s[0].active for s in on.values())  # updated in place, not added
    assert on["maintenance"][0].id == off["maintenance"][0].id
