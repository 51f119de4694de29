"""The harvest flows: class texts (WordNet, Wikipedia, description files) and image texts
(ImageNet-Captions, Flickr API, embedded metadata), resumable through `harvest_state`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field, SecretStr

from flows import runners
from flows.runtime import FLOW_RETRY, Progress, final_on_user_error, open_warehouse, run_id
from flows.settings import load_settings
from tasks import captions as captions_mod
from tasks import descriptions as descriptions_mod
from tasks import embedded as embedded_mod
from tasks import flickr as flickr_mod
from tasks import wikipedia as wikipedia_mod
from tasks.errors import InputError
from tasks.http import HttpClient
from tasks.images import cpu_count
from tasks.retrying import RETRY
from tasks.text import (
    keys_to_fetch,
    prepare_class_texts,
    record_outcomes,
    register_pending,
    state_counts,
    state_frame,
    store_class_texts,
)
from warehouse.catalog import read_classes

WIKIPEDIA_RATE = 20.0  # requests per second; Wikimedia asks clients to stay well below 200/s
FLICKR_SECRET_BLOCK = "flickr-api-key"
PLACEHOLDER_ERROR = "flickr 'photo unavailable' placeholder URL"


# -- tasks (thin wrappers; the work is in tasks/) ------------------------------------------------------
@task(name="store-wordnet-texts", cache_policy=NO_CACHE, **RETRY)
def store_wordnet_texts(wh, classes: pl.DataFrame, run_id: str) -> int:
    """Store the WordNet gloss and lemma names of every class (rows added)."""
    texts = prepare_class_texts(descriptions_mod.wordnet_texts(classes), run_id)
    return wh.write(lambda con: store_class_texts(con, texts))


@task(name="store-description-file", cache_policy=NO_CACHE, **RETRY)
def store_description_texts(wh, raw: pl.DataFrame, run_id: str) -> int:
    """Store the texts of a user description file (rows added)."""
    texts = prepare_class_texts(raw, run_id)
    return wh.write(lambda con: store_class_texts(con, texts))


@task(name="harvest-wikipedia", cache_policy=NO_CACHE, **RETRY)
def harvest_wikipedia_task(
    wh, client: HttpClient, api: str, classes: pl.DataFrame, run_id: str, concurrency: int, progress
):
    """Fetch Wikipedia summaries of classes, writing texts and state in batches."""
    return wikipedia_mod.harvest_wikipedia(
        wh, client, api, classes, run_id, concurrency=concurrency, on_done=progress.advance
    )


@task(name="import-imagenet-captions", cache_policy=NO_CACHE, **RETRY)
def import_captions_task(wh, path: str, records: pl.DataFrame, run_id: str, progress):
    """Import an ImageNet-Captions file into image_texts."""
    return captions_mod.import_captions(wh, path, run_id, on_done=progress.advance, records=records)


@task(name="harvest-flickr", cache_policy=NO_CACHE, **RETRY)
def harvest_flickr_task(
    wh, client: flickr_mod.FlickrClient, todo: pl.DataFrame, run_id: str, concurrency: int, progress
):
    """Fetch Flickr titles, descriptions and tags, writing texts and state in batches."""
    return flickr_mod.harvest_flickr(
        wh, client, todo, run_id, concurrency=concurrency, on_done=progress.advance
    )


@task(name="harvest-embedded", cache_policy=NO_CACHE, **RETRY)
def harvest_embedded_task(wh, images: pl.DataFrame, run_id: str, concurrency: int, progress):
    """Extract EXIF/IPTC/XMP/COM texts from image files, writing texts and state in batches."""
    return embedded_mod.harvest_embedded(
        wh, images, run_id, concurrency=concurrency, on_done=progress.advance
    )


# -- helpers ---------------------------------------------------------------------------------------
def _select_classes(wh, classes: str) -> pl.DataFrame:
    catalog = read_classes()
    choice = classes.strip()
    if choice == "all":
        return catalog
    if choice == "ingested":
        wnids = [r[0] for r in wh.con.execute("SELECT DISTINCT wnid FROM images").fetchall()]
        return catalog.filter(pl.col("wnid").is_in(wnids))
    wanted = [w.strip() for w in choice.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(catalog["wnid"].to_list()))
    if not wanted or unknown:
        shown = ", ".join(unknown) if unknown else repr(classes)
        raise InputError(
            f"--classes takes 'ingested', 'all' or comma-separated ImageNet-1k wnids; unknown: {shown}"
        )
    return catalog.filter(pl.col("wnid").is_in(wanted))


def flickr_api_key(settings) -> SecretStr:
    """The Flickr key: IMTEXT_FLICKR_API_KEY, else the Prefect Secret block `flickr-api-key`."""
    if settings.flickr_api_key is not None and settings.flickr_api_key.get_secret_value():
        return settings.flickr_api_key
    try:
        from prefect.blocks.system import Secret

        value = Secret.load(FLICKR_SECRET_BLOCK).get()
    except Exception:
        value = None
    if not value:
        raise InputError(
            "the Flickr API needs a key: set IMTEXT_FLICKR_API_KEY or create the Prefect Secret block "
            f"'{FLICKR_SECRET_BLOCK}'"
        )
    return SecretStr(str(value))


def _artifact(key: str, title: str, summary: dict) -> None:
    from prefect.artifacts import create_markdown_artifact

    lines = [f"# {title}", "", f"run `{summary['run_id']}`", "", "| source | counts |", "|---|---|"]
    for source, counts in summary["sources"].items():
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        lines.append(f"| {source} | {shown} |")
    lines += ["", "| source | state |", "|---|---|"]
    for source, counts in summary["state"].items():
        lines.append(f"| {source} | {', '.join(f'{k} {v}' for k, v in counts.items())} |")
    try:
        create_markdown_artifact(markdown="\n".join(lines), key=key, description=title)
    except Exception:  # an artifact is a convenience; the summary is returned either way
        pass


# -- flows -----------------------------------------------------------------------------------------
@flow(name="harvest-classes", **FLOW_RETRY)
@final_on_user_error()
def harvest_classes_flow(
    classes: Annotated[
        str,
        Field(description="which classes get Wikipedia summaries: ingested, all, or comma-separated wnids"),
    ] = "ingested",
    wikipedia: Annotated[
        bool, Field(description="fetch Wikipedia summaries (WordNet texts are always stored)")
    ] = True,
    descriptions: Annotated[
        str | None,
        Field(description="class description file: JSON {class name or wnid: [texts]} or JSONL {wnid, text}"),
    ] = None,
    concurrency: Annotated[int, Field(ge=1, le=64, description="parallel requests to Wikipedia")] = 8,
) -> dict:
    """Store class texts: WordNet glosses and lemmas of all 1000 classes, Wikipedia summaries, description files."""
    logger = get_run_logger()
    settings = load_settings()
    rid = run_id()
    catalog = read_classes()
    # Inputs are checked before anything is written.
    described = descriptions_mod.read_descriptions(descriptions, catalog) if descriptions else None
    wh = open_warehouse(settings)
    try:
        selected = _select_classes(wh, classes)
        summary: dict = {"run_id": rid, "sources": {}}
        summary["sources"]["wordnet"] = {
            "classes": catalog.height,
            "texts_added": store_wordnet_texts(wh, catalog, rid),
        }
        if described is not None:
            source = described["source"][0] if described.height else f"file:{descriptions}"
            summary["sources"][source] = {
                "texts": described.height,
                "classes": described["wnid"].n_unique(),
                "texts_added": store_description_texts(wh, described, rid),
            }
        if wikipedia:
            if classes == "ingested" and selected.height == 0:
                logger.warning("no ingested images yet: no Wikipedia summaries fetched (use --classes all)")
            settled = wh.con.execute(
                "SELECT key FROM harvest_state WHERE source = 'wikipedia' AND status IN ('done', 'gone')"
            ).pl()["key"]
            todo = selected.filter(~pl.col("wnid").is_in(settled.implode()))
            pending = state_frame(todo["wnid"], wikipedia_mod.SOURCE, "pending", rid).drop("status")
            wh.write(lambda con: register_pending(con, pending))
            progress = Progress(todo.height, "wikipedia summaries")
            with HttpClient(
                rate_limits={urlsplit(settings.wikipedia_api).netloc: WIKIPEDIA_RATE}, pool_size=concurrency
            ) as client:
                counts = harvest_wikipedia_task(
                    wh, client, settings.wikipedia_api, todo, rid, concurrency, progress
                )
            progress.close()
            counts["skipped"] = selected.height - todo.height
            summary["sources"]["wikipedia"] = counts
        summary["state"] = state_counts(wh.con, ["wikipedia"])
        for source, counts in summary["sources"].items():
            logger.info("harvest-classes %s: %s", source, counts)
        _artifact("harvest-classes-summary", "Class texts harvested", summary)
        return summary
    finally:
        wh.close()


@flow(name="harvest-images", **FLOW_RETRY)
@final_on_user_error()
def harvest_images_flow(
    captions: Annotated[
        str | None,
        Field(description="ImageNet-Captions JSON: a list of {filename, wnid, title, description, tags}"),
    ] = None,
    flickr_urls: Annotated[
        str | None, Field(description="image URL list (fall11_urls.txt: image_id TAB url) for the Flickr API")
    ] = None,
    embedded: Annotated[
        bool, Field(description="extract EXIF/IPTC/XMP/JPEG-comment text of ingested images")
    ] = False,
    concurrency: Annotated[
        int, Field(ge=1, le=256, description="parallel requests (or file reads for --embedded)")
    ] = 16,
    rate_limit: Annotated[
        float | None,
        Field(gt=0, description="Flickr requests per second (default 1, Flickr's 3,600 an hour)"),
    ] = None,
    retry_failed: Annotated[bool, Field(description="retry only what failed before, nothing new")] = False,
    task_runner: Annotated[
        str | None,
        Field(description="for --embedded: " + runners.TASK_RUNNER_HELP),
    ] = None,
) -> dict:
    """Store per-image texts from ImageNet-Captions, the Flickr API or the image files' own metadata."""
    logger = get_run_logger()
    if not (captions or flickr_urls or embedded):
        raise InputError("harvest images needs --captions FILE, --flickr-urls FILE or --embedded")
    for path in (captions, flickr_urls):
        if path and not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")
    settings = load_settings()
    key = flickr_api_key(settings) if flickr_urls else None
    rid = run_id()
    wh = open_warehouse(settings)
    summary: dict = {"run_id": rid, "sources": {}}
    try:
        if captions:
            records = captions_mod.read_captions(captions)
            if retry_failed:
                summary["sources"]["imagenet-captions"] = {
                    "skipped": records.height,
                    "note": "a file has nothing to retry",
                }
            else:
                progress = Progress(records["image_id"].n_unique(), "imagenet-captions")
                summary["sources"]["imagenet-captions"] = import_captions_task(
                    wh, captions, records, rid, progress
                )
                progress.close()
            if summary["sources"]["imagenet-captions"].get("not_ingested"):
                logger.warning(
                    "imagenet-captions: %d images are not ingested; their records stay pending and are imported "
                    "by a later run",
                    summary["sources"]["imagenet-captions"]["not_ingested"],
                )
        if flickr_urls:
            summary["sources"]["flickr"] = _harvest_flickr(
                wh, settings, key, flickr_urls, rid, concurrency, rate_limit, retry_failed
            )
        if embedded:
            images = wh.con.execute("SELECT image_id, path FROM images ORDER BY image_id").pl()
            todo = keys_to_fetch(wh.con, images, embedded_mod.SOURCE, retry_failed)
            pending = state_frame(todo["image_id"], embedded_mod.SOURCE, "pending", rid).drop("status")
            wh.write(lambda con: register_pending(con, pending))
            progress = Progress(todo.height, "embedded metadata")
            # Only the file reads fan out to Dask: Wikipedia and Flickr are bound by the services'
            # rate limits, which more machines would not raise.
            with runners.fan_out(task_runner, settings.workers or cpu_count()) as runner:
                if runner is None:
                    counts = harvest_embedded_task(wh, todo, rid, concurrency, progress)
                else:
                    counts = runners.embedded_on(runner, wh, todo, rid, concurrency, progress)
            progress.close()
            counts["skipped"] = images.height - todo.height
            summary["sources"]["embedded"] = counts
        summary["state"] = state_counts(wh.con, list(summary["sources"]))
        for source, counts in summary["sources"].items():
            logger.info("harvest-images %s: %s", source, counts)
        _artifact("harvest-images-summary", "Image texts harvested", summary)
        return summary
    finally:
        wh.close()


