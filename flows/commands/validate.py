"""`imtext validate`: run the Great Expectations suites; exit code 1 when a blocking one fails."""

from __future__ import annotations

import typer

from flows.commands.common import prefect_env, run_flow, user_errors


@user_errors
def validate(
    suite: str | None = typer.Option(
        None,
        "--suite",
        help="classes, images, class_texts, image_texts, text_scores or models (comma-separated for "
        "several); every suite when left out",
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="evaluate every suite again; by default a suite whose tables and definition are unchanged since "
        "its last validation keeps that outcome (a failure stays a failure)",
    ),
) -> None:
    """Validate the warehouse with Great Expectations; exit code 1 when a blocking expectation fails."""
    prefect_env()
    from expectations.runner import suite_names

    suite_names(suite)  # an unknown suite is reported (exit 2) before Prefect starts
    from flows.validate import validate_flow

    summary = run_flow(validate_flow, suite=suite, force=force)
    for name, info in summary["suites"].items():
        if "skipped" in info:
            line = f"{name:<12} skipped ({info['skipped']})"
        else:
            line = (
                f"{name:<12} {info['rows']:>10,} rows  {info['expectations']:>3} expectations  "
                f"{info['failed']:>3} failed"
            )
        if "reused" in info:
            line += f"  (unchanged since snapshot {info['validated_snapshot']}: outcome reused)"
        typer.echo(line)
    for key in summary["failed_warnings"]:
        typer.echo(f"warning: {key}")
    for key in summary["failed_blocking"]:
        typer.secho(f"FAILED: {key}", fg=typer.colors.RED, err=True)
    typer.echo(f"snapshot {summary['snapshot']}, run {summary['run_id']}; Data Docs: {summary['data_docs']}")
    typer.echo(
        'details: imtext sql "SELECT suite, expectation, unexpected_count, details '
        'FROM validation_latest WHERE NOT success"'
    )
    if not summary["success"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
