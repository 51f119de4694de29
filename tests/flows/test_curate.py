"""The curate flow end to end on a tiny world: out-of-fold scoring, resuming, policies, scorers, labels."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from tasks.curate.labels import evaluate_curation, load_labels
from tasks.curate.plan import assign_scorers, plan_scoring, read_models
from tasks.curate.policy import Policy
from tasks.curate.score import score_pending
from tasks.curate.store import read_texts
from tasks.model.folds import fold_of
from tests.flows.test_curate_data import TRAIN_RUN, build_world, tid, train_models, use_home


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One warehouse for the module (building models is the slow part): six classes, both kinds."""
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    root = tmp_path_factory.mktemp("curate")
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, root / "home")
        settings = load_settings()
        wh = Warehouse.from_settings(settings)
        built = build_world(wh, root / "world", per_class=6)
        train_models(wh, built, settings.models_dir)
        built["settings"] = settings
        built["wh"] = wh
        yield built
        wh.close()


@pytest.fixture
def env(world, monkeypatch):
    use_home(monkeypatch, str(world["settings"].home))
    return world


def scores(con, model_ids) -> pl.DataFrame:
    return con.execute(
        "SELECT s.*, t.image_id FROM text_scores s JOIN image_texts t USING (text_id) "
        "WHERE list_contains($ids, s.model_id)",
        {"ids": list(model_ids)},
    ).pl()


def test_killed_run_resumes_with_one_score_per_text_and_model_never_by_its_own_trainer(env):
    from flows.curate import curate_flow

    wh = env["wh"]
    con = wh.con
    plan = plan_scoring(read_models(con), "baseline")
    assigned = assign_scorers(read_texts(con, plan.snapshot), plan)

    class Killed(Exception):
        pass

    done = []

    def kill_after_two_chunks(n):
        done.append(n)
        if len(done) == 2:
            raise Killed

    with pytest.raises(Killed):
        score_pending(
            wh, plan, assigned, Policy(), "killed-run", chunk_size=20, on_batch=kill_after_two_chunks
        )
    assert scores(con, plan.model_ids).height == 40

    summary = curate_flow(scorer="baseline", min_p_true=0.4, masked_texts=0)
    rows = scores(con, plan.model_ids)
    assert summary["scored_now"] == assigned.height - 40
    assert rows.height == assigned.height == summary["texts"]
    assert rows.select("text_id", "model_id").is_duplicated().sum() == 0
    # out-of-fold: the fold-k model scored exactly the texts of fold k (everything existed at training)
    folds = {m.model_id: m.fold for m in plan.by_kind["baseline"].values()}
    for row in rows.iter_rows(named=True):
        assert folds[row["model_id"]] == fold_of(row["image_id"], 2, 0) >= 0
    # the view holds exactly the kept texts
    view = con.execute("SELECT text_id, p_true FROM curated").pl()
    assert view.height == summary["kept"] == rows["kept"].sum()
    assert view["p_true"].min() >= 0.4 or rows.filter(pl.col("kept"))["p_true"].min() >= 0.4

    # another policy: decisions change in place, no score row is added
    again = curate_flow(scorer="baseline", min_p_true=0.9, masked_texts=0)
    after = scores(con, plan.model_ids)
    assert again["scored_now"] == 0 and after.height == rows.height
    assert after["kept"].sum() == again["kept"] < summary["kept"]
    assert set(after["policy"].unique()) == {Policy(min_p_true=0.9, threshold_source="user").to_json()}
    assert con.execute("SELECT count(*) FROM curated").fetchone()[0] == again["kept"]


