"""Markdown that is safe to render: escaped values, tables and inline images (no Prefect here).

The Prefect UI renders markdown artifacts, and reports reach it as markdown, so every value goes
through `format_value` (or `escape`), which HTML-escapes it: a text like `<script>` shows as written,
never as markup. Charts become images whose source is a `data:` URI (`image_markdown`), so a page
shows them without any file or server behind it. `flows.artifacts` publishes what these build;
`tasks.report` and `expectations.runner` build with them without importing the flows.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_MARKDOWN_SPECIAL = re.compile(r"([\\`\[\]|])")


def escape(text: Any) -> str:
    """Text safe inside markdown: HTML escaped, on one line, with no link, image, code span or cell break.

    `<script>` shows as written; `[x](javascript:...)`, backticks and `|` lose their markdown meaning.
    """
    text = html.escape(str(text)).replace("\r", " ").replace("\n", " ")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def format_value(value: Any, limit: int = 200, markdown: bool = True) -> str:
    """A short, readable cell: HTML-escaped for markdown unless `markdown` is False (table artifacts)."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dt.datetime | dt.date):
        text = value.isoformat()
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return escape(text) if markdown else text


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A markdown table of `rows` (dicts), every cell formatted and escaped; `(none)` when empty."""
    if not rows:
        return "_(none)_\n"
    columns = list(columns or rows[0].keys())
    numeric = [
        all(
            isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool)
            for r in rows
            if r.get(c) is not None
        )
        for c in columns
    ]
    lines = [
        "| " + " | ".join(escape(c) for c in columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    for r in rows:
        lines.append(
            "| " + " | ".join("–" if r.get(c) is None else format_value(r.get(c)) for c in columns) + " |"
        )
    return "\n".join(lines) + "\n"


def image_markdown(data: bytes | str, alt: str, mime: str = "image/svg+xml") -> str:
    """A markdown image whose source is a base64 `data:` URI of `data` (an SVG document or PNG bytes)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    alt_text = re.sub(r"[\[\]\\]", "", escape(alt))
    return f"![{alt_text}](data:{mime};base64,{base64.b64encode(raw).decode('ascii')})"
