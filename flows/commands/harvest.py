"""`imtext harvest classes` and `imtext harvest images`: class texts and per-image texts."""

from __future__ import annotations

from pathlib import Path

import typer

from flows.commands.common import prefect_env, run_flow, user_errors
from flows.runners import TASK_RUNNER_HELP, TaskRunnerName


def _print(summary: dict) -> None:
    for source, counts in summary["sources"].items():
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        typer.echo(f"{source}: {shown}")
    for source, counts in summary.get("state", {}).items():
        typer.echo(f"state {source}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    failed = sum(c.get("failed", 0) for c in summary.get("state", {}).values())
    if failed:
        typer.echo(f"{failed} key(s) failed: run the same command with --retry-failed to try them again")
    typer.echo(f"run {summary['run_id']}")


@user_errors
def classes(
    classes: str = typer.Option(
        "ingested",
        "--classes",
        help="classes to fetch Wikipedia summaries for: 'ingested' (classes with images), 'all', or wnids 'n01440764,n01443537'",
    ),
    wikipedia: bool = typer.Option(
        True, "--wikipedia/--no-wikipedia", help="fetch Wikipedia summaries (IMTEXT_WIKIPEDIA_API)"
    ),
    descriptions: Path | None = typer.Option(
        None,
        "--descriptions",
        help="your class descriptions: JSON {class name or wnid: [texts]} (CuPL style) or JSONL {wnid, text}",
    ),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=64, help="parallel Wikipedia requests"),
) -> None:
    """Store class texts: WordNet gloss and lemmas of all 1000 classes, Wikipedia summaries, your files."""
    prefect_env()
    preflight_classes(classes, descriptions)
    from flows.harvest import harvest_classes_flow

    summary = run_flow(
        harvest_classes_flow,
        classes=classes,
        wikipedia=wikipedia,
        descriptions=str(descriptions) if descriptions else None,
        concurrency=concurrency,
    )
    _print(summary)


@user_errors
def images(
    captions: Path | None = typer.Option(
        None,
        "--captions",
        help="ImageNet-Captions JSON: a list of {filename, wnid, title, description, tags}",
    ),
    flickr_urls: Path | None = typer.Option(
        None,
        "--flickr-urls",
        help="image URL list (fall11_urls.txt: image_id TAB url); needs IMTEXT_FLICKR_API_KEY or the "
        "Prefect Secret block 'flickr-api-key'",
    ),
    embedded: bool = typer.Option(
        False, "--embedded", help="text inside the ingested image files: EXIF, IPTC, XMP, JPEG comment"
    ),
    concurrency: int = typer.Option(
        16, "--concurrency", min=1, max=256, help="parallel requests or file reads"
    ),
    rate_limit: float | None = typer.Option(
        None, "--rate-limit", min=0.001, help="Flickr requests per second (default 1, i.e. 3,600 an hour)"
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="retry only what failed before, nothing new"
    ),
    task_runner: TaskRunnerName = typer.Option(
        None, "--task-runner", help="for --embedded: " + TASK_RUNNER_HELP
    ),
) -> None:
    """Store per-image texts: ImageNet-Captions, the Flickr API, or metadata embedded in the files."""
    from tasks.common.errors import InputError

    if not (captions or flickr_urls or embedded):
        raise InputError("give one of --captions FILE, --flickr-urls FILE or --embedded")
    prefect_env()
    preflight_images(captions, flickr_urls)
    from flows.harvest import harvest_images_flow

    summary = run_flow(
        harvest_images_flow,
        captions=str(captions) if captions else None,
        flickr_urls=str(flickr_urls) if flickr_urls else None,
        embedded=embedded,
        concurrency=concurrency,
        rate_limit=rate_limit,
        retry_failed=retry_failed,
        task_runner=task_runner.value if task_runner else None,
    )
    _print(summary)


# The flows check their inputs again (a deployment run has no CLI in front of it); checked here
# first, a bad input is one line on the terminal instead of a failed flow run's traceback.
def preflight_classes(classes: str, descriptions: Path | None) -> None:
    """Refuse unknown wnids in --classes and a missing or malformed description file."""
    from tasks.harvest.descriptions import read_descriptions
    from warehouse.catalog import read_classes

    catalog = read_classes()
    if classes.strip() not in ("ingested", "all"):
        from tasks.harvest.wikipedia import select_classes

        select_classes(None, classes)  # an explicit wnid list needs no warehouse to be checked
    if descriptions is not None:
        read_descriptions(_input_file(descriptions, "--descriptions"), catalog)


def preflight_images(captions: Path | None, flickr_urls: Path | None) -> None:
    """Refuse a missing or malformed captions file and a missing URL list."""
    if captions is not None:
        from tasks.harvest.captions import read_captions

        read_captions(_input_file(captions, "--captions"))
    if flickr_urls is not None:
        _input_file(flickr_urls, "--flickr-urls")


def _input_file(path: Path, option: str) -> Path:
    from tasks.common.errors import InputError

    if not path.exists():
        raise InputError(f"{option}: no such file: {path}")
    if not path.is_file():
        raise InputError(f"{option}: {path} is not a file")
    return path


def register(app: typer.Typer) -> None:
    harvest = typer.Typer(
        help="Harvest texts: class descriptions and per-image descriptions (resumable: re-run to finish).",
        no_args_is_help=True,
    )
    harvest.command("classes")(classes)
    harvest.command("images")(images)
    app.add_typer(harvest, name="harvest")