@pytest.mark.slow
def test_every_scorer_scores_each_text_once_and_the_ensemble_is_not_worse(env):
    from flows.curate import curate_flow

    con = env["wh"].con
    labels = load_labels(env["labels"])
    auc = {}
    for kind in ("transformer", "baseline", "ensemble"):
        summary = curate_flow(
            scorer=kind, labels=str(env["labels"]), masked_texts=0 if kind != "ensemble" else 60
        )
        rows = scores(con, summary["model_ids"])
        assert rows.height == summary["texts"] == env["texts"].height
        assert rows["text_id"].n_unique() == rows.height
        joined = rows.join(labels, on="text_id")
        auc[kind] = roc_auc_score(joined["relevant"].to_numpy(), joined["p_true"].to_numpy())
        assert summary["labels"]["labelled"] == labels.height
    assert auc["ensemble"] >= min(auc["transformer"], auc["baseline"]) - 1e-9
    # the ensemble's calibration is stored, and the masked-name table shows all three scorers
    calibration = json.loads(con.execute("SELECT calibration FROM ensembles LIMIT 1").fetchone()[0])
    assert calibration["kinds"] == ["transformer", "baseline"] and all(
        t > 0 for t in calibration["temperatures"]
    )
    masked = {row["scorer"]: row for row in summary["masked"]}
    assert set(masked) == {"transformer", "baseline", "ensemble"}
    assert (
        masked["baseline"]["texts"] > 0
        and masked["baseline"]["top1_masked"] <= masked["baseline"]["top1_plain"]
    )
    report = open(summary["report"]).read()
    assert "Class names masked" in report and "ensemble" in report

    # auto: the ensemble of both kinds, the better one (the fixture's baseline) weighing more;
    # it is the ensemble scored above, so a re-run scores nothing again
    rerun = curate_flow(labels=str(env["labels"]), masked_texts=0)
    assert (
        rerun["scorer"] == "ensemble"
        and "weighted by the likelihood of held-out texts" in rerun["scorer_reason"]
    )
    assert "baseline (held-out macro-F1 0.880)" in rerun["scorer_reason"]
    assert rerun["weights"]["baseline"] > rerun["weights"]["transformer"]
    assert rerun["scored_now"] == 0
    assert "held-out macro-F1 0.880" in open(rerun["report"]).read()


def test_new_texts_go_to_the_full_model_and_labels_choose_the_threshold(env):
    from flows.curate import curate_flow

    wh = env["wh"]
    image_id = env["texts"]["image_id"][0]
    text = "a goldfish photographed after the models were trained"
    new_id = tid(image_id, "late", text)
    wh.write(
        lambda c: c.execute(
            "INSERT INTO image_texts (text_id, image_id, source, field, text, fetched_at, run_id) "
            "VALUES (?, ?, 'test', 'late', ?, ?, 'late-harvest')",
            [new_id, image_id, text, dt.datetime.now(dt.UTC)],
        )
    )
    summary = curate_flow(scorer="baseline", labels=str(env["labels"]), target_precision=0.95, masked_texts=0)
    con = wh.con
    model = con.execute("SELECT model_id FROM text_scores WHERE text_id = ?", [new_id]).fetchall()
    assert model == [(f"{TRAIN_RUN}-baseline-f-1",)]
    roles = dict(
        con.execute(
            "SELECT model_id, role FROM curation_models WHERE run_id = ?", [summary["run_id"]]
        ).fetchall()
    )
    assert roles[f"{TRAIN_RUN}-baseline-f-1"] == "new-texts"
    policy = summary["policy"]
    assert policy["threshold_source"] == "labels:target_precision=0.95"
    assert summary["labels"]["target_reached"] and summary["keep_precision"] >= 0.95
    assert summary["labels"]["chosen_threshold"] == policy["min_p_true"]
    # the function the demo calls gives the same figures from the warehouse alone
    measured = evaluate_curation(wh.reader(), env["labels"])
    assert measured["keep_precision"] == summary["keep_precision"]
    assert (measured["precision"], measured["recall"]) == (summary["precision"], summary["recall"])
    assert measured["unscored_labels"] == 0
    # the report file exists under IMTEXT_HOME/reports and shows the PR curve
    assert summary["report"].startswith(str(env["settings"].reports_dir.resolve()))
    assert "precision / recall" in open(summary["report"]).read()
    assert np.isclose(summary["kept"] / summary["texts"], summary["kept_ratio"])
    # ... linked from the flow run, beside the per-class table
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[summary["run_id"]]))
        )
    kinds = {a.key: a.type for a in found if a.key}
    assert kinds["curation-classes"] == "table" and "curation-report" in kinds


def test_curate_refuses_bad_requests_with_clear_messages(env):
    from flows.curate import curate_flow
    from tasks.common.errors import InputError

    with pytest.raises(InputError, match="needs --labels"):
        curate_flow(target_precision=0.9)
    with pytest.raises(InputError, match="no models were trained"):
        curate_flow(training_run="missing", masked_texts=0)
