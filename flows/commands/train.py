"""`imtext train`: fine-tune the cross-fitted text→class classifiers (and the TF-IDF baseline beside them)."""

from __future__ import annotations

import typer

from flows.commands.common import prefect_env, user_errors


@user_errors
def train(
    base_model: str = typer.Option(
        "roberta-base",
        "--base-model",
        metavar="NAME_OR_PATH",
        help="hub name, local model folder, or offline: minilm-offline (pretrained MiniLM), "
        "tiny-roberta (small RoBERTa from scratch)",
    ),
    folds: int = typer.Option(
        2, "--folds", min=2, metavar="K", help="cross-fitting folds: K models + one on all"
    ),
    epochs: int = typer.Option(3, "--epochs", min=1, metavar="N", help="passes over the training texts"),
    max_steps: int = typer.Option(
        None,
        "--max-steps",
        min=1,
        metavar="N",
        help="stop each model after N optimizer steps (overrides --epochs)",
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="texts per forward pass (per GPU)"),
    learning_rate: float = typer.Option(
        5e-5, "--learning-rate", min=0.0, help="learning rate of the encoder"
    ),
    head_learning_rate: float = typer.Option(
        3e-3,
        "--head-learning-rate",
        min=0.0,
        help="learning rate of the new head (and of a from-scratch model)",
    ),
    seed: int = typer.Option(0, "--seed", help="seed of folds, batch order, dropout and the new head"),
    max_train_samples: int = typer.Option(
        None, "--max-train-samples", min=1, help="cap on training texts per model, for quick runs"
    ),
    allow_invalid: bool = typer.Option(
        False, "--allow-invalid", help="train even when the last validation failed or never ran"
    ),
    baseline: bool = typer.Option(
        True, "--baseline/--no-baseline", help="also fit the TF-IDF + linear baseline on the same folds"
    ),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="continue from checkpoints and reuse finished identical models"
    ),
    frozen_encoder: str = typer.Option(
        "auto",
        "--frozen-encoder",
        metavar="NAME_OR_PATH",
        help="sentence encoder of the frozen-encoder and class-similarity scorers: auto (offline MiniLM when "
        "installed, else the base model if pretrained), a model name or folder, or none",
    ),
) -> None:
    """Fine-tune the text→class classifier, cross-fitted by image, with a TF-IDF baseline beside it."""
    prefect_env()
    preflight(base_model, allow_invalid)
    from prefect import tags

    from flows.train import FLOW_TAGS, train_flow

    with tags(*FLOW_TAGS):
        summary = train_flow(
            base_model=base_model,
            folds=folds,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            head_learning_rate=head_learning_rate,
            seed=seed,
            max_train_samples=max_train_samples,
            allow_invalid=allow_invalid,
            baseline=baseline,
            resume=resume,
            frozen_encoder=frozen_encoder,
        )
    echo_summary(summary)


def preflight(base_model: str, allow_invalid: bool) -> None:
    """Refuse a run that cannot start (an unknown base model, a closed validation gate) before Prefect starts.

    The flow checks both again; checked here first, they are one line on the terminal instead of a
    failed flow run's traceback.
    """
    import logging

    from tasks.classifier import check_base_model

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
    # huggingface_hub logs a warning for each retry of an unreachable hub (and the libraries it
    # imports reset logger levels), so warnings are off while it looks: the line that matters is ours.
    logging.disable(logging.WARNING)
    try:
        check_base_model(base_model)
    finally:
        logging.disable(logging.NOTSET)


def echo_summary(summary: dict) -> None:
    """What a person reads after `imtext train` (and the demo)."""
    typer.echo(
        f"trained {len(summary['models'])} models on snapshot {summary['snapshot']}: {summary['classes']:,} classes, "
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
