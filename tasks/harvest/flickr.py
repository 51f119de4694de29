"""Per-image texts from the Flickr API (`flickr.photos.getInfo`): title, description and tags.

Input is an ImageNet URL list (`fall11_urls.txt`: `<image_id>\\t<url>`). Lines whose URL is a
Flickr static photo URL give the photo id; lines whose URL is Flickr's "photo unavailable"
placeholder (what Flickr serves once a photo is deleted, and what some URL lists recorded) are
`gone` without a request; other URLs are counted and skipped.

Answers: `stat ok` -> texts, `done`; code 1 (photo not found, deleted) -> `gone`, never retried;
code 100 (invalid key) stops the harvest; anything else -> `failed`, retried by `--retry-failed`.
The API key is added to each request here and never leaves: the stored URL is the photo page,
and an answer that echoes the key (in a title, a tag, a URL or an error message) has it replaced by
`***` before anything is stored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from tasks.common.errors import InputError
from tasks.common.retrying import RETRY
from tasks.harvest.http import HttpClient, HttpError
from tasks.harvest.text import (
    RAW_TEXT_MAX_BYTES,
    BatchWriter,
    clean_text,
    decode_bytes,
    join_tags,
    keys_to_fetch,
    record_outcomes,
    register_pending,
    state_frame,
)
from warehouse.db import load_query

log = logging.getLogger(__name__)
SOURCE = "flickr"
DEFAULT_RATE = 3600 / 3600.0  # Flickr's default allowance: 3,600 requests an hour, i.e. 1 per second
BATCH_SIZE = 200  # photos per warehouse transaction ...
FLUSH_S = 10.0  # ... or fewer, once the batch is this old: a kill loses at most this much work

# http://farm4.static.flickr.com/3150/2872383102_2d7ca4a4a5.jpg, https://live.staticflickr.com/65535/5_ab_b.jpg
FLICKR_PHOTO_URL = r"(?i)^https?://(?:[\w-]+\.)*(?:static\.?flickr\.com|staticflickr\.com)/(?:\d+/)*(\d+)_[0-9a-f]+(?:_[a-z0-9]+)?\.(?:jpe?g|png|gif)(?:\?.*)?$"
# Flickr's placeholder: .../photo_unavailable.gif, photo_unavailable_m.png, on flickr.com or yimg.com hosts
# The photo page getInfo names: kept only when it is one (short, on flickr.com), else the id redirect.
PHOTO_PAGE_URL = re.compile(r"(?i)^https?://(?:www\.)?flickr\.com/[^\s]{1,500}$")
ERROR_CHARS = 300  # last_error keeps at most this much of a message
PLACEHOLDER_URL = r"(?i)^https?://(?:[\w-]+\.)*(?:flickr\.com|staticflickr\.com|yimg\.com)/(?:[^?#]*/)?photo_unavailable(?:_\w+)?\.(?:gif|png|jpe?g)(?:\?.*)?$"
PLACEHOLDER_ERROR = "flickr 'photo unavailable' placeholder URL"


class FlickrKeyError(InputError):
    """Flickr refused the API key (code 100); the message never contains the key."""


@dataclass
class PhotoInfo:
    """Outcome of one getInfo call for one ImageNet image."""

    image_id: str
    status: str  # done | gone | failed
    texts: list[tuple[str, str]] = field(default_factory=list)  # (field, raw text)
    url: str | None = None
    error: str | None = None


def parse_url_list(path: str | Path) -> pl.DataFrame:
    """An image URL list as (image_id, url, photo_id, kind) with kind flickr|placeholder|other|malformed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such URL list: {path}")
    lines = (
        pl.read_csv(
            path,
            has_header=False,
            separator="\x00",
            quote_char=None,
            new_columns=["line"],
            schema_overrides={"line": pl.String},
            encoding="utf8-lossy",
            truncate_ragged_lines=True,
        )
        if path.stat().st_size
        else pl.DataFrame(schema={"line": pl.String})
    )
    frame = lines.select(
        pl.col("line")
        .str.strip_chars(" \r\n")
        .str.split_exact("\t", 1)
        .struct.rename_fields(["image_id", "url"])
    ).unnest("line")
    frame = frame.with_columns(pl.col("image_id").str.strip_chars(), pl.col("url").str.strip_chars()).filter(
        pl.col("image_id").is_not_null() & (pl.col("image_id") != "")
    )
    # An id written as a path or file name (n01440764/n01440764_10026.JPEG) counts by its stem.
    frame = frame.with_columns(
        pl.col("image_id").str.replace(r"^.*/", "").str.replace(r"\.[A-Za-z]+$", "").alias("image_id"),
        pl.col("url").str.extract(FLICKR_PHOTO_URL, 1).alias("photo_id"),
    )
    frame = frame.with_columns(
        pl.when(pl.col("url").is_null() | (pl.col("url") == ""))
        .then(pl.lit("malformed"))
        .when(pl.col("url").str.contains(PLACEHOLDER_URL))
        .then(pl.lit("placeholder"))
        .when(pl.col("photo_id").is_not_null())
        .then(pl.lit("flickr"))
        .otherwise(pl.lit("other"))
        .alias("kind")
    )
    return frame.unique(subset=["image_id"], keep="first", maintain_order=True)


