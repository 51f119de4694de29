"""`imtext train` run again over unchanged texts with the same options keeps the last run and writes nothing."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.flows.test_train import _models
from tests.unit.test_classifier import one_torch_thread  # noqa: F401 - autouse fixture
from tests.unit.test_training import seed_warehouse

# The baseline alone: quick, and the keep/train decision is the same for every kind.
BASELINE = dict(
    base_model="tiny-roberta", folds=2, transformer=False, frozen_encoder="none", allow_invalid=True
)


@pytest.fixture
def seeded(wh):
    seed_warehouse(wh)
    wh.close()
    return wh


def _runs(wh) -> list[str]:
    return [
        r[0] for r in wh.reader().execute("SELECT run_id FROM training_runs ORDER BY started_at").fetchall()
    ]


def test_a_second_run_keeps_the_first_and_writes_nothing(seeded):
    from flows.cli import app
    from flows.train import train_flow

    first = train_flow(**BASELINE)
    rows, snapshot = _models(seeded), seeded.current_snapshot()
    again = train_flow(**BASELINE)
    assert again["unchanged"] and again["run_id"] == first["run_id"]
    assert sorted(again["models"]) == sorted(first["models"]) and again["held_out"] == first["held_out"]
    assert {k: again[k] for k in ("classes", "image_texts", "class_texts", "junk_excluded", "snapshot")} == {
        k: first[k] for k in ("classes", "image_texts", "class_texts", "junk_excluded", "snapshot")
    }
    assert seeded.current_snapshot() == snapshot  # no run row, no folds, no model rows
    assert _models(seeded) == rows and _runs(seeded) == [first["run_id"]]
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--no-transformer",
            "--frozen-encoder",
            "none",
            "--allow-invalid",
            "--base-model",
            "tiny-roberta",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"unchanged: the options and texts of run {first['run_id']}" in result.output
    assert seeded.current_snapshot() == snapshot


def test_new_texts_other_options_no_resume_or_a_lost_model_train_again(seeded):
    from flows.train import train_flow

    first = train_flow(**BASELINE)
    # other options
    seed1 = train_flow(**BASELINE, seed=1)
    assert not seed1.get("unchanged") and seed1["run_id"] != first["run_id"]
    # the same options as that last run, but --no-resume
    forced = train_flow(**BASELINE, seed=1, resume=False)
    assert not forced.get("unchanged") and forced["run_id"] != seed1["run_id"]
    # a model folder of the last run is gone
    lost = Path(next(r["path"] for r in _models(seeded) if r["run_id"] == forced["run_id"]))
    shutil.rmtree(lost)
    rebuilt = train_flow(**BASELINE, seed=1)
    assert not rebuilt.get("unchanged") and lost.exists()
    assert train_flow(**BASELINE, seed=1)["unchanged"]
    # a new image text
    seeded.write(
        lambda con: con.execute(
            "INSERT INTO image_texts (text_id, image_id, source, field, text, junk, fetched_at) "
            "VALUES ('new-text', 'n01440764_0', 'test', 'title', 'a tench caught at the lake', NULL, ?)",
            [dt.datetime.now(dt.UTC)],
        )
    )
    after = train_flow(**BASELINE, seed=1)
    assert not after.get("unchanged") and after["image_texts"] == rebuilt["image_texts"] + 1
    assert len(_runs(seeded)) == 5
