"""The curate run page tells the story: its report is a markdown artifact with figures and charts."""

from __future__ import annotations

import base64
import re

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from tests.flows.test_curate_data import build_world, train_models


def run_artifacts(flow_run_id: str) -> dict:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found if a.key}


def test_curation_report_is_a_markdown_artifact_with_inline_charts(wh, settings, tmp_path):
    from flows.curate import curate_flow

    world = build_world(wh, tmp_path / "world", per_class=4)
    train_models(wh, world, settings.models_dir, kinds=("baseline",))
    wh.close()
    summary = curate_flow(
        scorer="baseline", labels=str(world["labels"]), masked_texts=0, min_p_true=0.3, top_k=1
    )

    found = run_artifacts(summary["run_id"])
    report = found["curation-report"]
    assert report.type == "markdown" and "file://" not in report.data
    text = report.data
    # the decision counts of this run, and the measured precision and recall
    assert f"| {summary['texts']} | {summary['kept']} | {summary['dropped']} |" in text
    assert "## Labelled relevance" in text and f"{summary['precision']:.4g}" in text
    charts = {
        alt: base64.b64decode(data).decode()
        for alt, data in re.findall(r"!\[([^\]]*)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)", text)
    }
    assert {"p_true of every scored text, kept and dropped", "kept ratio per class"} <= set(charts)
    classes = int(summary["texts"] > 0) and len(world["texts"]["wnid"].unique())
    assert charts["kept ratio per class"].count("<rect") >= classes
    assert found["curation-classes"].type == "table" and found["curation-summary"].type == "markdown"
