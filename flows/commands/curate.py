"""`imtext curate`: score every image text out-of-fold and keep or drop it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from flows.commands.common import prefect_env, run_flow, user_errors
from flows.runners import TASK_RUNNER_HELP, TaskRunnerName

# Shown in --help without importing the flow; tests check they match tasks.curate.policy's defaults.
HELP_DEFAULT_MIN_P_TRUE = None
HELP_DEFAULT_TOP_K = 0


class Scorer(str, Enum):
    auto = "auto"
    transformer = "transformer"
    baseline = "baseline"
    frozen = "frozen"
    similarity = "similarity"
    ensemble = "ensemble"


@user_errors
def curate(
    min_p_true: float = typer.Option(
        None,
        "--min-p-true",
        min=0.0,
        max=1.0,
        help="fixed rule: keep a text when the probability of its image's class is at least P "
        "[default: none, the relative policy: per-class thresholds from out-of-fold evidence]",
    ),
    top_k: int = typer.Option(
        None,
        "--top-k",
        min=0,
        help="fixed rule: keep when its class ranks within the scorer's top K (0 turns this off) "
        f"[default: {HELP_DEFAULT_TOP_K}]",
    ),
    scorer: Scorer = typer.Option(
        Scorer.auto,
        help="which models judge: auto is the ensemble of every kind trained, weighted by held-out likelihood",
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
    force: bool = typer.Option(
        False,
        "--force",
        help="curate again; by default, when nothing curate reads, no option, model or its code changed since "
        "the latest curation, that curation's decisions stand",
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
        "force": force,
    }
    summary = run_flow(
        curate_flow, scorer=scorer.value, **{k: v for k, v in options.items() if v is not None}
    )
    echo_summary(summary)


def preflight(scorer: str, training_run: str | None, labels: Path | None) -> None:
    """Refuse a run that cannot start (no models, a missing labels file) before Prefect starts."""
    from flows.settings import load_settings
    from tasks.curate.labels import load_labels
    from tasks.curate.plan import plan_scoring, read_models
    from warehouse.db import Warehouse

    if labels is not None:
        load_labels(labels)
    con = Warehouse.from_settings(load_settings()).reader()
    try:
        plan_scoring(read_models(con), scorer, training_run)
    finally:
        con.close()


def echo_summary(summary: dict) -> None:
    """A few lines a person reads after `imtext curate` (and the demo)."""
    total = summary["texts"] or 1
    policy = summary["policy"]
    if summary.get("unchanged"):
        typer.echo(
            f"unchanged since warehouse snapshot {summary['unchanged_since']}: the decisions of curation run "
            f"{summary['reused_from']} stand (--force curates again)"
        )
    typer.echo(
        f"kept {summary['kept']:,} and dropped {summary['dropped']:,} of {summary['texts']:,} image texts "
        f"({100 * summary['kept'] / total:.1f}% kept; {summary['scored_now']:,} newly scored)"
    )
    typer.echo(f"scorer: {summary['scorer']} ({summary['scorer_reason']})")
    if policy.get("mode") == "relative":
        t = summary.get("thresholds") or {}
        typer.echo(
            f"policy: relative, per-class thresholds from out-of-fold evidence (mean {t.get('mean_threshold', 0):.3f}, "
            f"{t.get('min_threshold', 0):.3f}-{t.get('max_threshold', 0):.3f} over {t.get('classes', 0):,} classes); "
            f"drop when another class leads {t.get('other_margin', 0):.3g}x and is confident, or p_true < "
            f"{t.get('fit_ratio', 0):.3g} x threshold"
            f" [{policy['threshold_source']}]"
        )
    else:
        threshold = policy["min_p_true"] if policy["min_p_true"] is not None else 1.0
        typer.echo(
            f"policy: p_true >= {threshold:.4g}"
            + (f" or rank <= {policy['top_k']}" if policy["top_k"] else "")
            + f"; junk-marked texts need p_true >= {max(threshold, policy['junk_min_p_true']):.4g}"
            + f" [{policy['threshold_source']}]"
        )
    reasons = summary.get("dropped_by_reason") or {}
    if reasons:
        typer.echo("dropped: " + ", ".join(f"{n:,} {reason}" for reason, n in reasons.items()))
    for name, e in (summary.get("evidence") or {}).items():
        weight = f", weight {e['weight']:.2f}" if e.get("weight") is not None else ""
        typer.echo(
            f"held-out evidence, {name}: mean log-likelihood {e['log_likelihood']:.3f}, top-1 {e['top1']:.3f}{weight}"
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