def photo_page(photo: dict, photo_id: str) -> str:
    """The public page of a photo (never an API URL): from getInfo's urls, else Flickr's id redirect."""
    urls = photo.get("urls")
    for entry in (urls.get("url") if isinstance(urls, dict) else None) or []:
        if isinstance(entry, dict) and entry.get("type") == "photopage":
            page = entry.get("_content")
            if isinstance(page, str) and PHOTO_PAGE_URL.match(page):
                return page
    return f"https://www.flickr.com/photo.gne?id={photo_id}"


def photo_texts(photo: dict) -> list[tuple[str, str]]:
    """(field, raw text) of a getInfo photo: title, description, tags (raw spellings, joined)."""
    texts = []
    for name in ("title", "description"):
        value = photo.get(name)
        value = value.get("_content") if isinstance(value, dict) else value
        if isinstance(value, str) and value.strip():
            texts.append((name, value))
    tags = [
        t.get("raw") or t.get("_content")
        for t in ((photo.get("tags") or {}).get("tag") or [])
        if isinstance(t, dict)
    ]
    joined = join_tags([t for t in tags if t])
    if joined:
        texts.append(("tags", joined))
    return texts


class FlickrClient:
    """`flickr.photos.getInfo` over the shared HTTP client; holds the key and keeps it out of sight."""

    def __init__(self, http: HttpClient, api: str, api_key: SecretStr | str):
        self.http = http
        self.api = api
        self._key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        http.add_secret(self._key.get_secret_value())

    def get_info(self, image_id: str, photo_id: str) -> PhotoInfo:
        params = {
            "method": "flickr.photos.getInfo",
            "api_key": self._key.get_secret_value(),
            "photo_id": photo_id,
            "format": "json",
            "nojsoncallback": "1",
        }
        try:
            response = self.http.get(self.api, params=params)
        except HttpError as exc:
            return self.failure(image_id, str(exc))
        if response.status_code != 200:
            return self.failure(image_id, f"HTTP {response.status_code} from the Flickr API")
        body = decode_bytes(response.content).strip()
        if body.startswith("jsonFlickrApi(") and body.endswith(")"):
            body = body[len("jsonFlickrApi(") : -1]
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            return self.failure(image_id, "malformed JSON answer from the Flickr API")
        if not isinstance(answer, dict):
            return self.failure(image_id, "unexpected answer from the Flickr API")
        if answer.get("stat") != "ok":
            code = answer.get("code")
            message = self.http.redact(str(answer.get("message", "")))[:200]
            if code == 1:
                return self.failure(image_id, f"flickr code 1: {message}", "gone")
            if code == 100:
                raise FlickrKeyError(
                    "Flickr refused the API key (code 100, invalid key): check IMTEXT_FLICKR_API_KEY "
                    "or the Prefect Secret block 'flickr-api-key'"
                )
            return self.failure(image_id, f"flickr code {self.http.redact(str(code))[:40]}: {message}")
        photo = answer.get("photo")
        if not isinstance(photo, dict):
            return self.failure(image_id, "Flickr answer without a photo")
        texts = [(name, self._scrub_text(text)) for name, text in photo_texts(photo)]
        return PhotoInfo(image_id, "done", texts=texts, url=self.http.redact(photo_page(photo, photo_id)))

    def failure(self, image_id: str, error: str, status: str = "failed") -> PhotoInfo:
        """An outcome whose error message holds no key (redacted before it is cut, so no part of one)."""
        return PhotoInfo(image_id, status, error=self.http.redact(error)[:ERROR_CHARS])

    def _scrub_text(self, raw: str) -> str:
        """A text of the answer without the key, in its raw form and in its cleaned one."""
        raw = self.http.scrub(raw)
        head = raw.encode("utf-8")[:RAW_TEXT_MAX_BYTES].decode("utf-8", "ignore")
        cleaned = clean_text(head)
        if cleaned is not None and self.http.scrub(cleaned) != cleaned:
            # Markup or entities hid the key ('ab<i></i>cd', '&#97;bcd'): keep only the cleaned form.
            return self.http.scrub(cleaned)
        return raw


