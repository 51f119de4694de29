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
    """Two worker processes; their imports start at once and overlap the default-runner runs."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as local,
        # not the default client: the flows must find the cluster through IMTEXT_DASK_ADDRESS alone
        distributed.Client(local, set_as_default=False) as client,
    ):
        client.wait_for_workers(2)
        warm = [
            client.submit(_imports, pure=False, workers=[worker])
            for worker in client.scheduler_info()["workers"]
        ]
        yield client
        del warm


def _imports() -> None:
    import prefect.task_engine  # noqa: F401

    import tasks.fanout.shard_tasks  # noqa: F401


@pytest.fixture
def dask_env(cluster, monkeypatch):
    monkeypatch.setenv("IMTEXT_DASK_ADDRESS", cluster.scheduler.address)
    monkeypatch.delenv("IMTEXT_TASK_RUNNER", raising=False)
    return cluster


def _workers_during(client, fn):
    """Run fn() and return (its result, the set of Dask workers that ran a task meanwhile)."""
    with distributed.get_task_stream(client) as stream:
        result = fn()
    return result, {t["worker"] for t in stream.data if not str(t["key"]).startswith("_imports")}


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


@pytest.mark.slow
def test_ingest_and_embedded_texts_on_dask_match_the_default_runner(tmp_path, monkeypatch, dask_env):
    from flows.demo.sample import generate_sample
    from flows.harvest import harvest_images_flow
    from flows.ingest import ingest_flow

    sample = generate_sample(tmp_path / "src", train_per_class=2, val_per_class=1)
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


@pytest.mark.slow
def test_scoring_on_dask_matches_the_default_runner(tmp_path, monkeypatch, dask_env):
    from flows.curate import curate_flow
    from flows.settings import load_settings
    from warehouse.db import Warehouse

    use_home(monkeypatch, tmp_path / "home")
    settings = load_settings()
    query = (
        "SELECT text_id, model_id, round(p_true, 9) AS p, true_rank, pred_wnid, kept "
        "FROM text_scores ORDER BY text_id, model_id"
    )
    scores = {}
    with Warehouse.from_settings(settings) as wh:
        world = build_world(wh, tmp_path / "world", per_class=6)
        train_models(wh, world, settings.models_dir, kinds=("baseline",))
        for runner in ("default", "dask"):
            # the same models score every text again: the scores of the first run are set aside
            wh.write(lambda con: con.execute("DELETE FROM text_scores"))
            summary, workers = _workers_during(
                dask_env, lambda r=runner: curate_flow(scorer="baseline", masked_texts=0, task_runner=r)
            )
            assert summary["scored_now"] == summary["texts"] == world["texts"].height
            assert len(workers) == (2 if runner == "dask" else 0)
            scores[runner] = wh.con.execute(query).pl()
    assert scores["dask"].height == scores["default"].height > 0
    assert scores["dask"].equals(scores["default"])


def test_an_unknown_task_runner_is_refused_before_anything_runs(monkeypatch):
    from flows import runners
    from tasks.common.errors import InputError

    monkeypatch.setenv("IMTEXT_TASK_RUNNER", "dask")
    assert runners.choose(None) == "dask"
    assert runners.choose("default") == "default"
    with pytest.raises(InputError, match="--task-runner must be one of default, dask, not 'ray'"):
        runners.choose("ray")
    monkeypatch.setenv("IMTEXT_TASK_RUNNER", "spark")
    with pytest.raises(InputError, match="IMTEXT_TASK_RUNNER must be one of default, dask, not 'spark'"):
        runners.choose(None)


def test_a_temporary_local_cluster_runs_the_shards_and_a_failed_shard_fails_the_fan_out(
    tmp_path, monkeypatch
):
    import os

    from prefect import flow, task

    from flows import runners

    size = task(os.path.getsize, name="file-size")
    (tmp_path / "a").write_bytes(b"12345")
    (tmp_path / "b").write_bytes(b"123")
    shards = [{"filename": str(tmp_path / name)} for name in ("a", "missing", "b")]
    finished = {}

    monkeypatch.delenv("IMTEXT_DASK_ADDRESS", raising=False)

    @flow
    def sizes():
        with runners.fan_out("dask", workers=1) as runner:
            runners.run_shards(runner, size, shards, {}, lambda i, r: finished.__setitem__(i, r))

    with pytest.raises(FileNotFoundError):
        sizes()
    assert finished == {0: 5, 2: 3}
