"""Benchmark: `make demo` from a warm virtual environment, and the share of it that is Prefect's.

Measured: the wall time of `make demo` (a fresh IMTEXT_HOME and PREFECT_HOME in a temporary
folder; the virtual environment is brought up to date first, untimed). Goal: under 3 minutes.

Prefect's share, against a named baseline measured in the same run: the demo leaves its flow runs,
task runs, artifacts and log records in its Prefect database. The baseline ("Prefect alone")
replays exactly that run tree with empty bodies: the same flow runs nested the same way, the same
number of task runs in each, the same number of artifacts and log records, in a fresh process
with a fresh ephemeral API server and a fresh Prefect database, as the demo had. Its wall time,
less a bare Python start, is what orchestration costs the demo (import, API server start with
its database migrations, run and state bookkeeping); the rest of the demo's wall time is the
work. A second replay on the database the first one left shows the cost once the Prefect
database exists (a second `make demo` in the same checkout). From the database, the time inside flow runs and
inside task runs is printed too.

    .venv/bin/python bench/end_to_end.py [--keep DIR] [--replay-only DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 180.0

# The replay: an empty flow per recorded flow run (nested as recorded), empty tasks, artifacts, logs.
REPLAY = """
import json, sys, time
started = time.perf_counter()
from flows.commands.common import prefect_env
prefect_env()  # the same Prefect settings as every imtext command
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

@task(cache_policy=NO_CACHE)
def empty_task(i: int) -> int:
    return i

@flow
def node(spec: dict) -> None:
    logger = get_run_logger()
    for i in range(spec["logs"]):
        logger.warning("replayed log record %d", i)
    for i in range(spec["tasks"]):
        empty_task(i)
    for i in range(spec["artifacts"]):
        create_markdown_artifact(markdown=f"replayed artifact {i}")
    for child in spec["children"]:
        node.with_options(name=child["name"])(child)

imported = time.perf_counter()
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:  # starts the ephemeral API server, as the first flow would
    client.hello()
served = time.perf_counter()
for root in json.loads(sys.argv[1]):
    node.with_options(name=root["name"])(root)
ran = time.perf_counter()
print("PHASES", json.dumps({"import_s": imported - started, "server_start_s": served - imported,
                            "runs_s": ran - served}), flush=True)
"""


def _seconds(value: str | None) -> float:
    """Prefect's SQLite columns: an interval is stored as a datetime after the epoch."""
    if not value:
        return 0.0
    return (dt.datetime.fromisoformat(value) - dt.datetime(1970, 1, 1)).total_seconds()


