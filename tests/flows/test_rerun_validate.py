"""`imtext validate` over unchanged data: a suite whose tables and definition did not change since its
last validation keeps that outcome (a failure stays one) without being evaluated again; a change to
a table it reads, a new definition or `--force` evaluates it again."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from expectations import TRAINING_SUITES, runner
from expectations.gate import GateError, check_gate
from flows.cli import app
from flows.validate import validate_flow
from tests.flows.test_validate import seed

ALL = ["classes", "images", "class_texts", "image_texts", "text_scores", "models"]


def counts(wh) -> tuple[int, int]:
    con = wh.con
    results = con.execute("SELECT count(*) FROM validation_results").fetchone()[0]
    runs = con.execute("SELECT count(*) FROM validation_runs").fetchone()[0]
    wh.close()
    return results, runs


def refuse_evaluation(monkeypatch) -> None:
    """From now on evaluating a suite fails the test: a reused suite is neither read nor evaluated."""

    def refuse(*args, **kwargs):
        raise AssertionError("a suite was evaluated")

    monkeypatch.setattr(runner, "run_suite", refuse)
    monkeypatch.setattr(runner, "read_frame", refuse)


def test_a_second_run_over_unchanged_data_reuses_every_outcome(wh, settings, monkeypatch):
    seed(wh)
    first = validate_flow()
    assert first["reused"] == [] and first["success"]
    docs = settings.reports_dir / "data_docs" / "index.html"
    docs_mtime = docs.stat().st_mtime_ns
    results, runs = counts(wh)

    refuse_evaluation(monkeypatch)
    again = validate_flow()

    assert again["reused"] == ALL and again["success"]
    for name in ("classes", "images", "class_texts", "image_texts"):
        info, before = again["suites"][name], first["suites"][name]
        assert info["reused"] == first["run_id"] and info["validated_snapshot"] == first["snapshot"]
        assert (info["rows"], info["expectations"], info["failed"]) == (
            before["rows"],
            before["expectations"],
            0,
        )
    assert again["suites"]["text_scores"]["skipped"] == "text_scores is empty"
    assert again["data_docs"] == str(docs) and docs.stat().st_mtime_ns == docs_mtime
    # no new outcome rows: one reuse record per suite, naming the run whose outcome stands
    assert counts(wh) == (results, runs + len(ALL))
    records = wh.con.execute(
        "SELECT suite, source, outcome_run, outcome_snapshot, snapshot, recorded_at IS NOT NULL "
        "FROM validation_runs WHERE run_id = ? ORDER BY suite",
        [again["run_id"]],
    ).fetchall()
    assert records == [
        (name, "reused", first["run_id"], first["snapshot"], again["snapshot"], True) for name in sorted(ALL)
    ]
    check_gate(wh.con, list(TRAINING_SUITES))


def test_a_change_to_a_table_evaluates_again_the_suites_that_read_it(wh):
    seed(wh)
    first = validate_flow()
    wh.write(
        lambda c: c.execute(
            "INSERT INTO image_texts (text_id, image_id, source, field, text, fetched_at, run_id) "
            "VALUES ('it-new', 'n01440764_0', 'flickr', 'description', 'a fish', now(), 'later')"
        )
    )
    wh.close()

    again = validate_flow()

    # image_texts changed: its suite and text_scores (which reads it) are checked again, the rest stand
    assert again["reused"] == ["classes", "images", "class_texts", "models"]
    assert "reused" not in again["suites"]["image_texts"]
    assert again["suites"]["image_texts"]["rows"] == first["suites"]["image_texts"]["rows"] + 1
    fresh = wh.con.execute(
        "SELECT DISTINCT suite FROM validation_results WHERE run_id = ?", [again["run_id"]]
    ).fetchall()
    assert fresh == [("image_texts",)]


def test_a_failing_suite_stays_failing_when_its_outcome_is_reused(wh, monkeypatch):
    seed(wh, duplicate_image=True)
    first = CliRunner().invoke(app, ["validate", "--suite", "images"])
    assert first.exit_code == 1, first.output
    results, _ = counts(wh)

    refuse_evaluation(monkeypatch)
    again = CliRunner().invoke(app, ["validate", "--suite", "images"])

    assert again.exit_code == 1, again.output
    assert "FAILED: images.image_id_unique" in again.output
    assert "outcome reused" in again.output
    assert counts(wh)[0] == results
    with pytest.raises(GateError, match=r"images\.image_id_unique \(2 unexpected\)"):
        check_gate(wh.con, list(TRAINING_SUITES))


def test_force_and_a_new_suite_definition_evaluate_again(wh, monkeypatch):
    seed(wh)
    assert CliRunner().invoke(app, ["validate", "--suite", "images,models"]).exit_code == 0
    results, _ = counts(wh)

    forced = CliRunner().invoke(app, ["validate", "--suite", "images,models", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "outcome reused" not in forced.output
    added = counts(wh)[0] - results
    assert added > 0  # the images suite's outcomes once more

    import expectations.reuse as reuse

    fingerprint = reuse.definition
    monkeypatch.setattr(
        reuse, "definition", lambda suite: fingerprint(suite) + ("-new" if suite == "images" else "")
    )
    changed = validate_flow(suite="images,models")
    assert changed["reused"] == ["models"]
    assert counts(wh)[0] - results == 2 * added
