"""A command run beside `imtext serve` records its flow run on that server (found through the file
serve leaves under PREFECT_HOME, or through PREFECT_API_URL) instead of starting a server of its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.prefect_api import SERVE_FILE
from tests.integration.test_rest_api import ROOT, base_env, serve

pytestmark = pytest.mark.slow


def _ingest(env: dict[str, str], source: Path) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "ingest", "--source", str(source), "--workers", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return re.search(r"run ([0-9a-f-]{36})\)", done.stdout).group(1), done.stderr


def test_commands_use_a_running_imtext_serve(tmp_path):
    from PIL import Image

    tree = tmp_path / "tree" / "train" / "n01440764"
    tree.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (32, 24), (i * 60, 0, 0)).save(tree / f"n01440764_{i}.JPEG")
    env = base_env(tmp_path)
    with serve(env, only="ingest") as served:
        assert (Path(env["PREFECT_HOME"]) / SERVE_FILE).exists()
        found, stderr = _ingest(env, tmp_path / "tree")  # no PREFECT_API_URL: found through the file
        assert "warning" not in stderr
        given, _ = _ingest(env | {"PREFECT_API_URL": served.api}, tmp_path / "tree")
        for run_id in (found, given):
            run = served.get(f"/flow_runs/{run_id}")
            assert run.status_code == 200 and run.json()["state"]["type"] == "COMPLETED", run.text
        # No other server was started: the local one logs under PREFECT_HOME when it is.
        assert not (Path(env["PREFECT_HOME"]) / "imtext-local-server.log").exists()
    assert not (Path(env["PREFECT_HOME"]) / SERVE_FILE).exists()
    # Once serve is gone, a command falls back to a server of its own and says why.
    run_id, stderr = _ingest(env | {"PREFECT_API_URL": served.api}, tmp_path / "tree")
    assert "no Prefect API answers" in stderr and run_id
