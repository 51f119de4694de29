"""The validate flow and command end to end: results stored, Data Docs built, a summary artifact,
exit code 1 on a blocking failure, and the gate closed by it."""

from __future__ import annotations

import asyncio

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from typer.testing import CliRunner

from expectations import TRAINING_SUITES
from expectations.gate import GateError, check_gate
from flows.cli import app
from flows.validate import validate_flow


def seed(wh, duplicate_image: bool = False) -> None:
    """Two images with a text each, every class with its gloss; optionally one image loaded twice."""

    def write(con):
        con.execute(
            """INSERT INTO images (image_id, wnid, split, path, width, height, sha256, run_id)
               SELECT 'n01440764_' || i, 'n01440764', 'train', '/data/n01440764_' || i || '.JPEG', 50, 40,
                      sha256(i::VARCHAR), 'seed'
               FROM range(2) r(i)"""
        )
        con.execute(
            """INSERT INTO image_texts (text_id, image_id, source, field, text, fetched_at, run_id)
               SELECT 'it-' || image_id, image_id, 'flickr', 'title', 'a tench ' || image_id, now(), 'seed'
               FROM images"""
        )
        con.execute(
            """INSERT INTO class_texts (text_id, wnid, source, field, text, fetched_at, run_id)
               SELECT 'ct-' || wnid, wnid, 'wordnet', 'gloss', gloss, now(), 'seed' FROM classes"""
        )
        if duplicate_image:
            con.execute(
                """INSERT INTO images (image_id, wnid, split, path, width, height, sha256, run_id)
                   VALUES ('n01440764_0', 'n01440764', 'train', '/copy/n01440764_0.JPEG', 50, 40,
                           sha256('copy'), 'seed-again')"""
            )

    wh.write(write)
    wh.close()


async def _artifacts(flow_run_id: str):
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def test_validate_flow_stores_outcomes_builds_docs_and_publishes_a_summary(wh, settings):
    seed(wh)
    snapshot = wh.current_snapshot()
    wh.close()

    summary = validate_flow()

    assert summary["success"] and summary["failed_blocking"] == [] and summary["failed_warnings"] == []
    assert summary["snapshot"] == snapshot
    assert summary["suites"]["text_scores"] == {"skipped": "text_scores is empty"}
    docs = settings.reports_dir / "data_docs" / "index.html"
    assert summary["data_docs"] == str(docs) and docs.exists()
    pages = list((docs.parent / "validations").rglob("*.html"))
    assert len(pages) == 4 and all(summary["run_id"] in str(p) for p in pages)  # one page per suite run
    assert not [p for p in settings.reports_dir.iterdir() if p.name != "data_docs"]  # no staging left

    stored = wh.con.execute(
        "SELECT count(*), count(DISTINCT suite), min(snapshot), max(snapshot), bool_and(success) "
        "FROM validation_results WHERE run_id = ?",
        [summary["run_id"]],
    ).fetchone()
    expected = sum(s["expectations"] for s in summary["suites"].values() if "expectations" in s)
    assert stored == (expected, 4, snapshot, snapshot, True)
    check_gate(wh.con, list(TRAINING_SUITES))

    artifacts = {a.key: a for a in asyncio.run(_artifacts(summary["run_id"]))}
    assert artifacts["validation-summary"].type == "markdown"
    assert "# Validation passed" in artifacts["validation-summary"].data
    assert "| images | 2 |" in artifacts["validation-summary"].data
    assert artifacts["validation-data-docs"].type == "markdown"


def test_validate_command_exits_1_on_a_blocking_failure_and_closes_the_gate(wh):
    seed(wh, duplicate_image=True)

    result = CliRunner().invoke(app, ["validate", "--suite", "images"])

    assert result.exit_code == 1, result.output
    assert "FAILED: images.image_id_unique" in result.output
    assert "images" in result.output and "Data Docs" in result.output
    failed = wh.con.execute(
        "SELECT expectation, unexpected_count FROM validation_latest WHERE suite = 'images' AND NOT success"
    ).fetchall()
    assert failed == [("image_id_unique", 2)]
    with pytest.raises(GateError, match=r"images\.image_id_unique \(2 unexpected\)"):
        check_gate(wh.con, list(TRAINING_SUITES))


def test_validate_command_refuses_an_unknown_suite(home):
    result = CliRunner().invoke(app, ["validate", "--suite", "imgs"])
    assert result.exit_code == 2
    assert "unknown suite imgs" in result.output
