"""Harvest sources against real HTTP servers on 127.0.0.1 (the demo stand-ins) and real image files."""

from __future__ import annotations

import io
import json
import struct

import polars as pl
import pytest
from PIL import Image

from flows.demo.servers import CannedData, serve_apis
from tasks.common.errors import InputError
from tasks.harvest.captions import caption_rows, read_captions
from tasks.harvest.descriptions import read_descriptions, wordnet_texts
from tasks.harvest.embedded import extract_embedded
from tasks.harvest.flickr import FlickrClient, FlickrKeyError, parse_url_list
from tasks.harvest.http import HttpClient
from tasks.harvest.wikipedia import fetch_summary
from warehouse.catalog import read_classes

KEY = "s3cret-key-for-tests-7f3a9"


def _iptc(records: list[tuple[int, bytes]]) -> bytes:
    data = b"".join(b"\x1c\x02" + bytes([ds]) + struct.pack(">H", len(v)) + v for ds, v in records)
    if len(data) % 2:
        data += b"\x00"
    irb = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(data)) + data
    body = b"Photoshop 3.0\x00" + irb
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def jpeg_with_metadata(
    description: str | None = None,
    comment: str | None = None,
    xp_title: str | None = None,
    xp_keywords: str | None = None,
    iptc: list[tuple[int, bytes]] | None = None,
    xmp_description: str | None = None,
    xmp_subjects: list[str] | None = None,
    user_comment: bytes | None = None,
) -> bytes:
    """A small JPEG carrying the given EXIF / IPTC / XMP / COM texts."""
    exif = Image.Exif()
    if description is not None:
        exif[0x010E] = description
    if xp_title is not None:
        exif[0x9C9B] = xp_title.encode("utf-16-le") + b"\x00\x00"
    if xp_keywords is not None:
        exif[0x9C9E] = xp_keywords.encode("utf-16-le") + b"\x00\x00"
    if user_comment is not None:
        exif.get_ifd(0x8769)[0x9286] = user_comment
    kwargs = {"exif": exif}
    if comment is not None:
        kwargs["comment"] = comment.encode("utf-8")
    if xmp_description or xmp_subjects:
        subjects = "".join(f"<rdf:li>{s}</rdf:li>" for s in xmp_subjects or [])
        kwargs["xmp"] = (
            '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">'
            f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{xmp_description or ""}</rdf:li></rdf:Alt></dc:description>'
            f"<dc:subject><rdf:Bag>{subjects}</rdf:Bag></dc:subject>"
            "</rdf:Description></rdf:RDF></x:xmpmeta>"
        ).encode()
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (90, 120, 30)).save(buf, "JPEG", **kwargs)
    data = buf.getvalue()
    if iptc:
        data = data[:2] + _iptc(iptc) + data[2:]
    return data


# -- embedded metadata --------------------------------------------------------------------------------
def test_embedded_reads_exif_iptc_xmp_and_comment():
    data = jpeg_with_metadata(
        description="A tench on the table",
        comment="caught in the old pond",
        xp_title="Mein Fisch",
        xp_keywords="fish;tench;Fish",
        iptc=[(5, b"Object name"), (120, "Légende IPTC".encode("cp1252")), (25, b"pond"), (25, b"summer")],
        xmp_description="Tench from XMP",
        xmp_subjects=["tench", "lake"],
        user_comment=b"ASCII\x00\x00\x00a user comment",
    )
    found = extract_embedded(data)
    assert ("description", "A tench on the table") in found
    assert ("title", "Mein Fisch") in found
    assert ("tags", "fish, tench") in found
    assert ("title", "Object name") in found
    assert ("description", "Légende IPTC") in found
    assert ("tags", "pond, summer") in found
    assert ("description", "Tench from XMP") in found
    assert ("tags", "tench, lake") in found
    assert ("comment", "caught in the old pond") in found
    assert ("comment", "a user comment") in found
    assert [f for f, _ in found] == sorted(
        (f for f, _ in found), key=["title", "description", "tags", "comment"].index
    )


def test_embedded_plain_image_has_no_text_and_garbage_raises():
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    assert extract_embedded(buf.getvalue()) == []
    from PIL import UnidentifiedImageError

    with pytest.raises(UnidentifiedImageError):
        extract_embedded(b"definitely not an image")


# -- Wikipedia --------------------------------------------------------------------------------------
def _page(title, extract, kind="standard"):
    slug = title.replace(" ", "_")
    return {
        "type": kind,
        "title": slug,
        "extract": extract,
        "content_urls": {"desktop": {"page": f"https://en.wikipedia.org/wiki/{slug}"}},
    }


