"""Reads answer while a flow writes: `imtext sql` and a plain DuckDB client, in loops, during `imtext ingest`.

The ingestion runs as a subprocess of the real CLI with a small commit size (and a short pause after
each commit), so that it commits several snapshots over several seconds, the way a large ingestion
commits in batches. Meanwhile the test queries the counts in loops; no query may fail and the
counts may only grow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
IMTEXT = str(Path(sys.executable).with_name("imtext"))
COUNT = "SELECT (SELECT count(*) FROM images) AS images, (SELECT count(*) FROM quarantine) AS quarantine"

# `imtext ingest` with commits of at most 16 records and a pause after each: a long ingestion in small.
WRITER = """
import sys, time
from flows.commands.common import prefect_env
prefect_env()  # before Prefect is imported, as the CLI does
import tasks.ingest.images as images
images.COMMIT_ROWS = 16
write_batch = images.write_batch
def slow_write_batch(*args, **kwargs):
    counts = write_batch(*args, **kwargs)
    time.sleep(0.25)
    return counts
images.write_batch = slow_write_batch
from flows.cli import app
sys.argv = ["imtext", *sys.argv[1:]]
app()
"""


def plain_client_counts(catalog: Path, stop: threading.Event, seen: list, errors: list) -> None:
    """A DuckDB client that knows nothing of imtext: load the packaged extensions, ATTACH, query."""
    import importlib

    import duckdb

    def extension(package: str, name: str) -> str:
        folder = Path(importlib.import_module(package).__file__).parent
        return str(sorted(folder.glob(f"extensions/*/{name}.duckdb_extension"))[-1])

    ducklake = extension("duckdb_extension_ducklake", "ducklake")
    sqlite = extension("duckdb_extension_sqlite_scanner", "sqlite_scanner")
    # One long-lived connection, as a notebook or a BI tool holds it: each query sees the latest snapshot.
    con = duckdb.connect(config={"autoinstall_known_extensions": False})
    try:
        con.execute(f"LOAD '{ducklake}'")
        con.execute(f"LOAD '{sqlite}'")
        con.execute(f"ATTACH 'ducklake:sqlite:{catalog}' AS wh (READ_ONLY)")
        con.execute("USE wh")
        while not stop.is_set():
            try:
                seen.append(con.execute(COUNT).fetchone())
            except Exception as exc:  # recorded, never raised: the assertion below reports them all
                errors.append(repr(exc))
            time.sleep(0.1)
    finally:
        con.close()


def test_imtext_sql_and_a_plain_duckdb_client_answer_while_ingest_writes(tmp_path):
    from flows.demo.sample import generate_sample
    from warehouse.db import Warehouse

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMTEXT_", "PREFECT_API"))}
    env.update(
        IMTEXT_HOME=str(home),
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    sample = generate_sample(tmp_path / "src", train_per_class=8, val_per_class=1)
    catalog = home / "warehouse" / "catalog.sqlite"
    # The warehouse exists before the readers start (a read-only ATTACH needs a catalog).
    with Warehouse(f"sqlite:{catalog}", str(home / "warehouse" / "data") + "/") as wh:
        wh.con  # noqa: B018

    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, "ingest", "--source", sample["root"], "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stop = threading.Event()
    plain_seen: list[tuple] = []
    plain_errors: list[str] = []
    plain = threading.Thread(target=plain_client_counts, args=(catalog, stop, plain_seen, plain_errors))
    plain.start()
    cli_seen: list[tuple] = []
    try:
        while writer.poll() is None or not cli_seen:
            done = subprocess.run(
                [IMTEXT, "sql", COUNT, "--format", "csv"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            header, row = done.stdout.strip().splitlines()
            assert header == "images,quarantine"
            cli_seen.append(tuple(int(v) for v in row.split(",")))
            time.sleep(1.0)  # each call is a whole process: leave the cores to the writer
        output, _ = writer.communicate(timeout=300)
    finally:
        stop.set()
        plain.join(timeout=60)
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, output
    assert plain_errors == []

    final = (sample["images"], sample["quarantined"])
    for seen in (plain_seen, cli_seen):
        # counts only grow, both of them
        assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(seen, seen[1:], strict=False)), seen
        assert seen[0][0] < final[0]  # queried before the ingestion finished ...
    assert plain_seen[-1] == final  # ... and up to its end
    # the plain client watched the ingestion commit batch after batch
    assert len({images for images, _ in plain_seen if 0 < images < final[0]}) >= 3
