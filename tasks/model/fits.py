"""One model per fold, the transformer and the baseline: trained (or reused when finished before) and described.

Each returns the registry row of its model (see tasks.model.registry); the model folder is written
by the first process only, and a finished folder of the same data and settings is reused.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks.model.classifier import TINY_ROBERTA, predict_logits
from tasks.model.data import TrainingData, fold_split
from tasks.model.devices import DistInfo, device_name
from tasks.model.evaluation import chunked_metrics, scoring_speed
from tasks.model.registry import (
    model_id_for,
    read_complete,
    remove_checkpoints,
    spec_fingerprint,
    utc_now,
    write_complete,
)
from tasks.model.training import TrainConfig, TrainResult, param_groups, train_classifier

log = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """What one `imtext train` run trains, shared by its fold models."""

    base_model: str
    folds: int
    config: TrainConfig
    run_id: str
    models_dir: Path
    max_train_samples: int | None = None
    resume: bool = True

    def transformer_params(self, data: TrainingData, world: int = 1) -> dict:
        c = self.config
        return {
            "kind": "transformer",
            "base_model": self.base_model,
            "seed": c.seed,
            "folds": self.folds,
            "max_length": c.max_length,
            "epochs": c.epochs,
            "max_steps": c.max_steps,
            "batch_size": c.batch_size,
            "learning_rate": c.learning_rate,
            "head_learning_rate": c.head_learning_rate,
            "weight_decay": c.weight_decay,
            "warmup_ratio": c.warmup_ratio,
            "grad_accum_steps": c.grad_accum_steps,
            "max_grad_norm": c.max_grad_norm,
            "early_stopping_patience": c.early_stopping_patience,
            "length_group": c.length_group,
            "eval_max_samples": c.eval_max_samples,
            "max_train_samples": self.max_train_samples,
            "num_labels": len(data.labels),
            "world_size": world,
            "data_fingerprint": data.fingerprint,
        }

    def baseline_params(self, data: TrainingData, baseline) -> dict:
        from tasks.model.baseline import BASELINE_NAME

        return {
            "kind": "baseline",
            "base_model": BASELINE_NAME,
            "seed": self.config.seed,
            "folds": self.folds,
            "max_length": None,
            "max_train_samples": self.max_train_samples,
            "num_labels": len(data.labels),
            "data_fingerprint": data.fingerprint,
            **{f"tfidf_{k}": v for k, v in asdict(baseline).items() if k != "seed"},
        }


def _result_from_record(record: dict) -> TrainResult:
    metrics = record["row"]["metrics"]
    return TrainResult(
        metrics=metrics,
        loss_curve=record.get("loss_curve", []),
        evals=record.get("evals", []),
        steps=metrics.get("steps", 0),
        epochs_run=metrics.get("epochs_run", 0),
        train_seconds=metrics.get("train_time_s", 0.0),
        samples_per_s=metrics.get("train_samples_per_s", 0.0),
    )


def finish_folder(model_dir: Path, row: dict) -> None:
    """The model card, and the code that lets plain transformers load the model (see tasks.model.card)."""
    from tasks.model.card import finish_model_folder

    finish_model_folder(model_dir, row)


def reuse_finished(spec: RunSpec, model_dir: Path) -> dict | None:
    """The registry row of the finished model in `model_dir` (its card rewritten), or None to train it."""
    record = read_complete(model_dir) if spec.resume else None
    if record is None:
        return None
    log.info("reusing the finished model %s", model_dir.name)
    if int(os.environ.get("RANK", "0")) == 0:  # the launcher protocol: only the first process writes
        finish_folder(model_dir, record["row"])
    return {**record["row"], "run_id": spec.run_id, "created_at": utc_now(), "reused": True}


def fit_transformer_fold(
    data: TrainingData,
    fold: int,
    spec: RunSpec,
    *,
    dist: DistInfo | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[dict, TrainResult]:
    """Train (or reuse, when finished before) the transformer of one fold; returns its registry row and curves."""
    from tasks.model.classifier import build_classifier, save_classifier, short_name

    dist = dist or DistInfo.detect()
    params = spec.transformer_params(data, dist.world)
    fingerprint = spec_fingerprint(data.fingerprint, params)
    model_id = model_id_for(short_name(spec.base_model), fold, spec.folds, fingerprint)
    model_dir = spec.models_dir / model_id
    if (row := reuse_finished(spec, model_dir)) is not None:
        return row, _result_from_record(read_complete(model_dir))
    started = time.perf_counter()
    train, held = fold_split(data, fold, spec.max_train_samples, spec.config.seed)
    index = {w: i for i, w in enumerate(data.labels)}
    train_texts = train["text"].to_list()
    model, tokenizer, pooling = build_classifier(
        spec.base_model,
        data.labels,
        corpus=train_texts,
        max_length=spec.config.max_length,
        seed=spec.config.seed,
    )
    result = train_classifier(
        model,
        tokenizer,
        train_texts,
        [index[w] for w in train["wnid"]],
        held["text"].to_list(),
        [index[w] for w in held["wnid"]],
        spec.config,
        checkpoint_dir=spec.models_dir / ".checkpoints" / model_id,
        resume=spec.resume,
        dist=dist,
        on_step=on_step,
    )
    sample = held["text"].to_list() or train_texts
    speed = scoring_speed(
        lambda texts: predict_logits(model, tokenizer, texts, batch_size=spec.config.eval_batch_size), sample
    )
    _, encoder_lr = param_groups(model, spec.config, model.config.imtext_base_model == TINY_ROBERTA)
    metrics = {
        **result.metrics,
        "train_time_s": round(result.train_seconds, 3),
        "texts_per_s": round(speed, 1),
        "train_samples": train.height,
        "heldout_samples": held.height,
        "train_samples_per_s": round(result.samples_per_s, 2),
        "steps": result.steps,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "resumed_from_step": result.resumed_from_step,
        "peak_memory_mb": result.peak_memory_mb,
    }
    row = {
        "model_id": model_id,
        "base_model": spec.base_model,
        "fold": fold,
        "folds": spec.folds,
        "snapshot": data.snapshot,
        "params": {**params, "pooling": pooling, "encoder_learning_rate": encoder_lr},
        "metrics": metrics,
        "path": str(model_dir.resolve()),
        "duration_s": round(time.perf_counter() - started, 3),
        "device": device_name(dist),
        "run_id": spec.run_id,
        "created_at": utc_now(),
    }
    if dist.is_main:
        save_classifier(model, tokenizer, model_dir)
        finish_folder(model_dir, row)
        write_complete(
            model_dir,
            {
                "row": {k: v for k, v in row.items() if k != "created_at"},
                "loss_curve": result.loss_curve,
                "evals": result.evals,
            },
        )
        remove_checkpoints(spec.models_dir / ".checkpoints" / model_id)
    dist.barrier()
    return row, result


def cpu_model_row(
    model_id: str,
    base_model: str,
    fold: int,
    spec: RunSpec,
    data: TrainingData,
    params,
    metrics,
    model_dir,
    started,
) -> dict:
    """The registry row of a model fitted on the CPU (the baseline and the encoder heads)."""
    return {
        "model_id": model_id,
        "base_model": base_model,
        "fold": fold,
        "folds": spec.folds,
        "snapshot": data.snapshot,
        "params": params,
        "metrics": metrics,
        "path": str(Path(model_dir).resolve()),
        "duration_s": round(time.perf_counter() - started, 3),
        "device": "cpu",
        "run_id": spec.run_id,
        "created_at": utc_now(),
    }


def fit_baseline_fold(
    data: TrainingData, fold: int, spec: RunSpec, *, temperature: float | None = None, config=None
) -> dict:
    """Fit (or reuse) the TF-IDF + linear baseline of one fold on exactly the transformer's texts; its registry row."""
    from tasks.model.baseline import BASELINE_NAME, BaselineConfig, save_baseline, train_baseline

    config = config or BaselineConfig(seed=spec.config.seed)
    params = spec.baseline_params(data, config)
    fingerprint = spec_fingerprint(data.fingerprint, params)
    model_id = model_id_for(BASELINE_NAME, fold, spec.folds, fingerprint)
    model_dir = spec.models_dir / model_id
    if (row := reuse_finished(spec, model_dir)) is not None:
        return row
    started = time.perf_counter()
    train, held = fold_split(data, fold, spec.max_train_samples, spec.config.seed)
    held_texts = held["text"].to_list()
    model = train_baseline(
        train["text"].to_list(),
        train["wnid"].to_list(),
        classes=data.labels,
        eval_texts=held_texts or None,
        eval_labels=held["wnid"].to_list() or None,
        temperature=temperature,
        config=config,
    )
    train_seconds = time.perf_counter() - started
    index = {w: i for i, w in enumerate(data.labels)}
    metrics = chunked_metrics(
        model.decision_function,
        held_texts,
        [index[w] for w in held["wnid"]],
        temperature=model.temperature,
    )
    speed = scoring_speed(model.predict_proba, held_texts or train["text"].to_list())
    row = cpu_model_row(
        model_id,
        BASELINE_NAME,
        fold,
        spec,
        data,
        {**params, "temperature": model.temperature, "solver": model.solver},
        {
            **metrics,
            "train_time_s": round(train_seconds, 3),
            "texts_per_s": round(speed, 1),
            "train_samples": train.height,
            "heldout_samples": held.height,
        },
        model_dir,
        started,
    )
    save_baseline(model, model_dir, extra={"model_id": model_id})
    finish_folder(model_dir, row)
    write_complete(model_dir, {"row": {k: v for k, v in row.items() if k != "created_at"}})
    return row