WIKI = CannedData(
    wikipedia={
        "Crane": _page("Crane", "Crane may refer to:", "disambiguation"),
        "Crane (bird)": _page("Crane (bird)", "Cranes are a family of large birds."),
        "Tench": _page("Tench", "The tench is a fish."),
        "Bad json": {"_body": "{not json"},
        "Latin": {
            "_body": json.dumps(_page("Latin", "Caf\u00e9 au lait")).encode().decode(),
            "_charset": "utf-8",
        },
        "Slow": {**_page("Slow", "slow page"), "_delay_s": 2},
    },
    redirects={"Tinca tinca": "Tench"},
)


def client(**kw) -> HttpClient:
    kw.setdefault("backoff_s", 0.01)
    return HttpClient(**kw)


def test_wikipedia_names_in_order_disambiguation_redirect_missing():
    with serve_apis(WIKI, fault_every=0) as apis, client() as http:
        api = apis.wikipedia_api
        crane = fetch_summary(http, api, "n1", ["crane", "crane (bird)"])
        assert (crane.status, crane.text) == ("done", "Cranes are a family of large birds.")
        assert crane.url == "https://en.wikipedia.org/wiki/Crane_(bird)"
        tench = fetch_summary(http, api, "n2", ["Tinca tinca"])
        assert tench.status == "done" and tench.url == "https://en.wikipedia.org/wiki/Tench"
        gone = fetch_summary(http, api, "n3", ["no such thing", "crane"])
        assert gone.status == "gone" and "no page" in gone.error and "disambiguation" in gone.error
        bad = fetch_summary(http, api, "n4", ["bad json", "tench"])
        assert bad.status == "failed" and "malformed JSON" in bad.error
        assert fetch_summary(http, api, "n5", ["latin"]).text == "Caf\u00e9 au lait"


def test_wikipedia_timeouts_and_server_errors_fail_after_retries():
    with serve_apis(WIKI, fault_every=0) as apis, client(timeout=(1.0, 0.3), retries=1) as http:
        slow = fetch_summary(http, apis.wikipedia_api, "n1", ["slow"])
        assert slow.status == "failed" and "timed out" in slow.error
        assert http.stats["requests"] == 2
    with serve_apis(WIKI, fault_every=1, retry_after=0) as apis, client(retries=0) as http:
        # every first request fails: 429 or 500 depending on the key, and no retry is allowed
        assert fetch_summary(http, apis.wikipedia_api, "n1", ["tench"]).status == "failed"


# -- Flickr -----------------------------------------------------------------------------------------
PHOTOS = {
    "101": {
        "id": "101",
        "title": {"_content": "My <b>tench</b>"},
        "description": {"_content": "Caught at the lake &amp; released<br/>again"},
        "tags": {
            "tag": [
                {"raw": "Tench", "_content": "tench"},
                {"raw": "lake", "_content": "lake"},
                {"raw": "tench", "_content": "tench"},
            ]
        },
        "urls": {"url": [{"type": "photopage", "_content": "https://www.flickr.com/photos/u/101/"}]},
    },
    "102": {
        "_body": '{"photo": {"id": "102", "title": {"_content": "Caf\xe9 du lac"}}, "stat": "ok"}',
        "_charset": "cp1252",
    },
    "103": {"_body": "<html>oops</html>"},
}


def test_flickr_answers_done_gone_failed_and_cleaning():
    with serve_apis(CannedData(flickr=PHOTOS), api_key=KEY, fault_every=0) as apis, client() as http:
        flickr = FlickrClient(http, apis.flickr_api, KEY)
        ok = flickr.get_info("img1", "101")
        assert ok.status == "done" and ok.url == "https://www.flickr.com/photos/u/101/"
        assert ok.texts == [
            ("title", "My <b>tench</b>"),
            ("description", "Caught at the lake &amp; released<br/>again"),
            ("tags", "Tench, lake"),
        ]
        latin = flickr.get_info("img2", "102")
        assert latin.texts == [("title", "Café du lac")]
        assert flickr.get_info("img3", "103").status == "failed"
        gone = flickr.get_info("img4", "999")
        assert gone.status == "gone" and "code 1" in gone.error
        rows = pl.DataFrame(
            [("img1", "flickr", f, t) for f, t in ok.texts],
            schema=["image_id", "source", "field", "raw_text"],
            orient="row",
        )
        from tasks.harvest.text import prepare_image_texts

        assert prepare_image_texts(rows, "r")["text"].to_list() == [
            "My tench",
            "Caught at the lake & released again",
            "Tench, lake",
        ]


def test_flickr_bad_key_stops_without_showing_the_key():
    with (
        serve_apis(CannedData(flickr=PHOTOS), api_key="the-right-one", fault_every=0) as apis,
        client() as http,
    ):
        flickr = FlickrClient(http, apis.flickr_api, KEY)
        with pytest.raises(FlickrKeyError) as info:
            flickr.get_info("img1", "101")
        assert KEY not in str(info.value)


