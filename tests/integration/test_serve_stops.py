"""`imtext serve` leaves nothing running: stopped by a SIGINT it inherited as ignored, or killed outright."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.integration.test_rest_api import ROOT, alive, base_env, descendants, free_port


def _start(env: dict[str, str], log) -> tuple[subprocess.Popen, set[int]]:
    argv = [sys.executable, "-m", "flows.cli", "serve", "--no-worker", "--only", "ingest"]
    process = subprocess.Popen(
        [*argv, "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # As a shell starts a background job: SIGINT ignored, which Python keeps.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = time.monotonic() + 150
    while "Prefect UI:" not in open(log.name).read():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"imtext serve did not come up:\n{open(log.name).read()[-3000:]}")
        time.sleep(0.5)
    return process, descendants(process.pid)


def _gone(pids: set[int], timeout_s: float = 30) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while (left := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; the kill-safety uses Linux prctl")
def test_serve_stops_its_server_on_sigint_and_when_killed(tmp_path):
    env = base_env(tmp_path)
    with open(tmp_path / "interrupted.log", "w") as log:
        process, children = _start(env, log)
        assert children, "serve started no server"
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    assert not _gone(children)
    with open(tmp_path / "killed.log", "w") as log:
        process, children = _start(env, log)
        process.kill()  # SIGKILL: serve gets no chance to stop anything itself
        process.wait(10)
    assert not _gone(children), "the Prefect server outlived a killed imtext serve"
