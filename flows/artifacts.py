"""Artifacts in the Prefect UI: a flow's summary, tables, reports with their charts, links.

Every helper is a no-op outside a flow run (plain function calls, CLI code paths that skip Prefect)
and never fails the flow: an artifact that cannot be written is logged and dropped. Values under
secret-looking keys are masked. Keys name the artifact across runs (the UI keeps its history), so
use a fixed key per flow and kind, e.g. `ingest-summary`.

Markdown is rendered by the UI, so every value put into markdown goes through `format_value`
(or `escape`), which HTML-escapes it: a text like `<script>` shows as written, never as markup.
Charts go into markdown as images whose source is a `data:` URI (`image_markdown`), so a run page
shows them without any file or server behind it; table artifacts hold raw values (the UI shows
table cells as text).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.report.markdown import escape, format_value, image_markdown, markdown_table  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

_SECRET = re.compile(r"password|secret|token|api_key|apikey|auth", re.I)
MAX_TABLE_ROWS = 500


def in_flow_run() -> bool:
    try:
        from prefect.context import FlowRunContext
    except ImportError:
        return False
    return FlowRunContext.get() is not None


def artifact_key(text: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) made from any text."""
    key = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return key or "artifact"


def summary_markdown(title: str, summary: Mapping[str, Any]) -> str:
    """A heading and a two-column table of `summary`, secrets masked."""
    lines = [f"## {escape(title)}", "", "| | |", "|---|---|"]
    for key, value in summary.items():
        shown = "***" if _SECRET.search(str(key)) and value not in (None, "") else format_value(value)
        lines.append(f"| {format_value(key)} | {shown} |")
    return "\n".join(lines) + "\n"


def publish_summary(
    title: str, summary: Mapping[str, Any], key: str | None = None, description: str | None = None
):
    """The flow's result as a markdown table artifact; returns its id, or None outside a run."""
    return publish_markdown(
        summary_markdown(title, summary), key=key or artifact_key(title), description=description
    )


def publish_markdown(markdown: str, key: str | None = None, description: str | None = None):
    """A markdown artifact; returns its id, or None outside a flow run or when it fails."""
    if not in_flow_run():
        return None
    from prefect.artifacts import create_markdown_artifact

    return _safely(create_markdown_artifact, markdown=markdown, key=_key(key), description=description)


def publish_table(
    rows, key: str | None = None, description: str | None = None, max_rows: int = MAX_TABLE_ROWS
):
    """A table artifact from a list of dicts or a polars/pandas frame (first `max_rows` rows)."""
    if not in_flow_run():
        return None
    from prefect.artifacts import create_table_artifact

    if hasattr(rows, "to_dicts"):  # polars
        rows = rows.head(max_rows).to_dicts()
    elif hasattr(rows, "to_dict"):  # pandas
        rows = rows.head(max_rows).to_dict(orient="records")
    table: Sequence[Mapping[str, Any]] = [
        {
            str(k): v if isinstance(v, int | float | bool | type(None)) else format_value(v, markdown=False)
            for k, v in r.items()
        }
        for r in list(rows)[:max_rows]
    ]
    return _safely(create_table_artifact, table=list(table), key=_key(key), description=description)


def publish_link(
    target: str | Path, text: str | None = None, key: str | None = None, description: str | None = None
):
    """A link artifact to a URL or a local file (a report, an export folder)."""
    if not in_flow_run():
        return None
    from prefect.artifacts import create_link_artifact

    link = (
        Path(target).resolve().as_uri()
        if not re.match(r"^[a-z][a-z0-9+.-]*://", str(target))
        else str(target)
    )
    return _safely(create_link_artifact, link=link, link_text=text, key=_key(key), description=description)


def _key(key: str | None) -> str | None:
    return artifact_key(key) if key else None


def _safely(create, **kwargs):
    try:
        return create(**kwargs)
    except Exception as exc:  # an artifact is never worth failing the run for
        log.warning("artifact not written: %s", exc)
        return None
