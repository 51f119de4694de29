"""The steps of the train flow: each kind's fold models fitted and registered, the run's row and its summary.

The Prefect tasks are thin wrappers that run in the flow's own process and thread, as
DistributedDataParallel needs. Only the first process of a multi-process launch writes; the
transformer's folds run in every process.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.model import encoders
from tasks.model.data import TrainingData, class_balance, prepare_training_data
from tasks.model.devices import DistInfo, device_name
from tasks.model.fits import RunSpec, fit_baseline_fold, fit_transformer_fold
from tasks.model.registry import record_history, register_models
from tasks.model.training import TrainResult
from tasks.report.training import summary_by_kind

fit_transformer_task = task(name="fit-transformer", tags=["gpu"], cache_policy=NO_CACHE)(fit_transformer_fold)
fit_baseline_task = task(name="fit-baseline", cache_policy=NO_CACHE)(fit_baseline_fold)
fit_encoder_task = task(name="fit-encoder-head", cache_policy=NO_CACHE)(encoders.fit_encoder_fold)


def fold_order(folds: int) -> list[int]:
    """The fold models first, then the model on everything (fold -1), which takes their mean temperature."""
    return [*range(folds), -1]


def fold_name(fold: int) -> str:
    return "all" if fold < 0 else f"fold {fold}"


def training_data(con, snapshot: int, spec: RunSpec, logger: logging.Logger) -> tuple[TrainingData, dict]:
    """The run's texts, labels and folds at `snapshot`, and their class balance (logged)."""
    data = prepare_training_data(con, snapshot, spec.folds, spec.config.seed)
    balance = class_balance(data)
    logger.info(
        "snapshot %d: %d classes, %d image texts of %d images, %d class texts; %d junk texts left out",
        snapshot,
        balance["classes"],
        balance["image_texts"],
        balance["images"],
        balance["class_texts"],
        balance["junk_excluded"],
    )
    return data, balance


def run_row(
    spec: RunSpec,
    data: TrainingData,
    balance: dict,
    dist: DistInfo,
    *,
    baseline: bool,
    started,
    transformer: bool = True,
    world: int | None = None,
) -> dict:
    """The `training_runs` row of a starting run; its params are the transformer's and what the run adds."""
    return {
        "run_id": spec.run_id,
        "base_model": spec.base_model,
        "folds": spec.folds,
        "seed": spec.config.seed,
        "snapshot": data.snapshot,
        "data_fingerprint": data.fingerprint,
        "params": {
            **spec.transformer_params(data, world or dist.world),
            "snapshot": data.snapshot,
            "baseline": baseline,
            "transformer": transformer,
        },
        "data": balance,
        "status": "running",
        "started_at": started,
    }


def fit_baselines(wh, data: TrainingData, spec: RunSpec, logger: logging.Logger) -> list[dict]:
    """The TF-IDF baseline of every fold, each registered as it is done; the model on everything last."""
    rows: list[dict] = []
    temperatures: list[float] = []
    for fold in fold_order(spec.folds):
        temperature = sum(temperatures) / len(temperatures) if fold < 0 and temperatures else None
        row = fit_baseline_task(data, fold, spec, temperature=temperature)
        temperatures.append(row["params"]["temperature"])
        register_models(wh, [row])
        rows.append(row)
        logger.info("baseline %s: %s", row["model_id"], brief(row["metrics"]))
    return rows


def fit_encoder_heads(
    wh, data: TrainingData, spec: RunSpec, encoder: str, logger: logging.Logger
) -> list[dict]:
    """The frozen-encoder and class-similarity models of every fold, on one embedding of the texts."""
    embeddings, speed = encoders.embed_training_texts(data, encoder)
    logger.info("embedded %d texts with %s (%.0f texts/s)", len(embeddings), encoder, speed)
    rows: list[dict] = []
    for kind in encoders.ENCODER_KINDS:
        kind_rows: list[dict] = []
        for fold in fold_order(spec.folds):
            temperature = encoders.average_temperature(kind_rows) if fold < 0 else None
            row = fit_encoder_task(data, fold, spec, embeddings, kind, encoder, temperature)
            register_models(wh, [row])
            kind_rows.append(row)
            logger.info("%s %s: %s", kind, row["model_id"], brief(row["metrics"]))
        rows.extend(kind_rows)
    return rows


