"""`imtext serve` on 127.0.0.1, and flows triggered through the REST API exactly as the README says:
look the deployment up by name, create a flow run with parameters, poll until it is COMPLETED,
then read the rows it wrote in the warehouse. At the end Ctrl-C stops everything, leaving no process.

The helpers here (`Served`, `trigger`, `wait_for_run`) are used by test_postgres_topology.py too.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> set[int]:
    from flows.serve import descendants as below

    return below(pid)


def alive(pids: set[int]) -> set[int]:
    """The pids still running (zombies count as gone)."""
    left = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(pid)
    return left


@dataclass
class Served:
    """A running `imtext serve` subprocess and how to talk to its API."""

    process: subprocess.Popen
    api: str
    env: dict[str, str]
    auth: tuple[str, str] | None = None
    lines: list[str] = field(default_factory=list)
    children: set[int] = field(default_factory=set)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(f"{self.api}{path}", auth=self.auth, timeout=30, **kw)

    def post(self, path: str, payload: dict) -> requests.Response:
        return requests.post(f"{self.api}{path}", json=payload, auth=self.auth, timeout=30)

    def output(self) -> str:
        return "\n".join(self.lines)

    def log(self, name: str) -> str:
        path = Path(self.env["PREFECT_HOME"]) / "serve" / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""


@contextlib.contextmanager
def serve(
    env: dict[str, str], only: str, auth: tuple[str, str] | None = None, timeout_s: float = 150
) -> Iterator[Served]:
    """Start `imtext serve` with `env`, yield once deployments and the worker are up, then Ctrl-C it
    and check that it exits 0 leaving none of the processes it started."""
    port = free_port()
    argv = [sys.executable, "-m", "flows.cli", "serve", "--port", str(port), "--only", only]
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    served = Served(process, f"http://127.0.0.1:{port}/api", env, auth)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put(line.rstrip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            except queue.Empty:
                line = None
            if line is not None:
                served.lines.append(line)
            if line is not None and line.startswith("Prefect UI:"):
                break
            if line is None:
                raise AssertionError(
                    f"imtext serve did not come up:\n{served.output()}\n{served.log('server')}"
                )
        served.children = descendants(process.pid)
        yield served
    finally:
        served.children |= descendants(process.pid)
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError(f"imtext serve did not stop within 60s:\n{served.output()}") from None
        while (line := lines.get(timeout=5)) is not None:
            served.lines.append(line)
        assert code == 0, served.output()
        time.sleep(0.5)
        assert not alive(served.children), f"processes left behind: {alive(served.children)}"


def trigger(served: Served, flow: str, deployment: str, parameters: dict) -> str:
    """Look the deployment up by name and create a flow run; returns the flow run id."""
    found = served.get(f"/deployments/name/{flow}/{deployment}")
    assert found.status_code == 200, found.text
    created = served.post(f"/deployments/{found.json()['id']}/create_flow_run", {"parameters": parameters})
    assert created.status_code == 201, created.text
    return created.json()["id"]


def wait_for_run(served: Served, flow_run_id: str, timeout_s: float = 120) -> dict:
    """Poll the flow run until it reaches a terminal state; returns the run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = served.get(f"/flow_runs/{flow_run_id}").json()
        if run["state"]["type"] in TERMINAL:
            return run
        time.sleep(0.5)
    raise AssertionError(
        f"flow run {flow_run_id} not finished after {timeout_s}s: {run['state']}\n{served.log('worker')}"
    )


def assert_completed(served: Served, run: dict) -> None:
    if run["state"]["type"] != "COMPLETED":
        logs = served.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 50})
        messages = "\n".join(entry["message"] for entry in logs.json()) if logs.ok else logs.text
        raise AssertionError(
            f"run {run['name']} ended {run['state']['type']}:\n{messages}\n{served.log('worker')}"
        )


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "IMTEXT_")) and k not in ("PGPASSWORD",)
    }
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        IMTEXT_HOME=str(tmp_path / "home"),
        IMTEXT_WORKERS="1",
        PYTHONPATH=str(ROOT),
    )
    return env


def sample_tree(root: Path) -> dict:
    """The demo's tiny ImageNet tree (a few classes, a few images each, some broken files)."""
    from flows.demo.sample import generate_sample

    return generate_sample(root, train_per_class=3, val_per_class=1, seed=0)


def warehouse_rows(catalog: str, data_path: str, sql: str, params: list | None = None) -> list[tuple]:
    from warehouse.db import Warehouse

    con = Warehouse(catalog=catalog, data_path=data_path).reader()
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def train_pairs(root: Path) -> list[tuple[str, str]]:
    """(image_id, wnid) of the sample's train images, read from the tree itself."""
    return [(p.stem, p.parent.name) for p in sorted((Path(root) / "train").glob("*/*.JPEG"))]