def _harvest_flickr(
    wh, settings, key: SecretStr, path: str, rid: str, concurrency: int, rate_limit, retry_failed
):
    urls = flickr_mod.parse_url_list(path)
    ingested = wh.con.execute("SELECT image_id FROM images").pl()
    listed = urls.join(ingested, on="image_id", how="semi")
    counts: dict = {
        "lines": urls.height,
        "not_ingested": urls.height - listed.height,
        "not_flickr": listed.filter(pl.col("kind") == "other").height,
        "malformed": listed.filter(pl.col("kind") == "malformed").height,
    }
    # Placeholder URLs are settled without a request (and --retry-failed adds nothing new).
    placeholders = keys_to_fetch(
        wh.con, listed.filter(pl.col("kind") == "placeholder").select("image_id"), flickr_mod.SOURCE, False
    ).filter(pl.lit(not retry_failed))
    if placeholders.height:
        gone = state_frame(
            placeholders["image_id"],
            flickr_mod.SOURCE,
            "gone",
            rid,
            [PLACEHOLDER_ERROR] * placeholders.height,
        )
        wh.write(lambda con: record_outcomes(con, gone))
    counts["placeholder"] = placeholders.height
    photos = listed.filter(pl.col("kind") == "flickr").select("image_id", "photo_id")
    todo = keys_to_fetch(wh.con, photos, flickr_mod.SOURCE, retry_failed)
    pending = state_frame(todo["image_id"], flickr_mod.SOURCE, "pending", rid).drop("status")
    wh.write(lambda con: register_pending(con, pending))
    counts["skipped"] = photos.height - todo.height
    host = urlsplit(settings.flickr_api).netloc
    with HttpClient(
        rate_limits={host: rate_limit or flickr_mod.DEFAULT_RATE},
        pool_size=concurrency,
        secrets=[key.get_secret_value()],
    ) as http:
        client = flickr_mod.FlickrClient(http, settings.flickr_api, key)
        progress = Progress(todo.height, "flickr getInfo")
        counts.update(harvest_flickr_task(wh, client, todo, rid, concurrency, progress))
        progress.close()
    return counts
