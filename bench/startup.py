"""Benchmark: the fixed cost of a command that runs a flow, against `imtext sql "select 1"` as the floor.

One tiny `imtext ingest` (10 small JPEGs, each run into a fresh IMTEXT_HOME, so 10 rows added) is
timed as a user runs it, in its own process, in four ways, all in the same run:

- `served`: beside a running `imtext serve` (found through the file it leaves under PREFECT_HOME);
  goal under 5 s;
- `local`: no server running, so the command starts its own local Prefect server; goal under 10 s;
- `prefect-ephemeral`: the same command with Prefect imported first, so that Prefect's own ephemeral
  mode starts the server at the first flow call (what every command did before);
- `floor`: `imtext sql "select 1"` (Python, the CLI and DuckDB, no Prefect).

Variants alternate, --repeat times; the fastest run of each counts (a shared machine's load only
slows runs down). Also timed once: the first command on a new PREFECT_HOME (database migrations).
Wall seconds, CPU seconds of the command and everything it started, and the load average are printed.

    .venv/bin/python bench/startup.py [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
IMTEXT = [PY, "-m", "flows.cli"]
# The command with Prefect imported before the CLI starts: Prefect's ephemeral server, as before.
PREFECT_FIRST = [PY, "-c", "import sys, prefect; sys.argv[0] = 'imtext'; from flows.cli import app; app()"]
GOALS = {"served": 5.0, "local": 10.0}


def make_tree(root: Path, n: int = 10) -> Path:
    from PIL import Image

    folder = root / "train" / "n01440764"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (64, 48), (i * 20, 90, 0)).save(folder / f"n01440764_{i}.JPEG")
    return root


def base_env(prefect_home: Path) -> dict[str, str]:
    """This environment less any PREFECT_*/IMTEXT_* settings, with a private, offline Prefect."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "IMTEXT_"))}
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",  # as imtext sets it; Prefect says 20
        PYTHONPATH=str(ROOT),
    )
    return env


def timed(argv: list[str], env: dict[str, str]) -> dict:
    """Wall and CPU seconds (the process and all it waited for) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "load": load, "stderr": done.stderr}


class Serve:
    """`imtext serve --no-worker` in the background, until stop()."""

    def __init__(self, env: dict[str, str], log: Path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*IMTEXT, "serve", "--no-worker", "--only", "ingest", "--port", str(port)],
            cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while "Prefect UI:" not in log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"imtext serve did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self._out.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant, alternated")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()

    scratch = args.keep or Path(tempfile.mkdtemp(prefix="imtext-startup-"))
    scratch.mkdir(parents=True, exist_ok=True)
    tree = make_tree(scratch / "tree")
    ingest = ["ingest", "--source", str(tree), "--workers", "1"]
    homes = iter(range(10**6))

    def env_for(prefect_home: Path) -> dict[str, str]:
        home = scratch / f"home-{next(homes)}"
        return base_env(prefect_home) | {"IMTEXT_HOME": str(home), "IMTEXT_WORKERS": "1"}

    print(f"imtext start-up, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start", flush=True)
    first = timed([*IMTEXT, *ingest], env_for(scratch / "prefect-new"))
    print(f"first command on a new PREFECT_HOME (migrations): {first['wall_s']:.1f}s wall", flush=True)
    floor_env = base_env(scratch / "prefect-new") | {"IMTEXT_HOME": str(scratch / "home-0")}

    served_home = scratch / "prefect-served"
    serve = Serve(base_env(served_home) | {"IMTEXT_HOME": str(scratch / "serve-home")}, scratch / "serve.log")
    results: dict[str, list[dict]] = {"floor": [], "served": [], "local": [], "prefect-ephemeral": []}
    try:
        for rep in range(args.repeat):
            for name in results:
                if name == "floor":
                    r = timed([*IMTEXT, "sql", "select 1"], floor_env)
                elif name == "served":
                    r = timed([*IMTEXT, *ingest], env_for(served_home))
                    if "warning" in r["stderr"]:
                        raise SystemExit(f"the served run did not use imtext serve:\n{r['stderr']}")
                elif name == "local":
                    r = timed([*IMTEXT, *ingest], env_for(scratch / "prefect-new"))
                else:
                    r = timed([*PREFECT_FIRST, *ingest], env_for(scratch / "prefect-new"))
                results[name].append(r)
                print(
                    f"  #{rep + 1} {name:<18} {r['wall_s']:6.2f}s wall {r['cpu_s']:6.2f}s CPU  (load {r['load']:.1f})",
                    flush=True,
                )
    finally:
        serve.stop()

    best = {name: min(runs, key=lambda r: r["wall_s"]) for name, runs in results.items()}
    floor = best["floor"]["wall_s"]
    print(f"\nbest of {args.repeat}, load {os.getloadavg()[0]:.1f} at the end:")
    print(f"{'variant':<20}{'wall s':>8}{'CPU s':>8}{'x floor':>9}  goal")
    for name, r in best.items():
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"< {goal:.0f}s {'met' if r['wall_s'] < goal else 'MISSED'}"
        print(f"{name:<20}{r['wall_s']:8.2f}{r['cpu_s']:8.2f}{r['wall_s'] / floor:9.2f}  {verdict}")
    before, now = best["prefect-ephemeral"], best["local"]
    print(
        f"local server vs Prefect's ephemeral start (same command): {before['wall_s'] / now['wall_s']:.2f}x faster "
        f"wall, {before['cpu_s'] - now['cpu_s']:.1f} CPU s less; imtext serve vs local: "
        f"{now['wall_s'] / best['served']['wall_s']:.2f}x"
    )
    print(
        f"fixed cost above the floor: served {best['served']['wall_s'] - floor:.1f}s, local {now['wall_s'] - floor:.1f}s"
    )
    if args.keep is None:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
