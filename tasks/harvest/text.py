"""Text cleaning, junk marking, stable text ids, and the batched warehouse writes of harvested texts.

Cleaning keeps the raw text beside the cleaned one and runs vectorised over polars Series:
1. Unicode normalised to NFKC (fullwidth `＜` becomes `<` here, before markup is looked for);
2. HTML removed: tags (`<a href=...>`, `<br/>`), comments, and `<script>`/`<style>` with their content;
   then, in texts that hold a `&` or what may still be a tag, entities decoded (`&amp;` -> `&`) and
   markup stripped again, over and over until the text no longer changes, so encoded markup
   (`&lt;script&gt;`, double-encoded `&amp;lt;script&amp;gt;`) never becomes live markup;
3. control and zero-width characters removed, whitespace collapsed and trimmed;
4. texts longer than `MAX_TEXT_CHARS` cut at the last word boundary before the limit;
5. texts empty after all this dropped, and duplicates per image (case-insensitive) dropped,
   keeping the first field in the order the caller gives (title, description, tags, ...).

Junk (texts that carry no meaning) is kept but marked in `image_texts.junk` with one reason from
`JUNK_REASONS`; the classifier decides relevance later.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import re
import unicodedata

import polars as pl

from warehouse.db import insert_arrow, load_query

MAX_TEXT_CHARS = 2000
"""Cleaned texts are cut to at most this many characters (at a word boundary where there is one)."""

RAW_TEXT_MAX_BYTES = 16 * 1024
"""`raw_text` is stored in at most this many UTF-8 bytes; a longer one is cut on a character
boundary and ends with `RAW_CUT_NOTE`, which says how long it was (there is no column for it)."""
RAW_CUT_NOTE = " [cut by imtext: {size} bytes in all]"

FIELD_ORDER = ("title", "description", "tags", "comment", "keywords", "caption")

_TAG = r"<!--.*?-->|</?[A-Za-z][^<>]*>"
_BLOCK_TAG = r"(?i)<(?:br|p|/p|div|/div|li|/li|tr|/tr|td|/td|h\d|/h\d)\b[^<>]*>"
_SCRIPT = r"(?is)<(?:script|style)\b[^<>]*>.*?</(?:script|style)\s*>"
# (pattern, replacement) in the order they apply; block tags and scripts leave a space between words.
_MARKUP = ((_SCRIPT, " "), (_BLOCK_TAG, " "), (_TAG, ""))
_MARKUP_RE = tuple((re.compile(pattern), repl) for pattern, repl in _MARKUP)
# What a further decode-and-strip pass may change: an entity, or a '<' that may open a tag.
_UNSETTLED = r"&|<[A-Za-z!/]"
_MAX_PASSES = 32
_CONTROL = r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u2060\ufeff]"

_CAMERA_PREFIX = (
    r"img|dsc|dscn|dscf|dsci|dcp|dcim|p|pic|pict|cimg|sam|sdc|gopr|gp|dji|mvc|hpim|imag|image|"
    r"photo|foto|pano|scan|_mg|mg|mvi|vid|mov|pxl|snc|kif|pa|pb|pc|pd|pe|pf|s|r|100_|101_"
)
_PHOTO_EXT = r"jpe?g|png|gif|tiff?|bmp|raw|cr2|crw|nef|orf|arw|dng|heic|heif|webp"
JUNK_PATTERNS: dict[str, str] = {
    # every text a URL (or several URLs) and nothing else
    "url-only": r"(?i)^(?:(?:https?|ftp)://\S+|www\.\S+)(?:\s+(?:(?:https?|ftp)://\S+|www\.\S+))*$",
    # IMG_1234, DSC00023.JPG, P1010234, 100_1234, 20080612_123456, any bare photo file name
    "camera-filename": (
        rf"(?i)^(?:(?:{_CAMERA_PREFIX})[ _\-]?\d{{3,}}(?:[_\-]\d+)*(?:\.(?:{_PHOTO_EXT}))?"
        rf"|\d{{3,}}[_\-]\d{{3,}}(?:[_\-]\d+)*(?:\.(?:{_PHOTO_EXT}))?"
        rf"|[A-Za-z0-9_\-. ]{{1,60}}\.(?:{_PHOTO_EXT}))$"
    ),
    # default texts cameras and software write into every picture
    "camera-default": (
        r"(?i)^(?:olympus digital camera|sony dsc|digital camera|kodak digital still camera|"
        r"(?:konica )?minolta digital camera|sanyo digital camera|samsung digital camera|"
        r"nikon digital camera|exif_jpeg_picture|exif jpeg picture|default|picasa|"
        r"created with gimp|lead technologies inc\.? v\d[\d.]*|ducky|camera|photo|image)$"
    ),
    "untitled": r"(?i)^(?:untitled|no title|no description|none|null|n/a|-+|\.+|\?+)$",
    # bare numbers, dates and times
    "number": r"^[\d\s.,:;/#+\-()%]+$",
}
JUNK_REASONS = tuple(JUNK_PATTERNS)

IMAGE_TEXT_COLUMNS = (
    "text_id",
    "image_id",
    "source",
    "field",
    "text",
    "raw_text",
    "junk",
    "url",
    "fetched_at",
    "run_id",
)


# -- ids --------------------------------------------------------------------------------------------
def text_id(image_id: str, source: str, field: str, text: str) -> str:
    """Stable id of one text: 128-bit BLAKE2b of image_id, source, field and cleaned text."""
    data = "\x1f".join((image_id, source, field, text)).encode("utf-8")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def text_ids(image_ids, sources, fields, texts) -> pl.Series:
    """`text_id` over four equally long sequences (polars Series or lists), without a Python zip."""
    columns = [pl.Series(c, dtype=pl.String).fill_null("") for c in (image_ids, sources, fields, texts)]
    joined = pl.select(pl.concat_str(columns, separator="\x1f")).to_series().to_list()
    blake2b = hashlib.blake2b
    return pl.Series(
        "text_id", [blake2b(s.encode("utf-8"), digest_size=16).hexdigest() for s in joined], dtype=pl.String
    )


# -- cleaning ---------------------------------------------------------------------------------------
def decode_bytes(data: bytes) -> str:
    """Text from bytes of unknown encoding: UTF-8 (with or without BOM), else Windows-1252, else Latin-1."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _strip_markup(text: str) -> str:
    """Tags, comments and scripts removed, again until none is left (`<<b>i>` hides a tag)."""
    for _ in range(_MAX_PASSES):
        if "<" not in text:
            return text
        stripped = text
        for pattern, repl in _MARKUP_RE:
            stripped = pattern.sub(repl, stripped)
        if stripped == text:
            return text
        text = stripped
    return text.replace("<", " ").replace(">", " ")


