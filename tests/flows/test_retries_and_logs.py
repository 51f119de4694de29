"""Retries of flows and idempotent tasks (never for user errors), and the project's loggers in the run logs."""

from __future__ import annotations

import logging
import time
import warnings

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker

from flows.runtime import FLOW_RETRY, final_on_user_error, run_id
from tasks.common.errors import InputError
from tasks.common.retrying import RETRY

calls: list[str] = []


@task(**{**RETRY, "retry_delay_seconds": 0})
def flaky(name: str, failures: int, error: type[Exception]) -> int:
    """Fail `failures` times with `error`, then return how many attempts it took."""
    calls.append(name)
    attempts = calls.count(name)
    if attempts <= failures:
        raise error(f"{name}: attempt {attempts}")
    return attempts


@flow
def run_flaky(name: str, failures: int, error: type[Exception]) -> int:
    return flaky(name, failures, error)


def test_idempotent_tasks_retry_transient_failures_but_not_user_errors():
    assert run_flaky("network", 2, ConnectionError) == 3  # two retries, then success
    with pytest.raises(InputError):
        run_flaky("bad-input", 1, InputError)
    assert calls.count("bad-input") == 1  # a user error is final


@flow(**{**FLOW_RETRY, "retry_delay_seconds": 0})
@final_on_user_error()
def transient_flow(name: str) -> int:
    calls.append(name)
    if calls.count(name) == 1:
        raise ConnectionError("the catalog went away")
    return calls.count(name)


@flow(**{**FLOW_RETRY, "retry_delay_seconds": 30})
@final_on_user_error()
def user_error_flow(name: str) -> str:
    from prefect.runtime import flow_run

    calls.append(str(flow_run.id))
    raise InputError(f"{name}: no such file")


def test_flows_retry_transient_failures_and_end_at_once_on_user_errors():
    assert FLOW_RETRY["retries"] >= 1 and FLOW_RETRY["retry_delay_seconds"] > 0
    assert transient_flow("catalog") == 2
    started = time.monotonic()
    with pytest.raises(InputError, match="no such file"):
        user_error_flow("captions.json")
    assert time.monotonic() - started < 30  # no retry after the 30 s delay
    with get_client(sync_client=True) as client:
        run = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[calls[-1]])))[0]
    assert run.run_count == 1 and run.state.is_failed()


def test_every_flow_and_idempotent_task_of_imtext_has_retries():
    from expectations.tasks import store_results_task
    from flows import curate, export, harvest, ingest, pipeline, train, validate
    from tasks.fanout import shard_tasks
    from tasks.harvest import captions, descriptions, flickr, metadata, wikipedia
    from tasks.ingest.images import load_images

    flows = [
        ingest.ingest_flow,
        harvest.harvest_classes_flow,
        harvest.harvest_images_flow,
        validate.validate_flow,
        train.train_flow,
        curate.curate_flow,
        export.export_flow,
        pipeline.pipeline_flow,
    ]
    assert all(f.retries >= 1 and f.retry_delay_seconds > 0 for f in flows)
    tasks = [
        descriptions.store_wordnet_texts,
        descriptions.store_description_texts,
        wikipedia.harvest_wikipedia_task,
        captions.import_captions_task,
        flickr.harvest_flickr_task,
        metadata.harvest_embedded_task,
        shard_tasks.ingest_shard,
        shard_tasks.embedded_shard,
        shard_tasks.score_shard,
        store_results_task,
        load_images,
    ]
    assert all(t.retries >= 1 and t.retry_condition_fn is not None for t in tasks)


@flow
def logs_from_a_task_module() -> str:
    rid = run_id()  # every flow starts with it
    logging.getLogger("tasks.probe").info("probe: 3 texts fetched")
    logging.getLogger("warehouse.probe").warning("probe: commit retried")
    return rid


def test_project_loggers_are_stored_as_flow_run_logs():
    flow_run_id = logs_from_a_task_module()
    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    stored = {(log.name, log.message) for log in logs}
    assert ("tasks.probe", "probe: 3 texts fetched") in stored
    assert ("warehouse.probe", "probe: commit retried") in stored
    # outside a run nothing is sent, and Prefect does not warn about a log without a run
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        logging.getLogger("tasks.probe").warning("outside any run")
    assert not [w for w in seen if "flow run" in str(w.message)]
