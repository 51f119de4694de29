"""`imtext demo`: the whole pipeline, offline, on a bundled sample."""

from __future__ import annotations

import typer

from flows.commands.common import prefect_env, run_flow, user_errors


@user_errors
def demo(
    base_model: str = typer.Option(
        "minilm-offline",
        help="classifier to fine-tune: minilm-offline (pretrained, offline), tiny-roberta (from scratch, quick), a path",
    ),
    epochs: int = typer.Option(2, help="training epochs"),
    max_steps: int = typer.Option(None, help="cap on training steps per model (quick runs)"),
    train_per_class: int = typer.Option(24, help="sample train images per class (first run only)"),
    val_per_class: int = typer.Option(4, help="sample val images per class (first run only)"),
    export_format: str = typer.Option("webdataset", help="parquet, webdataset or hf"),
) -> None:
    """Run ingest, harvest, validate, train, curate and export offline on a generated sample."""
    prefect_env()
    from flows.demo.run import print_summary, run_demo

    summary = run_flow(
        run_demo,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        base_model=base_model,
        epochs=epochs,
        max_steps=max_steps,
        export_format=export_format,
        echo=typer.echo,
    )
    print_summary(summary, echo=typer.echo)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
