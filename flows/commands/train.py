"""`imtext train`: fine-tune the cross-fitted text→class classifiers (and the TF-IDF baseline beside them)."""

from __future__ import annotations

import inspect

import typer

from flows.commands.common import prefect_env, run_flow, user_errors
from tasks.model.options import TRAIN_OPTIONS, Option


def train(**options) -> None:
    """Fine-tune the text→class classifier, cross-fitted by image, with a TF-IDF baseline beside it."""
    prefect_env()
    preflight(options["base_model"], options["allow_invalid"], options["transformer"])
    from prefect import tags

    from flows.train import FLOW_TAGS, train_flow

    with tags(*FLOW_TAGS):
        summary = run_flow(train_flow, **options)
    echo_summary(summary)


def _cli_parameter(name: str, option: Option) -> inspect.Parameter:
    """The command's parameter of one training option: its spelling, default, bound and help."""
    minimum = {} if option.minimum is None else {"min": option.minimum}
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=option.type,
        default=typer.Option(
            option.default, option.flag, metavar=option.metavar, help=option.help, **minimum
        ),
    )


# The options are those of the train flow, declared once in tasks.model.options.
train.__signature__ = inspect.Signature([_cli_parameter(n, o) for n, o in TRAIN_OPTIONS.items()])
train = user_errors(train)


def preflight(base_model: str, allow_invalid: bool, transformer: bool = True) -> None:
    """Refuse a run that cannot start (an unknown base model, a closed validation gate) before Prefect starts.

    The flow checks both again; checked here first, they are one line on the terminal instead of a
    failed flow run's traceback.
    """
    import logging

    from tasks.model.classifier import check_base_model

    if not allow_invalid:
        from expectations import TRAINING_SUITES
        from expectations.gate import check_gate
        from flows.settings import load_settings
        from warehouse.db import Warehouse

        con = Warehouse.from_settings(load_settings()).reader()
        try:
            check_gate(con, list(TRAINING_SUITES))
        finally:
            con.close()
    if not transformer:
        return
    # huggingface_hub logs a warning for each retry of an unreachable hub (and the libraries it
    # imports reset logger levels), so warnings are off while it looks: the line that matters is ours.
    logging.disable(logging.WARNING)
    try:
        check_base_model(base_model)
    finally:
        logging.disable(logging.NOTSET)


def echo_summary(summary: dict) -> None:
    """What a person reads after `imtext train` (and the demo)."""
    if summary.get("unchanged"):
        typer.echo(
            f"unchanged: the options and texts of run {summary['run_id']} (snapshot {summary['snapshot']}) "
            f"are the same; its {len(summary['models'])} models are kept (--no-resume trains again)"
        )
    typer.echo(
        f"{'kept' if summary.get('unchanged') else 'trained'} {len(summary['models'])} models on snapshot {summary['snapshot']}: {summary['classes']:,} classes, "
        f"{summary['image_texts']:,} image texts + {summary['class_texts']:,} class texts "
        f"({summary['junk_excluded']:,} junk-marked left out), {summary['folds']} folds, {summary['device']}"
    )
    for kind, m in summary["held_out"].items():
        typer.echo(
            f"  {kind:<11} held-out top-1 {_f(m['top1'])}  top-5 {_f(m['top5'])}  macro-F1 {_f(m['macro_f1'])}  "
            f"train {_f(m['train_time_s'], 1)}s  {_f(m['texts_per_s'], 0)} texts/s"
        )
    if summary.get("report"):
        typer.echo(f"report: {summary['report']}")
    typer.echo(
        "models: imtext sql \"SELECT model_id, fold, metrics FROM models WHERE run_id = '"
        + summary["run_id"]
        + "'\""
    )


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def register(app: typer.Typer) -> None:
    app.command("train")(train)
