"""Harvested values are bounded and never carry the Flickr key: raw_text is capped for every
source, and a Flickr answer that echoes the key is stored without it (texts, URLs, errors)."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest
from PIL import Image

from flows.demo.servers import CannedData, serve_apis
from tasks.harvest.captions import import_captions
from tasks.harvest.descriptions import read_descriptions
from tasks.harvest.embedded import harvest_embedded
from tasks.harvest.flickr import FlickrClient, harvest_flickr
from tasks.harvest.http import HttpClient
from tasks.harvest.text import MAX_TEXT_CHARS, RAW_TEXT_MAX_BYTES, prepare_class_texts, prepare_image_texts
from warehouse.catalog import read_classes

HUGE = "é" + "tench é " * 750_000  # about 7 MB; two-byte characters, so a byte cut may split one
KEY = "0123456789abcdef0123456789abcdef"  # shaped like a Flickr key


def add_images(wh, ids: list[str], paths: list[str] | None = None) -> None:
    frame = pl.DataFrame(
        {
            "image_id": ids,
            "wnid": [i.split("_")[0] for i in ids],
            "split": ["train"] * len(ids),
            "path": paths or [f"/nowhere/{i}.JPEG" for i in ids],
        }
    )

    def insert(con):
        con.register("new_images", frame.to_arrow())
        con.execute("INSERT INTO images (image_id, wnid, split, path) SELECT * FROM new_images")
        con.unregister("new_images")

    wh.write(insert)


def stored_raw(wh) -> list[str]:
    return [r[0] for r in wh.reader().execute("SELECT raw_text FROM image_texts").fetchall()]


def assert_capped(raw: str, total: int) -> None:
    size = len(raw.encode("utf-8"))
    assert RAW_TEXT_MAX_BYTES - 8 <= size <= RAW_TEXT_MAX_BYTES
    assert "\ufffd" not in raw and raw.endswith(f"[cut by imtext: {total} bytes in all]")


# -- item 8a: raw_text is capped ---------------------------------------------------------------
def test_prepare_caps_raw_text_on_a_character_boundary():
    for shift in range(2):  # an odd and an even offset: one cut lands inside a two-byte character
        huge = "x" * shift + HUGE
        raw = pl.DataFrame(
            {
                "image_id": ["a", "a"],
                "source": ["s", "s"],
                "field": ["title", "tags"],
                "raw_text": [huge, "ok"],
            }
        )
        rows = prepare_image_texts(raw, "run").sort("field")
        (tags, title) = rows.iter_rows(named=True)
        assert (tags["raw_text"], tags["text"]) == ("ok", "ok")  # short texts are untouched
        assert_capped(title["raw_text"], len(huge.encode()))
        assert huge.startswith(title["raw_text"].rsplit(" [cut by imtext", 1)[0])
        assert 0 < len(title["text"]) <= MAX_TEXT_CHARS and huge.startswith(title["text"])


def test_captions_store_a_capped_raw_text(tmp_path, wh):
    add_images(wh, ["n01440764_1"])
    path = tmp_path / "captions.json"
    path.write_text(json.dumps([{"filename": "n01440764_1.JPEG", "title": HUGE, "tags": ["fish"]}]))
    import_captions(wh, path, "run-1")
    (raw, tags) = sorted(stored_raw(wh), key=len, reverse=True)
    assert_capped(raw, len(HUGE.encode())) and tags == "fish"


def test_embedded_texts_store_a_capped_raw_text(wh):
    comment = ("pike " * 12_000).encode()  # a 60 kB JPEG comment segment
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", comment=comment)
    add_images(wh, ["n01440764_2"])
    images = pl.DataFrame({"image_id": ["n01440764_2"], "path": ["/any"]})
    harvest_embedded(wh, images, "run-1", reader=lambda path: buf.getvalue())
    (raw,) = stored_raw(wh)
    assert_capped(raw, len(comment.strip()))


def test_description_files_are_cleaned_from_a_capped_text(tmp_path):
    path = tmp_path / "descriptions.json"
    path.write_text(json.dumps({"n01440764": [HUGE]}))
    texts = prepare_class_texts(read_descriptions(path, read_classes()), "run-1")
    (text,) = texts["text"].to_list()
    assert 0 < len(text) <= MAX_TEXT_CHARS and HUGE.startswith(text)


# -- item 8c: the Flickr key is never stored ----------------------------------------------------
@pytest.fixture
def flickr_answers():
    """getInfo answers that echo the key every way a service might (and one huge title)."""
    page = {"url": [{"type": "photopage", "_content": f"https://www.flickr.com/photos/u/1/?api_key={KEY}"}]}
    return {
        "1": {
            "title": {"_content": f"Tench (request key {KEY})"},
            "description": {"_content": f"debug: api_key={KEY.upper()} end"},  # upper case echo
            "tags": {"tag": [{"raw": KEY}, {"raw": "lake"}]},
            "urls": page,
        },
        # the key split by markup, and written as entities: both join up when cleaned
        "2": {
            "title": {"_content": f"Carp {KEY[:10]}<i></i>{KEY[10:]} pond"},
            "description": {"_content": "".join(f"&#{ord(c)};" for c in KEY) + " river"},
            "urls": {"url": [{"type": "photopage", "_content": "javascript:alert(1)"}]},
        },
        "3": {"_body": json.dumps({"stat": "fail", "code": 105, "message": f"Service down for key {KEY}"})},
        "4": {"_body": json.dumps({"stat": "fail", "code": f"E-{KEY}", "message": "odd code"})},
        "5": {"_body": json.dumps({"stat": "fail", "code": 1, "message": f'Photo "5" not found ({KEY})'})},
        "6": {"title": {"_content": HUGE}},
    }


def test_a_flickr_answer_that_echoes_the_key_is_stored_without_it(wh, flickr_answers):
    ids = [f"n01440764_{n}" for n in flickr_answers]
    add_images(wh, ids)
    todo = pl.DataFrame({"image_id": ids, "photo_id": list(flickr_answers)})
    with serve_apis(CannedData(flickr=flickr_answers), api_key=KEY, fault_every=0) as apis:
        with HttpClient(secrets=[KEY], retries=0) as http:
            counts = harvest_flickr(wh, FlickrClient(http, apis.flickr_api, KEY), todo, "run-1")
    assert (counts["done"], counts["failed"], counts["gone"]) == (3, 2, 1)

    con = wh.reader()
    for table in ("image_texts", "harvest_state"):
        dump = repr(con.execute(f"SELECT * FROM {table}").fetchall()).lower()
        assert KEY not in dump and KEY[:16] not in dump and KEY[16:] not in dump, table
    texts = dict(
        ((i, f), t) for i, f, t in con.execute("SELECT image_id, field, text FROM image_texts").fetchall()
    )
    assert texts[("n01440764_1", "title")] == "Tench (request key ***)"
    assert texts[("n01440764_1", "description")] == "debug: api_key=*** end"
    assert texts[("n01440764_1", "tags")] == "***, lake"
    assert texts[("n01440764_2", "title")] == "Carp *** pond"
    assert texts[("n01440764_2", "description")] == "*** river"
    urls = dict(con.execute("SELECT DISTINCT image_id, url FROM image_texts").fetchall())
    assert urls["n01440764_1"] == "https://www.flickr.com/photos/u/1/?api_key=***"
    assert urls["n01440764_2"] == "https://www.flickr.com/photo.gne?id=2"  # not a photo page: ignored
    errors = dict(con.execute("SELECT key, last_error FROM harvest_state").fetchall())
    assert errors["n01440764_3"] == "flickr code 105: Service down for key ***"
    assert errors["n01440764_4"].startswith("flickr code E-***")
    assert "***" in errors["n01440764_5"]
    (raw,) = [r for r in stored_raw(wh) if len(r) > 1000]
    assert_capped(raw, len(HUGE.encode()))
