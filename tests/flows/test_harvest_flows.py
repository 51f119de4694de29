"""The harvest flows end to end against the stand-in Wikipedia and Flickr servers on 127.0.0.1."""

from __future__ import annotations

import json

import polars as pl
import pytest

from flows.demo.servers import serve_apis
from flows.demo.texts import write_harvest_inputs
from warehouse.catalog import read_classes

WNIDS = ["n01440764", "n01484850", "n02085620", "n02123045", "n03126707", "n04254680"]


def add_images(wh, pairs, paths=None):
    frame = pl.DataFrame(
        {
            "image_id": [i for i, _ in pairs],
            "wnid": [w for _, w in pairs],
            "split": ["train"] * len(pairs),
            "path": paths or [f"/nowhere/{i}.JPEG" for i, _ in pairs],
        }
    )

    def insert(con):
        con.register("new_images", frame.to_arrow())
        con.execute("INSERT INTO images (image_id, wnid, split, path) SELECT * FROM new_images")
        con.unregister("new_images")

    wh.write(insert)


@pytest.fixture
def sample(tmp_path, wh, monkeypatch):
    pairs = [(f"{w}_{k}", w) for w in WNIDS for k in range(8)]
    add_images(wh, pairs)
    inputs = write_harvest_inputs(pairs, tmp_path / "inputs", seed=3)
    with serve_apis(inputs.root, api_key=inputs.api_key, fault_every=8) as apis:
        for name, value in apis.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("IMTEXT_FLICKR_API_KEY", inputs.api_key)
        yield inputs, apis


def test_classes_flow_stores_wordnet_wikipedia_and_files_once(sample, wh):
    from flows.harvest import harvest_classes_flow

    inputs, apis = sample
    summary = harvest_classes_flow(descriptions=str(inputs.descriptions))
    con = wh.reader()
    by_source = dict(con.execute("SELECT source, count(*) FROM class_texts GROUP BY 1").fetchall())
    lemma_count = sum(len(x.split(",")) for x in read_classes()["lemmas"].to_list())
    assert by_source["wordnet"] == 1000 + lemma_count
    assert by_source["file:class_descriptions.json"] == 2 * len(WNIDS)
    roles = inputs.counts["wikipedia"]
    expected_pages = sum(r != "missing" for r in roles.values())
    assert by_source["wikipedia"] == expected_pages
    assert summary["sources"]["wikipedia"]["done"] == expected_pages
    assert summary["state"]["wikipedia"] == {"done": expected_pages, "gone": len(WNIDS) - expected_pages}
    # the disambiguation class got the page of its second name, the redirect class its target's URL
    disamb = next(w for w, r in roles.items() if r == "disambiguation")
    url = con.execute(
        "SELECT url FROM class_texts WHERE wnid = ? AND source = 'wikipedia'", [disamb]
    ).fetchone()[0]
    assert url.startswith("https://en.wikipedia.org/wiki/") and "may refer" not in url

    again = harvest_classes_flow(descriptions=str(inputs.descriptions))
    assert again["sources"]["wikipedia"]["skipped"] == len(WNIDS)
    assert again["sources"]["wordnet"]["texts_added"] == 0
    assert (
        dict(wh.reader().execute("SELECT source, count(*) FROM class_texts GROUP BY 1").fetchall())
        == by_source
    )


def test_images_flow_captions_and_flickr_match_the_labels(sample, wh):
    from flows.harvest import harvest_images_flow

    inputs, apis = sample
    summary = harvest_images_flow(
        captions=str(inputs.captions), flickr_urls=str(inputs.flickr_urls), concurrency=8, rate_limit=500
    )
    caps, flickr = summary["sources"]["imagenet-captions"], summary["sources"]["flickr"]
    assert caps["not_ingested"] == 3 and caps["done"] == inputs.counts["captions_images"]
    kinds = inputs.counts["flickr"]
    assert flickr["done"] == kinds["flickr"] and flickr["gone"] == kinds["deleted"]
    assert flickr["placeholder"] == kinds["placeholder"] and flickr["not_flickr"] == kinds["other"]
    assert flickr["not_ingested"] == 1
    assert apis.stats[429] and apis.stats[500]  # the deliberate faults were met, and retried
    assert summary["state"]["flickr"] == {
        "done": kinds["flickr"],
        "gone": kinds["deleted"] + kinds["placeholder"],
    }

    con = wh.reader()
    stored = con.execute("SELECT text_id, image_id, source, field, text, junk, url FROM image_texts").pl()
    labels = pl.read_ndjson(inputs.labels)
    assert sorted(stored["text_id"].to_list()) == sorted(labels["text_id"].to_list())
    joined = stored.join(labels, on="text_id")
    assert (joined["text"] == joined["text_right"]).all()
    assert stored.filter(pl.col("junk") == "camera-filename").height > 0
    assert not stored["text"].str.contains("<|&amp;").any()
    flickr_urls = stored.filter(pl.col("source") == "flickr")["url"]
    assert flickr_urls.str.starts_with("https://www.flickr.com/photos/").all()
    pending = con.execute(
        "SELECT count(*) FROM harvest_state WHERE source = 'imagenet-captions' AND status = 'pending'"
    ).fetchone()[0]
    assert pending == 3

    again = harvest_images_flow(
        captions=str(inputs.captions), flickr_urls=str(inputs.flickr_urls), rate_limit=500
    )
    assert again["sources"]["flickr"]["skipped"] == kinds["flickr"] + kinds["deleted"]
    assert (
        again["sources"]["flickr"]["texts_added"] == again["sources"]["imagenet-captions"]["texts_added"] == 0
    )
    assert wh.reader().execute("SELECT count(*), count(DISTINCT text_id) FROM image_texts").fetchone() == (
        stored.height,
        stored.height,
    )


