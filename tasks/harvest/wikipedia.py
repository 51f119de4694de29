"""Wikipedia summaries of classes through the REST API (`/page/summary/{title}`).

Each class's lemma names are tried in order; a disambiguation page or a missing page (404) moves
on to the next name; the first standard page with an extract wins and its desktop URL is kept.
A class with no page under any name is `gone` (recorded, never retried); a server or network
failure is `failed` (retried by the next run).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.errors import InputError
from tasks.common.retrying import RETRY
from tasks.harvest.http import HttpClient, HttpError
from tasks.harvest.text import BatchWriter, register_pending, state_frame, state_keys
from warehouse.catalog import read_classes
from warehouse.db import load_query

log = logging.getLogger(__name__)
SOURCE = "wikipedia"
RATE = 20.0  # requests per second; Wikimedia asks clients to stay well below 200/s


@dataclass
class Summary:
    """Outcome of one class: status done|gone|failed, and the summary when done."""

    wnid: str
    status: str
    text: str | None = None
    url: str | None = None
    title: str | None = None
    error: str | None = None


def summary_url(api: str, title: str) -> str:
    return f"{api.rstrip('/')}/page/summary/{quote(title.strip().replace(' ', '_'), safe='')}"


def lemma_list(lemmas: str | None, name: str | None = None) -> list[str]:
    """Names to try, in order, without repeats: the lemmas (comma-separated), else the name."""
    names = [n.strip() for n in (lemmas or "").split(",") if n.strip()] or ([name] if name else [])
    seen: set[str] = set()
    return [n for n in names if not (n.lower() in seen or seen.add(n.lower()))]


def fetch_summary(client: HttpClient, api: str, wnid: str, names: list[str]) -> Summary:
    """The first standard Wikipedia page among `names`, or why there is none."""
    skipped = []
    for title in names:
        try:
            response = client.get(summary_url(api, title))
        except HttpError as exc:
            return Summary(wnid, "failed", error=str(exc))
        if response.status_code == 404:
            skipped.append(f"{title}: no page")
            continue
        if response.status_code != 200:
            return Summary(wnid, "failed", error=f"{title}: HTTP {response.status_code}")
        try:
            page = json.loads(response.content.decode("utf-8", errors="replace"))
        except ValueError:
            return Summary(wnid, "failed", error=f"{title}: malformed JSON answer")
        if not isinstance(page, dict):
            return Summary(wnid, "failed", error=f"{title}: unexpected answer")
        kind = page.get("type")
        extract = (page.get("extract") or "").strip()
        if kind == "disambiguation":
            skipped.append(f"{title}: disambiguation page")
            continue
        if kind != "standard" or not extract:
            skipped.append(f"{title}: {kind or 'untyped'} page without extract")
            continue
        url = ((page.get("content_urls") or {}).get("desktop") or {}).get("page")
        return Summary(wnid, "done", text=extract, url=url, title=page.get("title") or title)
    return Summary(wnid, "gone", error="; ".join(skipped) or "no name to look up")


def harvest_wikipedia(
    wh,
    client: HttpClient,
    api: str,
    classes: pl.DataFrame,
    run_id: str,
    concurrency: int = 8,
    batch_size: int = 50,
    flush_s: float = 5.0,
    on_done: Callable[[int], None] | None = None,
) -> dict:
    """Fetch summaries for `classes` (wnid, name, lemmas) and write texts + state in batches."""
    items = [(r["wnid"], lemma_list(r["lemmas"], r["name"])) for r in classes.iter_rows(named=True)]
    writer = BatchWriter(wh, SOURCE, run_id, "class", batch_size, flush_s, on_done)
    for (wnid, _names), result, error in client.map(
        lambda item: fetch_summary(client, api, *item), items, concurrency
    ):
        if error is not None:
            result = Summary(wnid, "failed", error=client.redact(f"{type(error).__name__}: {error}"))
        if result.status == "failed":
            log.warning("wikipedia %s: %s", wnid, result.error)
        rows = [("summary", result.text, result.url)] if result.status == "done" else []
        writer.add(wnid, result.status, result.error, rows)
    writer.flush()
    return writer.counts


# -- what a run fetches ------------------------------------------------------------------------------


def select_classes(wh, classes: str) -> pl.DataFrame:
    """The catalog rows `--classes` names: `ingested` (classes with images; needs `wh`), `all`, or
    comma-separated wnids (an InputError names the unknown ones)."""
    catalog = read_classes()
    choice = classes.strip()
    if choice == "all":
        return catalog
    if choice == "ingested":
        wnids = [r[0] for r in wh.con.execute(load_query("harvest_ingested_wnids")).fetchall()]
        return catalog.filter(pl.col("wnid").is_in(wnids))
    wanted = [w.strip() for w in choice.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(catalog["wnid"].to_list()))
    if not wanted or unknown:
        shown = ", ".join(unknown) if unknown else repr(classes)
        raise InputError(
            f"--classes takes 'ingested', 'all' or comma-separated ImageNet-1k wnids; unknown: {shown}"
        )
    return catalog.filter(pl.col("wnid").is_in(wanted))


def queue_classes(wh, selected: pl.DataFrame, run_id: str) -> pl.DataFrame:
    """The selected classes to fetch now (those not `done` or `gone`), registered `pending` first."""
    settled = state_keys(wh.con, SOURCE, ("done", "gone"))["key"]
    todo = selected.filter(~pl.col("wnid").is_in(settled.implode()))
    pending = state_frame(todo["wnid"], SOURCE, "pending", run_id).drop("status")
    wh.write(lambda con: register_pending(con, pending))
    return todo


def open_client(api: str, concurrency: int) -> HttpClient:
    """The HTTP client for the Wikipedia REST API at `api`, at the rate Wikimedia asks for."""
    return HttpClient(rate_limits={urlsplit(api).netloc: RATE}, pool_size=concurrency)


# -- Prefect tasks (thin wrappers the harvest flows call) -----------------------------------------


@task(name="harvest-wikipedia", cache_policy=NO_CACHE, **RETRY)
def harvest_wikipedia_task(
    wh, client: HttpClient, api: str, classes: pl.DataFrame, run_id: str, concurrency: int, progress
):
    """Fetch Wikipedia summaries of classes, writing texts and state in batches."""
    return harvest_wikipedia(
        wh, client, api, classes, run_id, concurrency=concurrency, on_done=progress.advance
    )
