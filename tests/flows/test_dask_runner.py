"""The Dask task runner gives the same warehouse as the default one, with two worker processes writing.

One local cluster of two single-threaded worker processes serves the module (through
IMTEXT_DASK_ADDRESS, the way a cluster on many machines is used); each test runs a flow with the
default runner into one home and with `task_runner="dask"` into another, and compares the tables.
"""

from __future__ import annotations

import polars as pl
import pytest

from tests.flows.test_curate_data import build_world, train_models, use_home

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, warmed up (imports done) so the tests time the flows, not the imports."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        distributed.Client(local) as client,
    ):
        client.run(lambda: __import__("tasks.shards") and __import__("prefect.task_engine"))
        yield client


@pytest.fixture
def dask_env(cluster, monkeypatch):
    monkeypatch.setenv("IMTEXT_DASK_ADDRESS", cluster.scheduler.address)
    monkeypatch.delenv("IMTEXT_TASK_RUNNER", raising=False)
    return cluster


def _workers_during(client, fn):
    """Run fn() and return (its result, the set of Dask workers that ran a task meanwhile)."""
    with distributed.get_task_stream(client) as stream:
        result = fn()
    return result, {t["worker"] for t in stream.data}


def _table(home, monkeypatch, sql: str) -> pl.DataFrame:
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    use_home(monkeypatch, home)
    con = Warehouse.from_settings(load_settings()).reader()
    try:
        return con.execute(sql).pl()
    finally:
        con.close()


IMAGES = (
    "SELECT image_id, wnid, split, path, bytes, width, height, format, sha256 FROM images ORDER BY image_id"
)
QUARANTINE = "SELECT path, reason FROM quarantine ORDER BY path"
TEXTS = "SELECT text_id, image_id, source, field, text, junk FROM image_texts ORDER BY text_id"
STATE = "SELECT key, source, status FROM harvest_state ORDER BY key, source"


def test_ingest_and_embedded_texts_on_dask_match_the_default_runner(tmp_path, monkeypatch, dask_env):
    from flows.demo.sample import generate_sample
    from flows.harvest import harvest_images_flow
    from flows.ingest import ingest_flow

    sample = generate_sample(tmp_path / "src", train_per_class=3, val_per_class=1)
    homes = {"default": tmp_path / "home-default", "dask": tmp_path / "home-dask"}
    summaries, writers = {}, {}
    for runner, home in homes.items():
        use_home(monkeypatch, home)

        def both(runner=runner):
            # workers=2: two in-process probe workers, or two-worker-sized shards on the cluster
            ingested = ingest_flow(source=sample["root"], workers=2, task_runner=runner)
            harvested = harvest_images_flow(embedded=True, concurrency=2, task_runner=runner)
            return ingested, harvested

        summaries[runner], writers[runner] = _workers_during(dask_env, both)

    assert writers["default"] == set()
    assert len(writers["dask"]) == 2  # both worker processes ran shards that wrote to the warehouse
    ingested, harvested = summaries["dask"]
    assert ingested["added"] == sample["images"] == summaries["default"][0]["added"]
    assert ingested["quarantined"] == sample["quarantined"]
    assert ingested["snapshots_created"] > 2  # one snapshot per shard
    embedded = harvested["sources"]["embedded"]
    assert embedded == {**summaries["default"][1]["sources"]["embedded"]}
    assert embedded["images_with_text"] == len(sample["embedded"])

    for sql in (IMAGES, QUARANTINE, TEXTS, STATE):
        default = _table(homes["default"], monkeypatch, sql)
        dask = _table(homes["dask"], monkeypatch, sql)
        assert default.height > 0
        assert dask.equals(default), sql

    # a re-run on Dask adds nothing: the shard writes are repeat-safe like the in-process ones
    use_home(monkeypatch, homes["dask"])
    again = ingest_flow(source=sample["root"], workers=2, task_runner="dask")
    assert (again["added"], again["updated"], again["quarantined"]) == (0, 0, 0)
    assert again["skipped"] >= sample["images"]
    assert _table(homes["dask"], monkeypatch, IMAGES).equals(_table(homes["default"], monkeypatch, IMAGES))


def test_scoring_on_dask_matches_the_default_runner(tmp_path, monkeypatch, dask_env):
    from flows.curate import curate_flow
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    scores = {}
    for runner in ("default", "dask"):
        home = tmp_path / f"home-{runner}"
        use_home(monkeypatch, home)
        settings = load_settings()
        with Warehouse.from_settings(settings) as wh:
            world = build_world(wh, tmp_path / f"world-{runner}", per_class=6)
            train_models(wh, world, settings.models_dir, kinds=("baseline",))
        summary, workers = _workers_during(
            dask_env, lambda runner=runner: curate_flow(scorer="baseline", masked_texts=0, task_runner=runner)
        )
        assert summary["scored_now"] == summary["texts"] == world["texts"].height
        assert len(workers) == (2 if runner == "dask" else 0)
        scores[runner] = _table(
            home,
            monkeypatch,
            "SELECT text_id, model_id, round(p_true, 9) AS p, true_rank, pred_wnid, kept "
            "FROM text_scores ORDER BY text_id, model_id",
        )
    assert scores["dask"].height == scores["default"].height > 0
    assert scores["dask"].equals(scores["default"])


def test_an_unknown_task_runner_is_refused_before_anything_runs(monkeypatch):
    from flows import runners
    from tasks.errors import InputError

    monkeypatch.setenv("IMTEXT_TASK_RUNNER", "dask")
    assert runners.choose(None) == "dask"
    assert runners.choose("default") == "default"
    with pytest.raises(InputError, match="--task-runner must be one of default, dask"):
        runners.choose("ray")