def settle_markup(text: str) -> str:
    """Decode entities, normalise (NFKC) and strip markup until the text no longer changes.

    Decoding after stripping is what turned `&lt;script&gt;` into a live `<script>`; here decoding
    is always followed by stripping, and repeated, so no depth of encoding brings markup back. A
    text still changing after `_MAX_PASSES` passes (encoded that many times over) loses every `<`
    and `>`, so even then nothing that a browser would read as a tag remains.
    """
    for _ in range(_MAX_PASSES):
        decoded = unicodedata.normalize("NFKC", html.unescape(text)) if "&" in text else text
        settled = _strip_markup(decoded)
        if settled == text:
            return text
        text = settled
    return text.replace("<", " ").replace(">", " ")


def clean_series(raw: pl.Series) -> pl.Series:
    """Cleaned texts (see the module docstring); null where nothing meaningful is left."""
    s = raw.cast(pl.String).str.normalize("NFKC")
    for pattern, repl in _MARKUP:
        s = s.str.replace_all(pattern, repl)
    # Entities need Python's table of HTML5 names; only the few texts with a '&' (or a '<' that may
    # still open a tag) pay for it.
    unsettled = s.str.contains(_UNSETTLED).fill_null(False)
    if unsettled.any():
        idx = unsettled.arg_true()
        settled = pl.Series([settle_markup(v) for v in s.gather(idx).to_list()], dtype=pl.String)
        s = s.scatter(idx, settled)
    s = s.str.replace_all(_CONTROL, " ").str.replace_all(r"\s+", " ").str.strip_chars()
    too_long = s.str.len_chars() > MAX_TEXT_CHARS
    if too_long.fill_null(False).any():
        cut = s.str.slice(0, MAX_TEXT_CHARS)
        at_word = cut.str.replace(r"\s+\S*$", "")
        at_word = pl.select(
            pl.when(at_word.str.len_chars() > MAX_TEXT_CHARS // 2).then(at_word).otherwise(cut)
        ).to_series()
        s = pl.select(pl.when(too_long).then(at_word).otherwise(s)).to_series()
    s = pl.select(pl.when(s.str.len_chars() > 0).then(s)).to_series()
    return s.alias(raw.name)


def cap_raw(raw: pl.Series) -> tuple[pl.Series, pl.Series]:
    """(head, stored): texts over `RAW_TEXT_MAX_BYTES` cut to a head, which is what gets cleaned,
    and the head with `RAW_CUT_NOTE` appended, which is what `raw_text` keeps; others unchanged.

    A 6 MB title is stored (and cleaned) as its first 16 KiB, never whole.
    """
    raw = raw.cast(pl.String)
    too_long = (raw.str.len_bytes() > RAW_TEXT_MAX_BYTES).fill_null(False)
    if not too_long.any():
        return raw, raw
    idx = too_long.arg_true()
    heads, stored = [], []
    for value in raw.gather(idx).to_list():
        data = value.encode("utf-8")
        note = RAW_CUT_NOTE.format(size=len(data))
        # 'ignore' drops only a character the cut split in two: the head ends on a boundary.
        head = data[: RAW_TEXT_MAX_BYTES - len(note.encode())].decode("utf-8", "ignore")
        heads.append(head)
        stored.append(head + note)
    return (
        raw.clone().scatter(idx, pl.Series(heads, dtype=pl.String)),
        raw.clone().scatter(idx, pl.Series(stored, dtype=pl.String)),
    )


def clean_text(raw: str | bytes | None) -> str | None:
    """One text cleaned exactly as `clean_series` cleans it (bytes are decoded first)."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = decode_bytes(raw)
    return clean_series(pl.Series([raw], dtype=pl.String))[0]


def junk_series(text: pl.Series) -> pl.Series:
    """The junk reason of each cleaned text (`JUNK_REASONS`), or null when it may carry meaning."""
    expr = pl.lit(None, dtype=pl.String)
    for reason, pattern in reversed(JUNK_PATTERNS.items()):
        expr = pl.when(pl.col("t").str.contains(pattern)).then(pl.lit(reason)).otherwise(expr)
    return pl.DataFrame({"t": text}).select(expr.alias("junk")).to_series()


def junk_reason(text: str | None) -> str | None:
    """`junk_series` for one cleaned text."""
    if text is None:
        return None
    return junk_series(pl.Series([text], dtype=pl.String))[0]


# -- frames of image texts --------------------------------------------------------------------------
def prepare_image_texts(
    raw: pl.DataFrame, run_id: str, fetched_at: dt.datetime | None = None
) -> pl.DataFrame:
    """Rows ready for `image_texts` from raw rows (image_id, source, field, raw_text[, url]).

    Cleans, drops empties and per-image duplicates (first field in row order wins), marks junk and
    computes text ids. Row order is kept.
    """
    frame = _raw_strings(raw, "image_id", "raw_text")
    head, stored = cap_raw(frame["raw_text"])
    frame = frame.with_columns(clean_series(head).alias("text"), stored.alias("raw_text"))
    frame = frame.filter(pl.col("text").is_not_null())
    frame = frame.with_columns(pl.col("text").str.to_lowercase().alias("_dedup")).unique(
        subset=["image_id", "_dedup"], keep="first", maintain_order=True
    )
    frame = frame.with_columns(junk_series(frame["text"]))
    return _with_provenance(frame, "image_id", run_id, fetched_at).select(IMAGE_TEXT_COLUMNS)


def _raw_strings(raw: pl.DataFrame, owner: str, text: str) -> pl.DataFrame:
    """The raw rows' owner, source, field, text and url (null when the rows have none), as strings."""
    if "url" not in raw.columns:
        raw = raw.with_columns(pl.lit(None, dtype=pl.String).alias("url"))
    return raw.select([pl.col(c).cast(pl.String) for c in (owner, "source", "field", text, "url")])


def _with_provenance(
    frame: pl.DataFrame, owner: str, run_id: str, fetched_at: dt.datetime | None
) -> pl.DataFrame:
    """Cleaned texts with their ids (from owner, source, field and text), fetch time (default now) and run."""
    fetched_at = fetched_at or dt.datetime.now(dt.UTC)
    return frame.with_columns(
        text_ids(frame[owner], frame["source"], frame["field"], frame["text"]),
        pl.lit(fetched_at, dtype=pl.Datetime("us", "UTC")).alias("fetched_at"),
        pl.lit(run_id, dtype=pl.String).alias("run_id"),
    )


def join_tags(tags: list[str] | None) -> str | None:
    """Tags as one text: distinct (case-insensitive, first spelling kept), comma-separated."""
    if not tags:
        return None
    seen: set[str] = set()
    kept = []
    for tag in tags:
        if tag is None:
            continue
        tag = str(tag).strip()
        key = tag.lower()
        if tag and key not in seen:
            seen.add(key)
            kept.append(tag)
    return ", ".join(kept) or None


def tags_expr(column: str = "tags") -> pl.Expr:
    """`join_tags` as a vectorised expression over a list column."""
    lowered = pl.col(column).list.eval(pl.element().str.strip_chars())
    return (
        lowered.list.eval(pl.element().filter(pl.element().str.len_chars() > 0))
        .list.eval(pl.element().filter(pl.element().str.to_lowercase().is_first_distinct()))
        .list.join(", ")
        .replace("", None)
    )


# -- warehouse writes -------------------------------------------------------------------------------
def store_image_texts(con, texts: pl.DataFrame) -> int:
    """Insert image texts not stored yet (by text_id, and by image + case-folded text); rows added."""
    if texts.height == 0:
        return 0
    return insert_arrow(
        con, load_query("harvest_insert_image_texts"), harvest_texts_batch=texts.select(IMAGE_TEXT_COLUMNS)
    )


CLASS_TEXT_COLUMNS = ("text_id", "wnid", "source", "field", "text", "url", "fetched_at", "run_id")


def prepare_class_texts(
    raw: pl.DataFrame, run_id: str, fetched_at: dt.datetime | None = None
) -> pl.DataFrame:
    """Rows ready for `class_texts` from raw rows (wnid, source, field, text[, url]), cleaned and deduplicated."""
    frame = _raw_strings(raw, "wnid", "text")
    frame = frame.with_columns(clean_series(cap_raw(frame["text"])[0]).alias("text"))
    frame = frame.filter(pl.col("text").is_not_null())
    frame = frame.unique(subset=["wnid", "source", "text"], keep="first", maintain_order=True)
    return _with_provenance(frame, "wnid", run_id, fetched_at).select(CLASS_TEXT_COLUMNS)


def store_class_texts(con, texts: pl.DataFrame) -> int:
    """Insert class texts not stored yet (natural key wnid, source, text); rows added."""
    if texts.height == 0:
        return 0
    return insert_arrow(
        con, load_query("harvest_insert_class_texts"), harvest_class_batch=texts.select(CLASS_TEXT_COLUMNS)
    )


STATE_COLUMNS = ("key", "source", "status", "last_error", "run_id")


def state_frame(keys, source: str, status, run_id: str, errors=None) -> pl.DataFrame:
    """Outcome rows for harvest_state: `status` is one status for all keys or one per key."""
    keys = list(keys)
    statuses = [status] * len(keys) if isinstance(status, str) else list(status)
    return pl.DataFrame(
        {
            "key": pl.Series(keys, dtype=pl.String),
            "source": pl.Series([source] * len(keys), dtype=pl.String),
            "status": pl.Series(statuses, dtype=pl.String),
            "last_error": pl.Series(
                list(errors) if errors is not None else [None] * len(keys), dtype=pl.String
            ),
            "run_id": pl.Series([run_id] * len(keys), dtype=pl.String),
        }
    )


def register_pending(con, keys: pl.DataFrame) -> int:
    """Add `pending` rows for (key, source, last_error, run_id) pairs that have no state yet."""
    if keys.height == 0:
        return 0
    frame = keys.with_columns(pl.lit("pending").alias("status"))
    if "last_error" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("last_error"))
    frame = frame.select(STATE_COLUMNS).unique(subset=["key", "source"], keep="first")
    return insert_arrow(con, load_query("harvest_register_pending"), harvest_state_batch=frame)