def fit_transformers(
    wh,
    data: TrainingData,
    spec: RunSpec,
    dist: DistInfo,
    logger: logging.Logger,
    progress: Callable[[int, str], object],
) -> tuple[list[dict], dict[str, TrainResult]]:
    """The transformer of every fold (in every process of a launch); rows, and curves by fold name.

    `progress(total, description)` makes the progress display of one model; it is advanced after
    each optimizer step and closed when the model is done.
    """
    rows: list[dict] = []
    curves: dict[str, TrainResult] = {}
    for fold in fold_order(spec.folds):
        shown: list = []

        def on_step(step: int, total: int, fold=fold, shown=shown) -> None:
            if not shown:
                shown.append(progress(total, f"training {fold_name(fold)} of {spec.folds}"))
                shown[0].done = step - 1
            shown[0].advance()

        row, result = fit_transformer_task(data, fold, spec, dist=dist, on_step=on_step)
        if shown:
            shown[0].close()
        curves[fold_name(fold)] = result
        _record_transformer(wh, spec, row, result, logger, register=dist.is_main)
        rows.append(row)
    return rows, curves


def _record_transformer(
    wh, spec: RunSpec, row: dict, result: TrainResult, logger: logging.Logger, *, register: bool
) -> None:
    """A trained (or reused) transformer's row and curves into the warehouse when `register`; its log line."""
    if register:
        register_models(wh, [row])
        record_history(wh, spec.run_id, row["model_id"], result)
    logger.info(
        "transformer %s%s: %s",
        row["model_id"],
        " (reused)" if row.get("reused") else "",
        brief(row["metrics"]),
    )


@task(name="fit-transformers-launched", tags=["gpu"], cache_policy=NO_CACHE)
def _launch_task(data: TrainingData, spec: RunSpec, processes: int):
    from tasks.model.launch import launch_transformers

    return launch_transformers(data, spec, processes, spec.models_dir / ".launch" / spec.run_id)


def launch_transformer_folds(
    wh, data: TrainingData, spec: RunSpec, processes: int, logger: logging.Logger
) -> tuple[list[dict], dict[str, TrainResult]]:
    """Every fold's transformer trained by `processes` torchrun processes; registered here, once."""
    logger.info("training the transformer on %d processes (torchrun)", processes)
    rows, curves = _launch_task(data, spec, processes)
    for row in rows:
        _record_transformer(wh, spec, row, curves[fold_name(row["fold"])], logger, register=True)
    return rows, curves


def training_summary(run: dict, rows: list[dict], balance: dict, dist: DistInfo) -> dict:
    """What the train flow returns: the models, their mean held-out metrics per kind, the data."""
    return {
        "run_id": run["run_id"],
        "snapshot": run["snapshot"],
        "base_model": run["base_model"],
        "folds": run["folds"],
        "models": [r["model_id"] for r in rows],
        "held_out": summary_by_kind(rows),
        "classes": balance["classes"],
        "image_texts": balance["image_texts"],
        "class_texts": balance["class_texts"],
        "junk_excluded": balance["junk_excluded"],
        "device": device_name(dist),
        "report": None,
    }


def finished_run(run: dict, status: str, finished: dt.datetime, report_path: str | None = None) -> dict:
    """The run's row, ended with `status` at `finished` (and its report, when there is one)."""
    ended = {**run, "status": status}
    if report_path is not None:
        ended["report_path"] = report_path
    return {**ended, "finished_at": finished}


def brief(metrics: dict) -> str:
    """One log line of a model's held-out metrics, training time and scoring speed."""

    def f(v):
        return "-" if v is None else f"{v:.3f}"

    return (
        f"top1 {f(metrics.get('top1'))}, top5 {f(metrics.get('top5'))}, macro-F1 {f(metrics.get('macro_f1'))}, "
        f"{metrics.get('train_time_s', 0):.1f}s, {metrics.get('texts_per_s') or 0:,.0f} texts/s"
    )