def test_retry_failed_retries_only_failures(sample, wh, tmp_path, monkeypatch):
    from flows.harvest import harvest_images_flow

    inputs, apis = sample
    answers = json.loads((inputs.root / "flickr_getinfo.json").read_text())
    broken = sorted(answers)[:3]
    for photo_id in broken:  # a malformed answer, then (next run) a good one
        answers[photo_id] = {"_body": '{"photo": {"title": '}
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "flickr_getinfo.json").write_text(json.dumps(answers))
    with serve_apis(bad_dir, api_key=inputs.api_key, fault_every=0) as bad:
        monkeypatch.setenv("IMTEXT_FLICKR_API", bad.flickr_api)
        first = harvest_images_flow(flickr_urls=str(inputs.flickr_urls), rate_limit=500)
    monkeypatch.setenv("IMTEXT_FLICKR_API", apis.flickr_api)
    assert first["sources"]["flickr"]["failed"] == 3
    errors = [
        r[0]
        for r in wh.reader()
        .execute("SELECT last_error FROM harvest_state WHERE status = 'failed'")
        .fetchall()
    ]
    assert errors == ["malformed JSON answer from the Flickr API"] * 3

    plain = harvest_images_flow(flickr_urls=str(inputs.flickr_urls), rate_limit=500)
    assert plain["sources"]["flickr"]["done"] == 0 and plain["sources"]["flickr"]["failed"] == 0
    retried = harvest_images_flow(flickr_urls=str(inputs.flickr_urls), rate_limit=500, retry_failed=True)
    assert retried["sources"]["flickr"]["done"] == 3
    assert retried["state"]["flickr"].get("failed", 0) == 0
    attempts = (
        wh.reader()
        .execute(
            "SELECT attempts, count(*) FROM harvest_state WHERE source = 'flickr' AND attempts > 1 GROUP BY 1"
        )
        .fetchall()
    )
    assert attempts == [(2, 3)]


def test_embedded_flow_reads_metadata_of_ingested_files(tmp_path, wh):
    from flows.harvest import harvest_images_flow
    from tests.integration.test_harvest_sources import jpeg_with_metadata

    paths = []
    for k in range(3):
        path = tmp_path / f"n01440764_{k}.JPEG"
        path.write_bytes(
            jpeg_with_metadata(description=f"A tench caught at the lake, number {k}", comment="IMG_0001")
        )
        paths.append(str(path))
    broken = tmp_path / "n01440764_9.JPEG"
    broken.write_bytes(b"not a jpeg")
    add_images(wh, [(f"n01440764_{k}", "n01440764") for k in (0, 1, 2, 9)], paths + [str(broken)])
    summary = harvest_images_flow(embedded=True, concurrency=2)
    assert summary["sources"]["embedded"]["done"] == 3 and summary["sources"]["embedded"]["failed"] == 1
    rows = wh.reader().execute("SELECT image_id, field, text, junk FROM image_texts ORDER BY ALL").fetchall()
    assert ("n01440764_0", "description", "A tench caught at the lake, number 0", None) in rows
    assert ("n01440764_0", "comment", "IMG_0001", "camera-filename") in rows
    again = harvest_images_flow(embedded=True)
    assert again["sources"]["embedded"]["skipped"] == 4 and again["sources"]["embedded"]["done"] == 0


def test_bad_inputs_are_clear_errors(tmp_path, wh, monkeypatch):
    from flows.harvest import harvest_classes_flow, harvest_images_flow
    from tasks.common.errors import InputError

    with pytest.raises(InputError, match="--captions FILE"):
        harvest_images_flow()
    monkeypatch.delenv("IMTEXT_FLICKR_API_KEY", raising=False)
    urls = tmp_path / "urls.txt"
    urls.write_text("a\thttp://farm1.static.flickr.com/1/2_ab.jpg\n")
    with pytest.raises(InputError, match="IMTEXT_FLICKR_API_KEY"):
        harvest_images_flow(flickr_urls=str(urls))
    with pytest.raises(InputError, match="unknown: n99999999"):
        harvest_classes_flow(classes="n01440764,n99999999", wikipedia=True)
    bad = tmp_path / "cupl.json"
    bad.write_text(json.dumps({"crane": ["a crane"], "flux capacitor": ["?"]}))
    with pytest.raises(InputError, match="crane"):
        harvest_classes_flow(descriptions=str(bad), wikipedia=False)
    assert wh.reader().execute("SELECT count(*) FROM class_texts").fetchone() == (0,)


def test_cli_harvest_commands(tmp_path, home):
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["harvest", "images"])
    assert result.exit_code == 2 and "give one of --captions FILE" in result.output
    bad = tmp_path / "mine.json"
    bad.write_text("{not json")
    result = runner.invoke(app, ["harvest", "classes", "--no-wikipedia", "--descriptions", str(bad)])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    result = runner.invoke(app, ["harvest", "classes", "--no-wikipedia"])
    assert result.exit_code == 0, result.output
    assert "wordnet: classes 1000, texts_added 2860" in result.output
    help_text = runner.invoke(app, ["harvest", "images", "--help"]).output
    assert "--retry-failed" in help_text and "--rate-limit" in help_text