def record_outcomes(con, outcomes: pl.DataFrame) -> int:
    """MERGE fetch outcomes (key, source, status, last_error, run_id) into harvest_state; attempts += 1."""
    if outcomes.height == 0:
        return 0
    frame = outcomes.select(STATE_COLUMNS).unique(subset=["key", "source"], keep="last")
    return insert_arrow(con, load_query("harvest_merge_state"), harvest_state_batch=frame)


def state_keys(con, source: str, statuses: tuple[str, ...]) -> pl.DataFrame:
    """Keys of `source` whose harvest_state status is one of `statuses`."""
    return con.execute(load_query("harvest_state_keys"), [source, list(statuses)]).pl()


def keys_to_fetch(con, keys: pl.DataFrame, source: str, retry_failed: bool = False) -> pl.DataFrame:
    """Rows of `keys` (first column image_id) to fetch now: without state or `pending`, or, with
    `retry_failed`, only those that failed. `done` and `gone` keys are never fetched again."""
    states = con.execute(load_query("harvest_state_of_source"), [source]).pl()
    joined = keys.join(states, on="image_id", how="left")
    if retry_failed:
        return joined.filter(pl.col("status") == "failed").drop("status")
    return joined.filter(pl.col("status").is_null() | (pl.col("status") == "pending")).drop("status")


