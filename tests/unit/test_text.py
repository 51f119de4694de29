"""Cleaning, junk marking, text ids and the preparation of harvested texts."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from tasks.harvest.text import (
    MAX_TEXT_CHARS,
    clean_series,
    clean_text,
    decode_bytes,
    join_tags,
    junk_reason,
    prepare_class_texts,
    prepare_image_texts,
    tags_expr,
    text_id,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<p>A <b>tench</b> &amp; friends</p><br/>caught", "A tench & friends caught"),
        ('<a href="http://x.org/">my set</a>', "my set"),
        ("&lt;3 &#39;quoted&#39; &eacute;t&eacute;", "<3 'quoted' été"),
        ("a < b and c > d", "a < b and c > d"),
        ("Ｆｕｌｌ ｗｉｄｔｈ ﬁsh", "Full width fish"),
        ("  spaced\t\n out\u00a0 text \u200b ", "spaced out text"),
        ("nul\x00byte", "nul byte"),
        ("<!-- a comment -->", None),
        ("   ", None),
        ("", None),
        (None, None),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_clean_bytes_of_any_encoding():
    assert clean_text("Café".encode("cp1252")) == "Café"
    assert clean_text("Café".encode()) == "Café"
    assert decode_bytes(b"\x81\x8d") == "\x81\x8d"  # not cp1252 either: Latin-1 never fails


def test_long_texts_are_cut_at_a_word_boundary():
    text = ("word " * 1000).strip()
    cut = clean_text(text)
    assert len(cut) <= MAX_TEXT_CHARS and cut.endswith("word") and text.startswith(cut)
    assert len(clean_text("x" * 5000)) == MAX_TEXT_CHARS  # no boundary: hard cut


def test_vectorised_and_single_cleaning_agree():
    texts = ["<b>A</b> &amp; B", None, "  ", "IMG_1234", "x" * 3000]
    assert clean_series(pl.Series(texts)).to_list() == [clean_text(t) for t in texts]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("IMG_1234", "camera-filename"),
        ("IMG_1234.JPG", "camera-filename"),
        ("DSC00023", "camera-filename"),
        ("P1010234", "camera-filename"),
        ("100_1234", "camera-filename"),
        ("20080612_123456", "camera-filename"),
        ("holiday pic.jpeg", "camera-filename"),
        ("OLYMPUS DIGITAL CAMERA", "camera-default"),
        ("SONY DSC", "camera-default"),
        ("2008", "number"),
        ("12.05.2007 14:30", "number"),
        ("http://www.flickr.com/photos/x/1/", "url-only"),
        ("www.example.org http://a.b/c", "url-only"),
        ("Untitled", "untitled"),
        ("a tench at the lake", None),
        ("IMG_1234 of my dog at the lake", None),
        ("see http://x.org for the tench", None),
        ("Route 66", None),
    ],
)
def test_junk_reasons(text, reason):
    assert junk_reason(text) == reason


def test_text_id_is_stable_and_separates_fields():
    # the recipe is part of the contract: labels and later tables refer to rows by it
    expected = hashlib.blake2b(b"n01440764_1\x1fflickr\x1ftitle\x1fA tench", digest_size=16).hexdigest()
    assert (
        text_id("n01440764_1", "flickr", "title", "A tench") == expected == "74a1e8ad0aa75823e9942ccfa5da309b"
    )
    assert text_id("a", "b", "c", "d") != text_id("a", "b", "cd", "")
    assert len(text_id("a", "b", "c", "d")) == 32


def test_prepare_image_texts_drops_empties_and_duplicates_per_image():
    raw = pl.DataFrame(
        {
            "image_id": ["i1", "i1", "i1", "i1", "i2"],
            "source": ["flickr"] * 5,
            "field": ["title", "description", "tags", "comment", "title"],
            "raw_text": ["My Tench", "my <i>tench</i>", "<br/>", "IMG_0001", "My Tench"],
        }
    )
    out = prepare_image_texts(raw, run_id="r1")
    assert out.select("image_id", "field", "text", "junk").rows() == [
        ("i1", "title", "My Tench", None),
        ("i1", "comment", "IMG_0001", "camera-filename"),
        ("i2", "title", "My Tench", None),
    ]
    assert out["raw_text"][0] == "My Tench" and out["run_id"].unique().to_list() == ["r1"]
    assert out["text_id"][0] == text_id("i1", "flickr", "title", "My Tench")
    assert out["fetched_at"].null_count() == 0


def test_prepare_class_texts_dedups_on_the_natural_key():
    raw = pl.DataFrame(
        {
            "wnid": ["n1", "n1", "n2"],
            "source": ["file:x"] * 3,
            "field": ["description"] * 3,
            "text": ["a", " a ", "a"],
        }
    )
    out = prepare_class_texts(raw, run_id="r")
    assert out.select("wnid", "text").rows() == [("n1", "a"), ("n2", "a")]


def test_tags_joined_once_each():
    assert join_tags(["Dog", "dog", " beach ", "", None]) == "Dog, beach"
    assert join_tags([]) is None
    frame = pl.DataFrame(
        {"tags": [["Dog", "dog", " beach ", ""], [], None]}, schema={"tags": pl.List(pl.String)}
    )
    assert frame.select(tags_expr())["tags"].to_list() == ["Dog, beach", None, None]
