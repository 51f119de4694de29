"""`imtext train` end to end on tiny generated data: registry rows, files, report, resume, gate, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.unit.test_classifier import one_torch_thread  # noqa: F401 - autouse fixture
from tests.unit.test_training import seed_warehouse

QUICK = dict(base_model="tiny-roberta", folds=2, max_steps=40, batch_size=8, allow_invalid=True)


@pytest.fixture
def seeded(wh):
    seed_warehouse(wh)
    wh.close()  # the flow opens its own handle
    return wh


def _models(wh):
    rows = (
        wh.reader()
        .execute(
            "SELECT model_id, base_model, fold, folds, snapshot, params, metrics, path, duration_s, device, run_id "
            "FROM models ORDER BY base_model, fold, model_id"
        )
        .fetchall()
    )
    cols = [
        "model_id",
        "base_model",
        "fold",
        "folds",
        "snapshot",
        "params",
        "metrics",
        "path",
        "duration_s",
        "device",
        "run_id",
    ]
    return [
        dict(zip(cols, r, strict=True)) | {"params": json.loads(r[5]), "metrics": json.loads(r[6])}
        for r in rows
    ]


def test_train_flow_registers_both_kinds_per_fold_and_reports(seeded, settings):
    from flows.train import train_flow
    from tasks.model.baseline import load_baseline
    from tasks.model.classifier import labels_of, load_classifier, predict_proba

    summary = train_flow(**QUICK)
    rows = _models(seeded)
    # four kinds, each K fold models and one on everything: the encoder-based two use the offline MiniLM
    assert len(rows) == 12 and len(summary["models"]) == 12
    for kind in ("frozen", "similarity"):
        mine = [r for r in rows if r["params"]["kind"] == kind]
        assert sorted(r["fold"] for r in mine) == [-1, 0, 1] and {r["base_model"] for r in mine} == {
            "minilm-offline"
        }
        assert all(r["metrics"]["top1"] >= 0.6 for r in mine if r["fold"] >= 0), mine  # chance is 0.25
        assert all(r["params"]["temperature"] > 0 for r in mine)
    from tasks.model.encoders import EncoderScorer

    frozen = EncoderScorer.load(
        next(r for r in rows if r["params"]["kind"] == "frozen" and r["fold"] == -1)["path"]
    )
    assert frozen.labels[frozen.predict_proba(["a goldfish swimming in its bowl"]).argmax()] == "n01443537"
    for kind, base in (("baseline", "tfidf-linear"), ("transformer", "tiny-roberta")):
        mine = [r for r in rows if r["params"]["kind"] == kind]
        assert sorted(r["fold"] for r in mine) == [-1, 0, 1] and {r["base_model"] for r in mine} == {base}
        for r in mine:
            assert {"seed", "folds", "kind", "max_length"} <= r["params"].keys()
            assert (
                r["run_id"] == summary["run_id"] and r["folds"] == 2 and r["snapshot"] == summary["snapshot"]
            )
            assert r["metrics"]["train_samples"] > 0 and r["metrics"]["texts_per_s"] > 0
            assert Path(r["path"]).parent == (settings.home / "models").resolve()
            if r["fold"] < 0:
                assert r["metrics"]["top1"] is None
            else:
                assert r["metrics"]["top1"] >= 0.6, r  # chance is 0.25
                assert r["metrics"]["macro_f1"] is not None and r["metrics"]["top5"] == 1.0
    # every saved model loads and maps its outputs to wnids
    transformer = next(r for r in rows if r["params"]["kind"] == "transformer" and r["fold"] == -1)
    model, tokenizer = load_classifier(transformer["path"])
    assert labels_of(model) == ["n01440764", "n01443537", "n02099601", "n04398044"]
    assert predict_proba(model, tokenizer, ["goldfish bowl"]).shape == (1, 4)
    base = load_baseline(
        next(r for r in rows if r["base_model"] == "tfidf-linear" and r["fold"] == 0)["path"]
    )
    assert base.predict_proba(["teapot tea"]).argmax() == 3
    # the run, its curves and its report
    con = seeded.reader()
    status, report = con.execute("SELECT status, report_path FROM training_runs").fetchone()
    assert status == "done" and Path(report) == Path(summary["report"])
    text = Path(report).read_text()
    assert "tfidf-linear" in text and "tiny-roberta" in text and "<svg" in text
    assert con.execute("SELECT count(*) FROM training_history WHERE kind = 'eval'").fetchone()[0] >= 2
    assert con.execute("SELECT count(*) FROM latest_models").fetchone()[0] == 12
    # the folds are stored per run, one row per training image
    assert con.execute("SELECT count(DISTINCT image_id) FROM training_folds").fetchone()[0] == 64
    assert summary["held_out"]["baseline"]["top1"] >= 0.9
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[summary["run_id"]]))
        )
    kinds = {a.key: a.type for a in found if a.key}
    assert kinds["training-metrics"] == "table" and "training-report" in kinds and "training-summary" in kinds

    # A second run over the same data and settings keeps the first: same run, same models, no new rows.
    again = train_flow(**QUICK)
    assert again["unchanged"] and again["run_id"] == summary["run_id"]
    assert sorted(again["models"]) == sorted(summary["models"])
    assert again["held_out"] == summary["held_out"]
    assert _models(seeded) == rows


def test_gate_refuses_unvalidated_data(seeded):
    from expectations.gate import GateError
    from flows.train import train_flow

    with pytest.raises(GateError, match="allow-invalid"):
        train_flow(base_model="tiny-roberta", max_steps=1)


def test_cli_names_offline_aliases_for_a_missing_model(seeded, monkeypatch, tmp_path):
    from flows.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))
    result = CliRunner().invoke(
        app, ["train", "--base-model", "no-such-org/no-such-model", "--allow-invalid", "--no-baseline"]
    )
    assert result.exit_code == 2, result.output
    assert "minilm-offline" in result.output and "tiny-roberta" in result.output
    import typer

    command = typer.main.get_command(app).commands["train"]
    options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    assert {
        "--base-model",
        "--folds",
        "--epochs",
        "--max-steps",
        "--batch-size",
        "--learning-rate",
        "--seed",
        "--max-train-samples",
        "--allow-invalid",
        "--no-baseline",
        "--no-resume",
    } <= options


def test_no_transformer_fits_only_the_baseline_and_refuses_an_empty_run(seeded, monkeypatch, tmp_path):
    from flows.cli import app
    from flows.train import train_flow
    from tasks.common.errors import InputError

    # An unknown base model is not looked up when no transformer is trained.
    summary = train_flow(
        base_model="no-such-org/no-such-model",
        folds=2,
        transformer=False,
        frozen_encoder="none",
        allow_invalid=True,
    )
    rows = _models(seeded)
    assert {r["base_model"] for r in rows} == {"tfidf-linear"} and len(rows) == 3
    assert sorted(summary["models"]) == sorted(r["model_id"] for r in rows)
    assert all(r["params"]["solver"] == "svm" for r in rows)  # tiny data: the SVM
    assert all(r["metrics"]["top1"] is not None for r in rows if r["fold"] >= 0)
    with pytest.raises(InputError, match="nothing to train"):
        train_flow(transformer=False, baseline=False, frozen_encoder="none", allow_invalid=True)
    result = CliRunner().invoke(
        app, ["train", "--no-transformer", "--no-baseline", "--frozen-encoder", "none", "--allow-invalid"]
    )
    assert result.exit_code != 0 and "nothing to train" in result.output


def test_processes_trains_the_transformer_under_torchrun_as_one_flow_run(seeded):
    from flows.train import train_flow

    summary = train_flow(
        base_model="tiny-roberta",
        folds=2,
        max_steps=3,
        batch_size=4,
        processes=2,
        baseline=False,
        frozen_encoder="none",
        allow_invalid=True,
    )
    rows = _models(seeded)
    # two CPU processes (gloo) trained every fold; the one flow run registered each model once
    assert len(rows) == 3 and {r["base_model"] for r in rows} == {"tiny-roberta"}
    assert {r["run_id"] for r in rows} == {summary["run_id"]}
    assert all(r["device"] == "cpu x2" and r["params"]["world_size"] == 2 for r in rows)
    assert summary["device"] == "cpu x2"
    for row in rows:
        assert (Path(row["path"]) / "config.json").exists()
    history = seeded.reader().execute("SELECT count(DISTINCT model_id) FROM training_history").fetchone()
    assert history == (3,)