def state_counts(con, sources: list[str]) -> dict[str, dict[str, int]]:
    """{source: {status: keys}} from harvest_state."""
    rows = con.execute(load_query("harvest_state_counts"), [sources]).fetchall()
    counts: dict[str, dict[str, int]] = {}
    for source, status, n in rows:
        counts.setdefault(source, {})[status] = n
    return counts


class BatchWriter:
    """Collects fetch outcomes and their texts; writes both in ONE transaction per batch.

    A batch is written when it holds `batch_size` keys or is `flush_s` seconds old, so a killed
    harvest loses at most the batch in flight (its keys stay `pending`) and never half a batch.
    `kind` is "image" (rows: image_id, field, raw_text, url) or "class" (rows: wnid, field, text, url).
    """

    def __init__(
        self,
        wh,
        source: str,
        run_id: str,
        kind: str = "image",
        batch_size: int = 200,
        flush_s: float = 5.0,
        on_done=None,
    ):
        import time

        self._time = time.monotonic
        self.wh, self.source, self.run_id, self.kind = wh, source, run_id, kind
        self.batch_size, self.flush_s, self.on_done = batch_size, flush_s, on_done
        self.counts = {"done": 0, "gone": 0, "failed": 0, "texts_added": 0}
        self._rows: list[tuple] = []
        self._keys: list[str] = []
        self._statuses: list[str] = []
        self._errors: list[str | None] = []
        self._started = self._time()

    def add(self, key: str, status: str, error: str | None = None, rows=()) -> None:
        """One key's outcome and its (field, text, url) rows; writes the batch when it is due."""
        self.counts[status] = self.counts.get(status, 0) + 1
        self._keys.append(key)
        self._statuses.append(status)
        self._errors.append(error)
        self._rows.extend((key, self.source, f, t, u) for f, t, u in rows)
        if len(self._keys) >= self.batch_size or self._time() - self._started >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        if not self._keys:
            return
        text_col = "raw_text" if self.kind == "image" else "text"
        key_col = "image_id" if self.kind == "image" else "wnid"
        raw = pl.DataFrame(
            self._rows,
            schema={
                key_col: pl.String,
                "source": pl.String,
                "field": pl.String,
                text_col: pl.String,
                "url": pl.String,
            },
            orient="row",
        )
        if self.kind == "image":
            texts, store = prepare_image_texts(raw, self.run_id), store_image_texts
        else:
            texts, store = prepare_class_texts(raw, self.run_id), store_class_texts
        outcomes = state_frame(self._keys, self.source, self._statuses, self.run_id, self._errors)

        def write(con) -> int:
            added = store(con, texts)
            record_outcomes(con, outcomes)
            return added

        self.counts["texts_added"] += self.wh.write(write)
        if self.on_done:
            self.on_done(len(self._keys))
        self._rows, self._keys, self._statuses, self._errors = [], [], [], []
        self._started = self._time()
