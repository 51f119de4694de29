"""The harvest flows: class texts (WordNet, Wikipedia, description files) and image texts
(ImageNet-Captions, Flickr API, embedded metadata), resumable through `harvest_state`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field, SecretStr

from flows import runners
from flows.runtime import FLOW_RETRY, Progress, final_on_user_error, open_warehouse, run_id
from flows.settings import load_settings
from tasks.common.errors import InputError
from tasks.fanout.shards import cpu_count
from tasks.harvest import captions as captions_mod
from tasks.harvest import descriptions as descriptions_mod
from tasks.harvest import flickr as flickr_mod
from tasks.harvest import metadata as metadata_mod
from tasks.harvest import wikipedia as wikipedia_mod
from tasks.harvest.text import state_counts
from warehouse.catalog import read_classes

FLICKR_SECRET_BLOCK = "flickr-api-key"


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
        selected = wikipedia_mod.select_classes(wh, classes)
        summary: dict = {"run_id": rid, "sources": {}}
        summary["sources"]["wordnet"] = {
            "classes": catalog.height,
            "texts_added": descriptions_mod.store_wordnet_texts(wh, catalog, rid),
        }
        if described is not None:
            source = described["source"][0] if described.height else f"file:{descriptions}"
            summary["sources"][source] = {
                "texts": described.height,
                "classes": described["wnid"].n_unique(),
                "texts_added": descriptions_mod.store_description_texts(wh, described, rid),
            }
        if wikipedia:
            if classes == "ingested" and selected.height == 0:
                logger.warning("no ingested images yet: no Wikipedia summaries fetched (use --classes all)")
            todo = wikipedia_mod.queue_classes(wh, selected, rid)
            progress = Progress(todo.height, "wikipedia summaries")
            with wikipedia_mod.open_client(settings.wikipedia_api, concurrency) as client:
                counts = wikipedia_mod.harvest_wikipedia_task(
                    wh, client, settings.wikipedia_api, todo, rid, concurrency, progress
                )
            progress.close()
            counts["skipped"] = selected.height - todo.height
            summary["sources"]["wikipedia"] = counts
        return _publish(wh, logger, "harvest-classes", "Class texts harvested", summary, ["wikipedia"])
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
                summary["sources"]["imagenet-captions"] = captions_mod.import_captions_task(
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
            todo, skipped = metadata_mod.queue_images(wh, rid, retry_failed)
            progress = Progress(todo.height, "embedded metadata")
            # Only the file reads fan out to Dask: Wikipedia and Flickr are bound by the services'
            # rate limits, which more machines would not raise.
            with runners.fan_out(task_runner, settings.workers or cpu_count()) as runner:
                if runner is None:
                    counts = metadata_mod.harvest_embedded_task(wh, todo, rid, concurrency, progress)
                else:
                    counts = runners.embedded_on(runner, wh, todo, rid, concurrency, progress)
            progress.close()
            counts["skipped"] = skipped
            summary["sources"]["embedded"] = counts
        return _publish(
            wh, logger, "harvest-images", "Image texts harvested", summary, list(summary["sources"])
        )
    finally:
        wh.close()


def _harvest_flickr(
    wh, settings, key: SecretStr, path: str, rid: str, concurrency: int, rate_limit, retry_failed
):
    todo, counts = flickr_mod.queue_photos(wh, path, rid, retry_failed)
    with flickr_mod.open_client(settings.flickr_api, key, rate_limit, concurrency) as client:
        progress = Progress(todo.height, "flickr getInfo")
        counts.update(flickr_mod.harvest_flickr_task(wh, client, todo, rid, concurrency, progress))
        progress.close()
    return counts


# -- helpers ---------------------------------------------------------------------------------------
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


def _publish(wh, logger, name: str, title: str, summary: dict, queues: list[str]) -> dict:
    """The summary with the state of the sources' queues, logged per source and published as an artifact."""
    summary["state"] = state_counts(wh.con, queues)
    for source, counts in summary["sources"].items():
        logger.info("%s %s: %s", name, source, counts)
    _artifact(f"{name}-summary", title, summary)
    return summary


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
