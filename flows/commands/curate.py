"""`imtext curate`: score every image text out-of-fold and keep or drop it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from flows.commands.common import prefect_env, user_errors
from flows.runners import TASK_RUNNER_HELP, TaskRunnerName

# Shown in --help without importing the flow; tests check they match tasks.scoring's defaults.
HELP_DEFAULT_MIN_P_TRUE = 0.2
HELP_DEFAULT_TOP_K = 0


class Scorer(str, Enum):
    auto = "auto"
    transformer = "transformer"
    baseline = "baseline"
    ensemble = "ensemble"


@user_errors
def curate(
    min_p_true: float = typer.Option(
        None,
        "--min-p-true",
        min=0.0,
        max=1.0,
        help=f"keep a text when the probability of its image's class is at least P [default: {HELP_DEFAULT_MIN_P_TRUE}]",
    ),
    top_k: int = typer.Option(
        None,
        "--top-k",
        min=0,
        help=f"or when its class ranks within the scorer's top K (0 turns this off) [default: {HELP_DEFAULT_TOP_K}]",
    ),
    scorer: Scorer = typer.Option(
        Scorer.auto, help="which models judge: auto takes the kind with the better held-out macro-F1"
    ),
    labels: Path = typer.Option(
        None, "--labels", help="JSONL of {text_id, relevant}: report precision/recall and the PR curve"
    ),
    target_precision: float = typer.Option(
        None,
        "--target-precision",
        min=0.0,
        max=1.0,
        help="with --labels: choose --min-p-true as the lowest threshold whose kept texts reach this precision",
    ),
    training_run: str = typer.Option(
        None, help="training run id whose models score (default: latest complete)"
    ),
    batch_size: int = typer.Option(None, min=1, help="texts per forward pass [default: 256]"),
    masked_texts: int = typer.Option(
        None, min=0, help="texts for the masked-class-name evaluation, 0 skips [default: 500]"
    ),
    task_runner: TaskRunnerName = typer.Option(
        None, "--task-runner", help="for scoring: " + TASK_RUNNER_HELP
    ),
) -> None:
    """Score every image text with a model that never trained on it, keep or drop it, write a report."""
    preflight(scorer.value, training_run, labels)
    prefect_env()
    from flows.curate import curate_flow

    options = {
        "min_p_true": min_p_true,
        "top_k": top_k,
        "labels": str(labels) if labels else None,
        "target_precision": target_precision,
        "training_run": training_run,
        "batch_size": batch_size,
        "masked_texts": masked_texts,
        "task_runner": task_runner.value if task_runner else None,
    }
    summary = curate_flow(scorer=scorer.value, **{k: v for k, v in options.items() if v is not None})
    echo_summary(summary)


def preflight(scorer: str, training_run: str | None, labels: Path | None) -> None:
    """Refuse a run that cannot start (no models, a missing labels file) before Prefect starts."""
    from flows.settings import load_settings
    from tasks import scoring
    from warehouse.db import Warehouse

    if labels is not None:
        scoring.load_labels(labels)
    con = Warehouse.from_settings(load_settings()).reader()
    try:
        scoring.plan_scoring(scoring.read_models(con), scorer, training_run)
    finally:
        con.close()


def echo_summary(summary: dict) -> None:
    """A few lines a person reads after `imtext curate` (and the demo)."""
    total = summary["texts"] or 1
    policy = summary["policy"]
    typer.echo(
        f"kept {summary['kept']:,} and dropped {summary['dropped']:,} of {summary['texts']:,} image texts "
        f"({100 * summary['kept'] / total:.1f}% kept; {summary['scored_now']:,} newly scored)"
    )
    typer.echo(f"scorer: {summary['scorer']} ({summary['scorer_reason']})")
    typer.echo(
        f"policy: p_true >= {policy['min_p_true']:.4g}"
        + (f" or rank <= {policy['top_k']}" if policy["top_k"] else "")
        + f"; junk-marked texts need p_true >= {max(policy['min_p_true'], policy['junk_min_p_true']):.4g}"
        + f" [{policy['threshold_source']}]"
    )
    if summary.get("labels"):
        m = summary["labels"]
        typer.echo(
            f"on {m['labelled']:,} labelled texts: drop precision {_pct(m['drop_precision'])}, "
            f"drop recall {_pct(m['drop_recall'])}; kept texts precision {_pct(m['keep_precision'])}, "
            f"recall {_pct(m['keep_recall'])}"
        )
    for row in summary.get("masked") or []:
        typer.echo(
            f"class names masked, {row['scorer']}: top-1 {row['top1_plain']:.3f} -> {row['top1_masked']:.3f} "
            f"on {row['texts']:,} held-out texts"
        )
    if summary["classes_without_text"]:
        typer.echo(f"{summary['classes_without_text']:,} classes kept none of their texts")
    typer.echo(f"report: {summary['report']}")


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def register(app: typer.Typer) -> None:
    app.command("curate")(curate)