def harvest_flickr(
    wh,
    flickr: FlickrClient,
    todo: pl.DataFrame,
    run_id: str,
    concurrency: int = 16,
    batch_size: int | None = None,
    flush_s: float | None = None,
    on_done: Callable[[int], None] | None = None,
) -> dict:
    """getInfo for each (image_id, photo_id) of `todo`; texts + state written per batch."""
    writer = BatchWriter(wh, SOURCE, run_id, "image", batch_size or BATCH_SIZE, flush_s or FLUSH_S, on_done)
    items = list(zip(todo["image_id"].to_list(), todo["photo_id"].to_list(), strict=True))
    results = flickr.http.map(lambda item: flickr.get_info(*item), items, concurrency)
    try:
        for (image_id, _photo_id), info, error in results:
            if isinstance(error, FlickrKeyError):
                writer.flush()  # what finished before the refusal is kept
                raise error
            if error is not None:
                info = flickr.failure(image_id, f"{type(error).__name__}: {error}")
            writer.add(image_id, info.status, info.error, [(f, t, info.url) for f, t in info.texts])
    finally:
        results.close()
    writer.flush()
    return writer.counts


# -- what a run fetches ------------------------------------------------------------------------------


def queue_photos(wh, path: str | Path, run_id: str, retry_failed: bool = False) -> tuple[pl.DataFrame, dict]:
    """The (image_id, photo_id) to fetch now from the URL list at `path`, registered `pending`
    first, and the counts of the list's lines. Placeholder URLs of ingested images are settled
    `gone` here without a request (and --retry-failed adds nothing new)."""
    urls = parse_url_list(path)
    ingested = wh.con.execute(load_query("harvest_image_ids")).pl()
    listed = urls.join(ingested, on="image_id", how="semi")
    counts: dict = {
        "lines": urls.height,
        "not_ingested": urls.height - listed.height,
        "not_flickr": listed.filter(pl.col("kind") == "other").height,
        "malformed": listed.filter(pl.col("kind") == "malformed").height,
    }
    placeholders = keys_to_fetch(
        wh.con, listed.filter(pl.col("kind") == "placeholder").select("image_id"), SOURCE, False
    ).filter(pl.lit(not retry_failed))
    if placeholders.height:
        gone = state_frame(
            placeholders["image_id"], SOURCE, "gone", run_id, [PLACEHOLDER_ERROR] * placeholders.height
        )
        wh.write(lambda con: record_outcomes(con, gone))
    counts["placeholder"] = placeholders.height
    photos = listed.filter(pl.col("kind") == "flickr").select("image_id", "photo_id")
    todo = keys_to_fetch(wh.con, photos, SOURCE, retry_failed)
    pending = state_frame(todo["image_id"], SOURCE, "pending", run_id).drop("status")
    wh.write(lambda con: register_pending(con, pending))
    counts["skipped"] = photos.height - todo.height
    return todo, counts


@contextlib.contextmanager
def open_client(
    api: str, api_key: SecretStr, rate_limit: float | None, concurrency: int
) -> Iterator[FlickrClient]:
    """A getInfo client of the API at `api`: `rate_limit` requests a second (default DEFAULT_RATE)."""
    with HttpClient(
        rate_limits={urlsplit(api).netloc: rate_limit or DEFAULT_RATE},
        pool_size=concurrency,
        secrets=[api_key.get_secret_value()],
    ) as http:
        yield FlickrClient(http, api, api_key)


# -- Prefect tasks (thin wrappers the harvest flows call) -----------------------------------------


@task(name="harvest-flickr", cache_policy=NO_CACHE, **RETRY)
def harvest_flickr_task(
    wh, client: FlickrClient, todo: pl.DataFrame, run_id: str, concurrency: int, progress
):
    """Fetch Flickr titles, descriptions and tags, writing texts and state in batches."""
    return harvest_flickr(wh, client, todo, run_id, concurrency=concurrency, on_done=progress.advance)
