"""Kill a harvest mid-way (SIGKILL, from outside) and run it again: every row once, none lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from flows.demo.servers import serve_apis
from flows.demo.texts import write_harvest_inputs
from tests.flows.test_harvest_flows import add_images

WNIDS = ["n01440764", "n01484850", "n02085620", "n02123045"]
# The real command, with small batches so that a kill lands between committed batches.
RUN_CLI = "import tasks.harvest.flickr as f; f.BATCH_SIZE = 4; from flows.cli import app; app()"


@pytest.mark.slow
def test_killed_flickr_harvest_resumes_exactly(tmp_path, home, wh, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    from flows.harvest import harvest_images_flow

    pairs = [(f"{w}_{k}", w) for w in WNIDS for k in range(15)]
    add_images(wh, pairs)
    inputs = write_harvest_inputs(pairs, tmp_path / "inputs", seed=5, captions_share=0.0)
    labels = pl.read_ndjson(inputs.labels)
    kinds = inputs.counts["flickr"]
    with serve_apis(inputs.root, api_key=inputs.api_key, fault_every=0, latency_s=0.05) as apis:
        env = {
            **os.environ,
            **apis.env(),
            "IMTEXT_HOME": str(home),
            "IMTEXT_FLICKR_API_KEY": inputs.api_key,
            "PREFECT_API_URL": PREFECT_API_URL.value(),
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        cmd = [sys.executable, "-c", RUN_CLI, "harvest", "images", "--flickr-urls", str(inputs.flickr_urls)]
        proc = subprocess.Popen(
            [*cmd, "--concurrency", "2", "--rate-limit", "20"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        done = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                reader = wh.reader()
                done = reader.execute(
                    "SELECT count(*) FROM harvest_state WHERE source = 'flickr' AND status = 'done'"
                ).fetchone()[0]
                reader.close()
            except Exception:
                done = 0
            if done >= 4:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=30)[0].decode(errors="replace")
        assert proc.returncode == -signal.SIGKILL, output

        reader = wh.reader()
        states = dict(
            reader.execute(
                "SELECT status, count(*) FROM harvest_state WHERE source = 'flickr' GROUP BY 1"
            ).fetchall()
        )
        assert states.get("done", 0) >= 4 and states.get("pending", 0) > 0, (states, output)
        partial = reader.execute("SELECT count(*) FROM image_texts").fetchone()[0]
        assert 0 < partial < labels.height
        reader.close()

        for name, value in {**apis.env(), "IMTEXT_FLICKR_API_KEY": inputs.api_key}.items():
            monkeypatch.setenv(name, value)
        summary = harvest_images_flow(flickr_urls=str(inputs.flickr_urls), concurrency=8, rate_limit=200)

    assert summary["sources"]["flickr"]["skipped"] > 0  # what the killed run finished is not fetched again
    con = wh.reader()
    assert con.execute("SELECT count(*), count(DISTINCT text_id) FROM image_texts").fetchone() == (
        labels.height,
        labels.height,
    )
    assert sorted(r[0] for r in con.execute("SELECT text_id FROM image_texts").fetchall()) == sorted(
        labels["text_id"].to_list()
    )
    state = con.execute(
        "SELECT count(*), count(DISTINCT key), count(*) FILTER (status = 'done'), count(*) FILTER (status = 'gone') "
        "FROM harvest_state WHERE source = 'flickr'"
    ).fetchone()
    listed = kinds["flickr"] + kinds["deleted"] + kinds["placeholder"]
    assert state == (listed, listed, kinds["flickr"], kinds["deleted"] + kinds["placeholder"])