def read_runs(db: Path) -> dict:
    """The run tree of a Prefect SQLite database: roots with nested children, task/artifact/log counts."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        flows = con.execute(
            "SELECT f.id, f.name, f.parent_task_run_id, t.flow_run_id, f.start_time, f.total_run_time, "
            "fl.name FROM flow_run f JOIN flow fl ON fl.id = f.flow_id "
            "LEFT JOIN task_run t ON t.id = f.parent_task_run_id ORDER BY f.start_time"
        ).fetchall()
        placeholders = {row[2] for row in flows if row[2]}
        tasks = con.execute("SELECT id, flow_run_id, total_run_time, name FROM task_run").fetchall()
        artifacts = con.execute("SELECT flow_run_id, count(*) FROM artifact GROUP BY 1").fetchall()
        logs = con.execute("SELECT flow_run_id, count(*) FROM log GROUP BY 1").fetchall()
    finally:
        con.close()
    per_flow_tasks: dict[str, int] = defaultdict(int)
    per_name: dict[str, float] = defaultdict(float)
    task_s = 0.0
    for task_id, flow_run_id, total, name in tasks:
        if task_id in placeholders:  # a subflow's stand-in task run in its parent, not a task
            continue
        per_flow_tasks[flow_run_id] += 1
        task_s += _seconds(total)
        per_name[name.rsplit("-", 1)[0]] += _seconds(total)  # run names end in a short random suffix
    n_artifacts = dict(artifacts)
    n_logs = dict(logs)
    nodes = {
        fid: {
            "name": flow_name,
            "tasks": per_flow_tasks[fid],
            "artifacts": n_artifacts.get(fid, 0),
            "logs": n_logs.get(fid, 0),
            "children": [],
        }
        for fid, _, _, _, _, _, flow_name in flows
    }
    roots, root_s = [], 0.0
    for fid, _, _, parent_flow, _, total, _ in flows:
        if parent_flow and parent_flow in nodes:
            nodes[parent_flow]["children"].append(nodes[fid])
        else:
            roots.append(nodes[fid])
            root_s += _seconds(total)
    return {
        "roots": roots,
        "flow_runs": len(flows),
        "task_runs": sum(per_flow_tasks.values()),
        "artifacts": sum(n_artifacts.values()),
        "logs": sum(n_logs.values()),
        "in_flow_runs_s": root_s,
        "in_task_runs_s": task_s,
        "slowest_tasks": dict(sorted(per_name.items(), key=lambda kv: -kv[1])[:8]),
    }


def timed(cmd: list[str], env: dict, log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {done.returncode} (log: {log})")
    return seconds


def clean_env(home: Path, prefect_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMTEXT_", "PREFECT_"))}
    env.update(IMTEXT_HOME=str(home), PREFECT_HOME=str(prefect_home), HF_HUB_OFFLINE="1")
    return env


def replay(tree: dict, work: Path, name: str) -> tuple[float, dict]:
    """Wall time of the empty replay of `tree` (PREFECT_HOME `work/replay-prefect`) and its phases."""
    python = str(ROOT / ".venv" / "bin" / "python")
    env = clean_env(work / "replay-home", work / "replay-prefect")
    log = work / f"{name}.log"
    seconds = timed([python, "-c", REPLAY, json.dumps(tree["roots"])], env, log)
    phases = next(
        (json.loads(line[7:]) for line in log.read_text().splitlines() if line.startswith("PHASES ")), {}
    )
    return seconds, phases


def bare_python(work: Path) -> float:
    """A bare Python start: part of every replay, neither Prefect nor work."""
    python = str(ROOT / ".venv" / "bin" / "python")
    env = clean_env(work / "replay-home", work / "replay-prefect")
    return min(timed([python, "-c", "pass"], env, work / "bare.log") for _ in range(3))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    parser.add_argument(
        "--replay-only", type=Path, help="skip the demo: replay the Prefect database of an earlier --keep DIR"
    )
    args = parser.parse_args()
    work = args.replay_only or args.keep or Path(tempfile.mkdtemp(prefix="imtext-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    demo_s = None
    load_before = os.getloadavg()[0]
    if args.replay_only is None:
        warm = subprocess.run(["make", "-q", "venv"], cwd=ROOT).returncode == 0
        if not warm:
            print("bringing the virtual environment up to date first (untimed): make venv")
            subprocess.run(["make", "venv"], cwd=ROOT, check=True)
        env = clean_env(work / "home", work / "prefect")
        demo_s = timed(["make", "demo"], env, work / "demo.log")
    tree = read_runs(work / "prefect" / "prefect.db")
    shutil.rmtree(work / "replay-prefect", ignore_errors=True)
    bare_s = bare_python(work)
    # First on a fresh Prefect database, like the demo was run; then again on the database the
    # first replay left, as a second `make demo` finds it (no schema migrations on start).
    replay_s, phases = replay(tree, work, "replay")
    again_s, again_phases = replay(tree, work, "replay-again")
    prefect_s = max(0.0, replay_s - bare_s)

    print(f"work folder: {work}")
    # Shared machines: the load says how far these figures are from an idle machine's.
    print(f"load average (1 min): {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(
        f"runs recorded: {tree['flow_runs']} flow runs, {tree['task_runs']} task runs, "
        f"{tree['artifacts']} artifacts, {tree['logs']} log records"
    )
    if demo_s is not None:
        print(
            f"make demo (warm venv): {demo_s:7.1f} s   goal < {GOAL_S:.0f} s: {'met' if demo_s < GOAL_S else 'NOT met'}"
        )
    print(
        f"  inside flow runs   : {tree['in_flow_runs_s']:7.1f} s (top-level flow runs, Prefect's run times)"
    )
    print(f"  inside task runs   : {tree['in_task_runs_s']:7.1f} s (task bodies, summed); slowest:")
    for name, seconds in tree["slowest_tasks"].items():
        print(f"    {name:<28} {seconds:7.1f} s")
    print(f"baseline, Prefect alone (the same run tree with empty bodies): {replay_s:.1f} s wall, "
          f"{bare_s:.2f} s of it a bare Python start")  # fmt: skip
    for label, seconds, parts in (("fresh", replay_s, phases), ("warm", again_s, again_phases)):
        if parts:
            shutdown = seconds - bare_s - sum(parts.values())
            print(f"  {label} Prefect database: {seconds:.1f} s = import {parts['import_s']:.1f} s, API server "
                  f"start {parts['server_start_s']:.1f} s, runs {parts['runs_s']:.1f} s, exit {shutdown:.1f} s")  # fmt: skip
    if demo_s is not None:
        share = prefect_s / demo_s
        print(f"Prefect overhead: {prefect_s:.1f} s = {100 * share:.1f}% of the demo; work: "
              f"{demo_s - prefect_s:.1f} s = {100 * (1 - share):.1f}%; work/overhead = "
              f"{(demo_s - prefect_s) / max(prefect_s, 1e-9):.1f}x")  # fmt: skip
    result = {
        "demo_s": demo_s,
        "replay_s": replay_s,
        "bare_python_s": bare_s,
        "replay_phases": phases,
        "replay_warm_db_s": again_s,
        "replay_warm_db_phases": again_phases,
        "prefect_overhead_s": prefect_s,
        "load_average_start": load_before,
        **{k: v for k, v in tree.items() if k != "roots"},
    }
    print(json.dumps(result))
    return 0 if demo_s is None or demo_s < GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