def pipeline_parameters(inputs, export_out: Path, source: Path) -> dict:
    """The smallest end-to-end run: every source harvested from the stand-ins, a tiny model."""
    return {
        "source": str(source),
        "captions": str(inputs.captions),
        "flickr_urls": str(inputs.flickr_urls),
        "embedded": True,
        "descriptions": str(inputs.descriptions),
        "base_model": "tiny-roberta",
        "epochs": 1,
        "max_steps": 2,
        "labels": str(inputs.labels),
        "export_format": "parquet",
        "export_out": str(export_out),
    }


def test_rest_triggers_of_the_ingest_and_pipeline_deployments(tmp_path):
    from flows.demo.servers import serve_apis
    from flows.demo.texts import write_harvest_inputs

    sample = sample_tree(tmp_path / "imagenet")
    inputs = write_harvest_inputs(train_pairs(sample["root"]), tmp_path / "inputs")
    env = base_env(tmp_path)
    home = Path(env["IMTEXT_HOME"])
    catalog = f"sqlite:{(home / 'warehouse' / 'catalog.sqlite').resolve()}"
    data = str((home / "warehouse" / "data").resolve()) + "/"
    # Local stand-ins for Wikipedia and Flickr; the worker's flow runs inherit their addresses.
    with serve_apis(inputs.root, api_key=inputs.api_key) as apis:
        env.update(apis.env(), IMTEXT_FLICKR_API_KEY=inputs.api_key)
        with serve(env, only="ingest,pipeline") as served:
            assert "deployment ingest/ingest" in served.output()
            assert "deployment pipeline/pipeline" in served.output()
            assert served.children, "imtext serve started no server or worker"
            check_deployment_settings(served)

            # 1. The ingest deployment.
            flow_run_id = trigger(served, "ingest", "ingest", {"source": str(sample["root"])})
            assert_completed(served, wait_for_run(served, flow_run_id))
            rows = warehouse_rows(
                catalog,
                data,
                "SELECT count(*), count(DISTINCT image_id) FROM images WHERE run_id = ?",
                [flow_run_id],
            )
            assert rows == [(sample["images"], sample["images"])]
            quarantined = warehouse_rows(
                catalog, data, "SELECT count(*) FROM quarantine WHERE run_id = ?", [flow_run_id]
            )
            assert quarantined == [(sample["quarantined"],)]

            # 2. The pipeline deployment, end to end.
            export_out = tmp_path / "export"
            parameters = pipeline_parameters(inputs, export_out, sample["root"])
            pipeline_run_id = trigger(served, "pipeline", "pipeline", parameters)
            assert_completed(served, wait_for_run(served, pipeline_run_id, timeout_s=400))
            children = served.post(
                "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [pipeline_run_id]}}}
            )
            assert {r["state"]["type"] for r in children.json()} == {"COMPLETED"}

    assert warehouse_rows(catalog, data, "SELECT count(*) FROM images") == [(sample["images"],)]
    assert warehouse_rows(catalog, data, "SELECT count(DISTINCT source) > 1 FROM image_texts") == [(True,)]
    assert warehouse_rows(catalog, data, "SELECT count(*) > 0 FROM models") == [(True,)]
    scored = warehouse_rows(catalog, data, "SELECT count(*), count(*) FILTER (kept) FROM text_scores")[0]
    assert scored[0] > 0 and 0 < scored[1] <= scored[0]
    assert warehouse_rows(catalog, data, "SELECT count(*) FROM curated") == [(scored[1],)]
    assert list(export_out.rglob("*.parquet"))


def check_deployment_settings(served: Served) -> None:
    """What the UI shows and enforces: typed parameters with descriptions, and the limits."""
    deployment = served.get("/deployments/name/ingest/ingest").json()
    source = deployment["parameter_openapi_schema"]["properties"]["source"]
    assert source["type"] == "string" and source["description"]
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert deployment["work_pool_name"] == "imtext" and deployment["work_queue_name"] == "default"
    queues = served.post("/work_pools/imtext/queues/filter", {}).json()
    assert {q["name"]: q["concurrency_limit"] for q in queues}["gpu"] == 1
    # no warehouse-write limit: the warehouse writer lock serialises commits
    assert served.get("/v2/concurrency_limits/warehouse-write").status_code == 404
    # A parameter the flow does not take is refused before anything runs.
    refused = served.post(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {"nope": 1}})
    assert refused.status_code in (409, 422), refused.text
