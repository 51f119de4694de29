"""The validation gate: what training checks before it starts."""

from __future__ import annotations

import datetime as dt

import pytest

from expectations import TRAINING_SUITES, runner
from expectations.gate import GateError, check_gate, gate_status
from tasks.common.errors import InputError
from warehouse.db import Warehouse


@pytest.fixture(scope="module")
def module_wh(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gate")
    wh = Warehouse(f"sqlite:{directory / 'catalog.sqlite'}", str(directory / "data") + "/")
    yield wh
    wh.close()


@pytest.fixture
def gate_wh(module_wh):
    """The module's warehouse with no validation stored yet."""
    module_wh.write(lambda con: con.execute("DELETE FROM validation_results"))
    return module_wh


def store(wh, run_id: str, at: int, **checks: bool | tuple[bool, bool]) -> None:
    """Store a validation run: suite__check=success, or (success, blocking); validated `at` minutes in."""
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=at)
    runs: dict[str, runner.SuiteRun] = {}
    for key, value in checks.items():
        suite, check = key.split("__")
        success, blocking = value if isinstance(value, tuple) else (value, True)
        run = runs.setdefault(suite, runner.SuiteRun(suite=suite, rows=10, validated_at=when))
        run.outcomes.append(runner.Outcome(suite, check, blocking, success, 0 if success else 3, 10, {}))
    runner.store(wh, runner.Report(run_id=run_id, snapshot=at, runs=list(runs.values())))


def passing_run(wh, run_id: str, at: int) -> None:
    store(
        wh,
        run_id,
        at,
        **{f"{s}__has_rows": (True, False) for s in TRAINING_SUITES},
        images__image_id_unique=True,
    )


def test_never_validated_closes_the_gate(gate_wh):
    with pytest.raises(GateError, match="never validated: classes, images, class_texts, image_texts") as info:
        check_gate(gate_wh.con, list(TRAINING_SUITES))
    assert isinstance(info.value, InputError)
    assert info.value.missing == list(TRAINING_SUITES)
    assert "--allow-invalid" in str(info.value)


def test_a_failed_blocking_expectation_closes_the_gate_and_is_named(gate_wh):
    passing_run(gate_wh, "r1", at=1)
    store(gate_wh, "r2", at=2, images__image_id_unique=False, images__path_unique=True)
    with pytest.raises(GateError, match=r"images\.image_id_unique \(3 unexpected\)") as info:
        check_gate(gate_wh.con, list(TRAINING_SUITES))
    assert info.value.failed == ["images.image_id_unique"]
    assert info.value.missing == []


def test_warnings_do_not_close_the_gate(gate_wh):
    passing_run(gate_wh, "r1", at=1)
    store(gate_wh, "r2", at=2, images__sha256_single_class=(False, False))
    check_gate(gate_wh.con, list(TRAINING_SUITES))


def test_the_latest_validation_of_each_suite_counts(gate_wh):
    passing_run(gate_wh, "r1", at=1)
    store(gate_wh, "r2", at=2, class_texts__no_duplicate_text=False)
    with pytest.raises(GateError, match="class_texts.no_duplicate_text"):
        check_gate(gate_wh.con, list(TRAINING_SUITES))
    store(gate_wh, "r3", at=3, class_texts__no_duplicate_text=True)  # fixed and validated again
    check_gate(gate_wh.con, list(TRAINING_SUITES))
    assert gate_status(gate_wh.con, ["class_texts", "images"])["runs"]["class_texts"]["run_id"] == "r3"


def test_only_the_suites_asked_for_matter(gate_wh):
    passing_run(gate_wh, "r1", at=1)
    store(gate_wh, "r2", at=2, text_scores__p_true_in_0_1=False)
    check_gate(gate_wh.con, list(TRAINING_SUITES))
    with pytest.raises(GateError, match="text_scores.p_true_in_0_1"):
        check_gate(gate_wh.con, ["text_scores"])


def test_a_seeded_defect_validated_and_stored_closes_the_gate(gate_wh):
    def seed(con):
        for path, sha in (("/data/a.JPEG", "a" * 64), ("/data/b.JPEG", "b" * 64)):  # one id, two files
            con.execute(
                "INSERT INTO images (image_id, wnid, split, path, width, height, sha256, run_id) "
                "VALUES ('n01440764_1', 'n01440764', 'train', ?, 5, 5, ?, 'seed')",
                [path, sha],
            )

    gate_wh.write(seed)
    try:
        report = runner.validate(gate_wh.con, "images", gate_wh.current_snapshot(), run_id="seeded")
        runner.store(gate_wh, report)
        store(
            gate_wh,
            "others",
            at=0,
            **{f"{s}__has_rows": True for s in ("classes", "class_texts", "image_texts")},
        )
        with pytest.raises(GateError, match=r"images\.image_id_unique \(2 unexpected\)"):
            check_gate(gate_wh.con, list(TRAINING_SUITES))
    finally:
        gate_wh.write(lambda con: con.execute("DELETE FROM images"))