def test_flickr_connection_error_message_has_no_key():
    with client(retries=1) as http:
        flickr = FlickrClient(http, "http://127.0.0.1:9/services/rest", KEY)
        result = flickr.get_info("img1", "101")
    assert result.status == "failed" and "connection error" in result.error
    assert KEY not in result.error and "api_key" not in result.error


def test_url_list_kinds(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_bytes(
        b"n1_1\thttp://farm4.static.flickr.com/3150/2872383102_2d7ca4a4a5.jpg\n"
        b"n1_2\thttps://s.yimg.com/pw/images/en-us/photo_unavailable.png\n"
        b"n1_3\thttp://www.example.org/a.jpg\n"
        b"no tab here\n"
        b"n1_5\thttps://live.staticflickr.com/65535/51234_abcdef12_b.jpg\r\n"
        b"n1_6\thttp://farm1.static.flickr.com/12/photo_unavailable.gif\n"
        b"\xffbad\tbytes\n"
    )
    frame = parse_url_list(path)
    kinds = dict(zip(frame["image_id"].to_list(), frame["kind"].to_list(), strict=True))
    assert kinds["n1_1"] == "flickr" and kinds["n1_5"] == "flickr"
    assert kinds["n1_2"] == kinds["n1_6"] == "placeholder"
    assert kinds["n1_3"] == "other" and kinds["no tab here"] == "malformed"
    assert frame.filter(pl.col("image_id") == "n1_1")["photo_id"][0] == "2872383102"


# -- files ------------------------------------------------------------------------------------------
def test_captions_file_read_and_flattened(tmp_path):
    path = tmp_path / "caps.json"
    path.write_text(
        json.dumps(
            [
                {
                    "filename": "train/n01440764/n01440764_1.JPEG",
                    "wnid": "n01440764",
                    "title": "T",
                    "description": "",
                    "tags": ["a", "A", "b"],
                },
                {"filename": "n01440764_2.JPEG", "wnid": "n01440764", "title": None, "description": "D"},
            ]
        )
    )
    records = read_captions(path)
    assert records["image_id"].to_list() == ["n01440764_1", "n01440764_2"]
    rows = caption_rows(records)
    assert rows.select("image_id", "field", "raw_text").rows() == [
        ("n01440764_1", "title", "T"),
        ("n01440764_1", "description", ""),
        ("n01440764_1", "tags", "a, b"),
        ("n01440764_2", "description", "D"),
    ]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"filename": "x", ')
    with pytest.raises(InputError, match="not an ImageNet-Captions file"):
        read_captions(broken)


def test_description_files_json_and_jsonl(tmp_path):
    classes = read_classes()
    cupl = tmp_path / "cupl.json"
    cupl.write_text(json.dumps({"tench": ["a fish"], "Great_White_Shark": ["big"], "n01443537": "gold"}))
    frame = read_descriptions(cupl, classes)
    assert frame.select("wnid", "text").rows() == [
        ("n01440764", "a fish"),
        ("n01484850", "big"),
        ("n01443537", "gold"),
    ]
    assert frame["source"].unique().to_list() == ["file:cupl.json"]
    lines = tmp_path / "mine.jsonl"
    lines.write_text('{"wnid": "n01440764", "text": "x"}\n\n{"wnid": "man-eater", "text": ["y", "z"]}\n')
    assert read_descriptions(lines, classes)["wnid"].to_list() == ["n01440764", "n01484850", "n01484850"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"crane": ["?"], "maillot": ["?"], "flux capacitor": ["?"], "tench": ["ok"]}))
    with pytest.raises(InputError) as info:
        read_descriptions(bad, classes)
    message = str(info.value)
    assert "1 name(s) match no ImageNet-1k class: 'flux capacitor'" in message
    assert "'crane' (n02012849, n03126707)" in message and "maillot" in message
    worse = tmp_path / "worse.jsonl"
    worse.write_text('{"wnid": "n01440764", "text": "x"}\nnot json\n')
    with pytest.raises(InputError, match="line 2"):
        read_descriptions(worse, classes)


def test_wordnet_texts_cover_all_classes():
    frame = wordnet_texts(read_classes())
    gloss = frame.filter(pl.col("field") == "gloss")
    assert gloss.height == 1000 and gloss["text"].null_count() == 0
    tench = frame.filter(pl.col("wnid") == "n01440764")
    assert sorted(tench["text"].to_list()) == sorted(["tench", "Tinca tinca", read_classes()["gloss"][0]])
    assert tench["url"][0] == "http://wordnet-rdf.princeton.edu/wn30/01440764-n"
