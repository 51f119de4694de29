"""`imtext ingest`: ImageNet images from a folder, ILSVRC tars or parquet shards into the warehouse."""

from __future__ import annotations

from enum import Enum

import typer

from flows.commands.common import prefect_env, run_flow, user_errors
from flows.runners import TASK_RUNNER_HELP, TaskRunnerName


class Split(str, Enum):
    train = "train"
    val = "val"
    auto = "auto"


@user_errors
def ingest(
    source: str = typer.Option(
        ...,
        "--source",
        help="ImageNet folder (train/<wnid>/*.JPEG, val/), the root of the Kaggle layout, "
        "ILSVRC2012_img_train.tar / ILSVRC2012_img_val.tar, or a folder of Hugging Face "
        "imagenet-1k parquet shards",
    ),
    split: Split = typer.Option(
        Split.auto, "--split", help="which split to ingest; auto takes every split found"
    ),
    val_labels: str | None = typer.Option(
        None,
        "--val-labels",
        help="labels of flat val images: LOC_val_solution.csv, or the devkit's "
        "ILSVRC2012_validation_ground_truth.txt (meta.mat beside it) or devkit .tar.gz; "
        "by default LOC_val_solution.csv is looked for at the source root and in val/",
    ),
    workers: int = typer.Option(0, "--workers", min=0, help="worker processes; 0 means one per CPU core"),
    task_runner: TaskRunnerName = typer.Option(None, "--task-runner", help=TASK_RUNNER_HELP),
) -> None:
    """Ingest ImageNet images into `images`; bad files go to `quarantine`. Re-runs add only new or changed files."""
    prefect_env()
    from tasks.ingest.images import locate_source

    # Checked here too (the flow checks again) so that a bad layout is one line on the terminal,
    # not a failed flow run's traceback.
    locate_source(source, split.value, val_labels)
    from flows.ingest import ingest_flow

    summary = run_flow(
        ingest_flow,
        source=source,
        split=split.value,
        val_labels=val_labels,
        workers=workers,
        task_runner=task_runner.value if task_runner else None,
    )
    typer.echo(
        f"ingested {summary['source']}: {summary['added']} added, {summary['updated']} updated, "
        f"{summary['skipped']} unchanged, {summary['quarantined']} quarantined "
        f"in {summary['seconds']:.1f}s (snapshot {summary['snapshot']}, run {summary['run_id']})"
    )
    if summary["quarantined"]:
        typer.echo('see why: imtext sql "SELECT reason, count(*) FROM quarantine GROUP BY 1 ORDER BY 2 DESC"')


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
