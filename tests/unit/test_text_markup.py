"""Cleaning never turns encoded markup into live markup: decode, then strip, until stable."""

from __future__ import annotations

import html
import json
import re

import polars as pl
import pytest

from tasks.harvest.captions import import_captions
from tasks.harvest.text import clean_series, clean_text
from tests.unit.test_harvest_bounds import add_images

LIVE = re.compile(r"<[A-Za-z!/]")  # what a browser would start reading as a tag


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Nice tench &lt;script&gt;alert(2)&lt;/script&gt;", "Nice tench"),
        ("&lt;script&gt;alert(2)&lt;/script&gt;", None),
        ("&amp;lt;img src=x onerror=alert(1)&amp;gt;hello", "hello"),
        ("&amp;amp;lt;b&amp;amp;gt;bold&amp;amp;lt;/b&amp;amp;gt; fish", "bold fish"),
        ("&#60;iframe src=evil&#62;&#x3C;/iframe&#x3E;goldfish", "goldfish"),
        ("＜script＞alert(1)＜/script＞ koi", "koi"),  # fullwidth brackets become '<' under NFKC
        ("&#xFF1C;script&#xFF1E;alert(1)&#xFF1C;/script&#xFF1E; koi", "koi"),
        ("<<b>script>alert(1)<</b>/script> carp", "carp"),  # stripping one tag reveals another
        ("&lt;<b>script</b>&gt;alert(1)&lt;/script&gt; pike", "pike"),
        ("<style>p {color: red}</style>a perch", "a perch"),
        ("&lt;!-- hidden --&gt;seen", "seen"),
        # text that only looks like markup stays
        ("&lt;3 this fish", "<3 this fish"),
        ("a &lt; b and c &gt; d", "a < b and c > d"),
        ("AT&amp;T &amp;amp; friends", "AT&T & friends"),
        ("fish & chips", "fish & chips"),
    ],
)
def test_encoded_markup_is_decoded_then_stripped(raw, clean):
    assert clean_text(raw) == clean


def test_no_depth_of_encoding_brings_markup_back():
    deep = "&" + "amp;" * 60 + "lt;script" + "&" + "amp;" * 60 + "gt;alert(1) rudd"
    texts = [
        deep,
        "&lt;" * 50 + "b&gt;" * 50 + "x",
        "<" * 40 + "b>" * 40 + "y",
        "&amp;" * 100 + "lt;a href=x&gt;z",
    ]
    for text in clean_series(pl.Series(texts)).to_list():
        assert text is None or not LIVE.search(text), text
        assert text is None or not LIVE.search(html.unescape(text)), text


def test_captions_harvest_stores_no_live_markup(tmp_path, wh):
    add_images(wh, ["n01440764_1", "n01440764_2"])
    records = [
        {
            "filename": "n01440764_1.JPEG",
            "wnid": "n01440764",
            "title": "A tench &lt;script&gt;alert(2)&lt;/script&gt;",
            "description": "caught &amp;lt;img src=x onerror=alert(1)&amp;gt;today",
            "tags": ["&lt;b&gt;fish&lt;/b&gt;", "lake"],
        },
        {
            "filename": "n01440764_2.JPEG",
            "wnid": "n01440764",
            "title": "&#60;iframe src=//evil&#62;&#60;/iframe&#62;Tench at dawn",
            "description": "&lt;3 fishing",
            "tags": [],
        },
    ]
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(records))
    import_captions(wh, path, "run-1")
    rows = wh.reader().execute("SELECT image_id, field, text, raw_text FROM image_texts").fetchall()
    texts = {(image_id, field): text for image_id, field, text, _ in rows}
    assert texts == {
        ("n01440764_1", "title"): "A tench",
        ("n01440764_1", "description"): "caught today",
        ("n01440764_1", "tags"): "fish, lake",
        ("n01440764_2", "title"): "Tench at dawn",
        ("n01440764_2", "description"): "<3 fishing",
    }
    assert any("&lt;script&gt;" in raw for *_, raw in rows)  # the raw text is kept as it came
