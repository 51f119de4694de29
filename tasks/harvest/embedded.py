"""Text embedded in the image files: EXIF, IPTC, XMP and the JPEG comment.

Fields (source `embedded`):
- `title`: EXIF XPTitle, IPTC 2:05 object name, XMP dc:title
- `description`: EXIF ImageDescription, IPTC 2:120 caption/abstract, XMP dc:description
- `tags`: EXIF XPKeywords, IPTC 2:25 keywords, XMP dc:subject (each joined, comma-separated)
- `comment`: JPEG COM segment, EXIF XPComment, EXIF UserComment
Only the metadata is read (PIL parses headers, pixels are never decoded). Per-image duplicates
(the same caption in EXIF and XMP, say) are dropped by the cleaning step.
"""

from __future__ import annotations

import io
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import polars as pl
from PIL import Image, IptcImagePlugin

from tasks.harvest.http import bounded_map
from tasks.harvest.text import BatchWriter, decode_bytes, join_tags

log = logging.getLogger(__name__)
SOURCE = "embedded"

_EXIF_IFD = 0x8769
_IMAGE_DESCRIPTION = 0x010E
_USER_COMMENT = 0x9286
_XP = {0x9C9B: "title", 0x9C9C: "comment", 0x9C9E: "tags", 0x9C9F: "description"}  # XPTitle..XPSubject
_IPTC = {(2, 5): "title", (2, 120): "description", (2, 25): "tags"}
_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
}
_XMP = {"title": "title", "description": "description", "subject": "tags"}
_FIELD_ORDER = {"title": 0, "description": 1, "tags": 2, "comment": 3}


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple | list) and all(isinstance(v, int) for v in value):
        value = bytes(value)
    if isinstance(value, bytes):
        value = decode_bytes(value.rstrip(b"\x00"))
    text = str(value).replace("\x00", " ").strip()
    return text or None


def _xp(value) -> str | None:
    """EXIF XP* tags are UTF-16LE byte strings (sometimes handed over as a tuple of ints)."""
    if isinstance(value, tuple | list):
        value = bytes(value)
    if isinstance(value, bytes):
        try:
            return _text(value.decode("utf-16-le").rstrip("\x00"))
        except UnicodeDecodeError:
            return _text(value)
    return _text(value)


def _user_comment(value) -> str | None:
    """EXIF UserComment: 8 bytes naming the character code, then the text."""
    if not isinstance(value, bytes) or len(value) < 8:
        return _text(value)
    code, body = value[:8].rstrip(b"\x00 ").upper(), value[8:]
    if code == b"UNICODE":
        for encoding in ("utf-16-be", "utf-16-le"):
            try:
                return _text(body.decode(encoding).rstrip("\x00"))
            except UnicodeDecodeError:
                continue
    return _text(body)


def _xmp_texts(xmp: bytes | str) -> list[tuple[str, str]]:
    if isinstance(xmp, bytes):
        xmp = decode_bytes(xmp)
    for opening, closing in (("<x:xmpmeta", "</x:xmpmeta>"), ("<rdf:RDF", "</rdf:RDF>")):
        start, end = xmp.find(opening), xmp.rfind(closing)
        if start >= 0 and end > start:
            break
    else:
        return []
    try:
        root = ET.fromstring(xmp[start : end + len(closing)])
    except ET.ParseError:
        return []
    found = []
    for element, field in _XMP.items():
        for node in root.iter(f"{{{_NS['dc']}}}{element}"):
            items = [
                li.text.strip() for li in node.iter(f"{{{_NS['rdf']}}}li") if li.text and li.text.strip()
            ]
            if not items and node.text and node.text.strip():
                items = [node.text.strip()]
            if not items:
                continue
            text = join_tags(items) if field == "tags" else items[0]
            if text:
                found.append((field, text))
    return found


def extract_embedded(data: bytes) -> list[tuple[str, str]]:
    """(field, raw text) pairs found in an image file's metadata, in field order (title first)."""
    found: list[tuple[str, str]] = []
    with Image.open(io.BytesIO(data)) as im:
        exif = im.getexif()
        if (text := _text(exif.get(_IMAGE_DESCRIPTION))) is not None:
            found.append(("description", text))
        for tag, field in _XP.items():
            if (text := _xp(exif.get(tag))) is not None:
                found.append((field, join_tags(text.split(";")) if field == "tags" else text))
        try:
            user_comment = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
        except Exception:
            user_comment = None
        if (text := _user_comment(user_comment)) is not None:
            found.append(("comment", text))
        try:
            iptc = IptcImagePlugin.getiptcinfo(im) or {}
        except Exception:
            iptc = {}
        for key, field in _IPTC.items():
            value = iptc.get(key)
            if value is None:
                continue
            values = value if isinstance(value, list) else [value]
            texts = [t for t in (_text(v) for v in values) if t]
            if texts:
                found.append((field, join_tags(texts) if field == "tags" else texts[0]))
        if im.info.get("xmp"):
            found.extend(_xmp_texts(im.info["xmp"]))
        if (text := _text(im.info.get("comment"))) is not None:
            found.append(("comment", text))
    found = [(f, t) for f, t in found if t]
    return sorted(found, key=lambda pair: _FIELD_ORDER.get(pair[0], 9))


def read_bytes(path: str) -> bytes:
    """Image bytes by `images.path`: the ingestion helper's reader (archives too) when present."""
    try:
        from tasks.ingest.imageio import read_image_bytes
    except ImportError:
        return Path(path).read_bytes()
    return read_image_bytes(path)


def harvest_embedded(
    wh,
    images: pl.DataFrame,
    run_id: str,
    concurrency: int = 4,
    batch_size: int = 1000,
    flush_s: float = 5.0,
    reader: Callable[[str], bytes] = read_bytes,
    on_done: Callable[[int], None] | None = None,
) -> dict:
    """Extract embedded texts of `images` (image_id, path) on a thread pool; texts + state per batch."""
    writer = BatchWriter(wh, SOURCE, run_id, "image", batch_size, flush_s, on_done)
    with_text = 0

    def one(item: tuple[str, str]) -> list[tuple[str, str]]:
        return extract_embedded(reader(item[1]))

    items = list(zip(images["image_id"].to_list(), images["path"].to_list(), strict=True))
    for (image_id, _path), texts, error in bounded_map(one, items, concurrency, name="imtext-embedded"):
        if error is not None:
            writer.add(image_id, "failed", f"{type(error).__name__}: {str(error)[:200]}")
        else:
            with_text += bool(texts)
            writer.add(image_id, "done", None, [(f, t, None) for f, t in texts])
    writer.flush()
    return {**writer.counts, "images_with_text": with_text}
