"""The Flickr API key appears nowhere: logs, warehouse rows and files, Prefect's database, artifacts, errors."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

import pytest

from flows.demo.servers import serve_apis
from flows.demo.texts import write_harvest_inputs
from tests.flows.test_harvest_flows import add_images


def _prefect_db() -> Path | None:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or ""
    return Path(url.split("///", 1)[1]) if url.startswith("sqlite") and "///" in url else None


def test_flickr_key_is_never_shown_or_stored(tmp_path, home, wh, monkeypatch, caplog):
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogWorker

    from flows.harvest import harvest_images_flow
    from tasks.common.errors import InputError

    key = f"imtext-secret-{uuid.uuid4().hex}"
    pairs = [(f"n01440764_{k}", "n01440764") for k in range(12)]
    add_images(wh, pairs)
    inputs = write_harvest_inputs(pairs, tmp_path / "inputs", seed=1, captions_share=0.0)
    answers = json.loads((inputs.root / "flickr_getinfo.json").read_text())
    first = sorted(answers)[0]
    answers[first] = {"_body": "{broken"}  # an error path: the failure is stored, the key is not
    (inputs.root / "flickr_getinfo.json").write_text(json.dumps(answers))

    monkeypatch.delenv("IMTEXT_FLICKR_API_KEY", raising=False)
    Secret(value=key).save("flickr-api-key", overwrite=True)  # the key comes from the Prefect block
    caplog.set_level(logging.DEBUG)
    try:
        with serve_apis(inputs.root, api_key=key, fault_every=4) as apis:
            monkeypatch.setenv("IMTEXT_FLICKR_API", apis.flickr_api)
            summary = harvest_images_flow(flickr_urls=str(inputs.flickr_urls), rate_limit=200)
            assert summary["sources"]["flickr"]["done"] >= 1 and summary["sources"]["flickr"]["failed"] == 1
        with serve_apis(inputs.root, api_key="another-key", fault_every=0) as apis:
            monkeypatch.setenv("IMTEXT_FLICKR_API", apis.flickr_api)
            with pytest.raises(InputError, match="refused the API key") as refused:
                harvest_images_flow(flickr_urls=str(inputs.flickr_urls), rate_limit=200, retry_failed=True)
    finally:
        Secret(value="placeholder-not-a-key").save("flickr-api-key", overwrite=True)
    assert key not in str(refused.value) and key not in repr(refused.value)
    assert key not in json.dumps(summary)

    # the warehouse: every row of every table, and every file under IMTEXT_HOME
    con = wh.reader()
    tables = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'wh'"
        ).fetchall()
    ]
    assert "image_texts" in tables
    for table in tables:
        assert key not in repr(con.execute(f'SELECT * FROM "{table}"').fetchall()), table
    errors = [
        r[0]
        for r in con.execute("SELECT last_error FROM harvest_state WHERE last_error IS NOT NULL").fetchall()
    ]
    assert any("malformed JSON" in e for e in errors)
    urls = [r[0] for r in con.execute("SELECT DISTINCT url FROM image_texts").fetchall()]
    assert urls and all(u.startswith("https://www.flickr.com/photos/") for u in urls)
    for path in Path(home).rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path

    # logs: this process's log records, and what Prefect stored (logs, artifacts, runs)
    assert key not in caplog.text
    APILogWorker.drain_all(timeout=10)
    time.sleep(0.5)

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    import asyncio

    stored = asyncio.run(artifacts())
    assert any(a.key == "harvest-images-summary" for a in stored)
    assert all(key not in json.dumps(a.model_dump(mode="json")) for a in stored)
    db = _prefect_db()
    if db is not None and db.exists():
        blob = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
        assert b"harvest-images flickr" in blob  # the logs did reach the database
        # the block document is Prefect's secret store (encrypted); nothing else may hold the key
        assert key.encode() not in blob
