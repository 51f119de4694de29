"""Inside a flow run the artifact helpers write markdown, table and link artifacts under their keys."""

from __future__ import annotations

import polars as pl
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.artifacts import publish_link, publish_summary, publish_table


@flow(name="artifacts-probe")
def probe(report: str) -> str:
    """Publish one artifact of each kind and return the flow run id."""
    from prefect.runtime import flow_run

    publish_summary("Probe summary", {"rows": 3, "token": "hidden"}, key="probe-summary")
    publish_table(pl.DataFrame({"wnid": ["n1", "n2"], "n": [1, 2]}), key="probe-table")
    publish_link(report, "report", key="probe-report")
    return str(flow_run.id)


async def _artifacts(run_id: str):
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )


def test_artifacts_are_attached_to_the_flow_run(tmp_path):
    import asyncio

    report = tmp_path / "report.html"
    report.write_text("<html></html>")
    run_id = probe(str(report))
    found = {a.key: a for a in asyncio.run(_artifacts(run_id))}
    assert set(found) == {"probe-summary", "probe-table", "probe-report"}
    assert found["probe-summary"].type == "markdown" and "hidden" not in found["probe-summary"].data
    assert found["probe-table"].type == "table" and "n2" in found["probe-table"].data
    assert found["probe-report"].type == "markdown" and report.as_uri() in found["probe-report"].data
