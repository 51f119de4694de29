"""The train flow: cross-fitted text→class classifiers (transformer and TF-IDF baseline) on one snapshot.

Multi-GPU: the same command under a launcher, no code change, e.g.

    torchrun --nproc_per_node 4 -m flows.cli train --base-model roberta-base
    accelerate launch --num_processes 4 -m flows.cli train --base-model roberta-base

Every process trains on its share of each epoch's batches (DistributedDataParallel over NCCL, or gloo
on CPUs; `--batch-size` is per process); only the first process fits the baseline and writes
models, rows and the report. The processes must see the same IMTEXT_HOME (checkpoints are shared
through it), and should talk to one Prefect server (`imtext serve`, or PREFECT_API_URL) rather than
each starting a temporary one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from flows.runtime import FLOW_RETRY, final_on_user_error
from tasks import encoders, training

# Prefect 3's @flow takes no tags: the `gpu` tag is on the deployment (prefect.yaml), on the
# fit-transformer task, and on CLI runs (`imtext train` runs the flow inside `tags("gpu")`).
FLOW_TAGS = ("gpu",)

fit_encoder_task = task(name="fit-encoder-head", cache_policy=NO_CACHE)(encoders.fit_encoder_fold)


@flow(name="train", **FLOW_RETRY)
@final_on_user_error()
def train_flow(
    base_model: Annotated[
        str,
        Field(description="hub name, local model folder, or an offline alias: minilm-offline, tiny-roberta"),
    ] = "roberta-base",
    folds: Annotated[
        int, Field(ge=2, description="cross-fitting folds K: K models, each judging the fold it never saw")
    ] = 2,
    epochs: Annotated[int, Field(ge=1, description="passes over the training texts")] = 3,
    max_steps: Annotated[
        int | None,
        Field(ge=1, description="stop each model after this many optimizer steps (overrides epochs)"),
    ] = None,
    batch_size: Annotated[int, Field(ge=1, description="texts per forward pass (per GPU)")] = 32,
    learning_rate: Annotated[
        float, Field(gt=0, description="AdamW learning rate of the pretrained encoder")
    ] = 5e-5,
    head_learning_rate: Annotated[
        float,
        Field(gt=0, description="learning rate of the new classification head (and of a from-scratch model)"),
    ] = 3e-3,
    seed: Annotated[int, Field(description="seed of the folds, batch order, dropout and the new head")] = 0,
    max_train_samples: Annotated[
        int | None, Field(ge=1, description="cap on training texts per model, for quick runs")
    ] = None,
    allow_invalid: Annotated[bool, Field(description="train even when the last validation failed")] = False,
    baseline: Annotated[
        bool, Field(description="also fit the TF-IDF + linear baseline on the same folds")
    ] = True,
    resume: Annotated[
        bool,
        Field(
            description="continue from checkpoints and reuse finished models of the same data and settings"
        ),
    ] = True,
    frozen_encoder: Annotated[
        str,
        Field(
            description="sentence encoder of the frozen-encoder and class-similarity scorers: auto (the "
            "offline MiniLM when installed, else the base model when pretrained), a model name or folder, "
            "or none"
        ),
    ] = "auto",
) -> dict:
    """Train K fold models and one on everything, for the transformer and the baseline; register and report them."""
    from flows import artifacts
    from flows.runtime import Progress, open_warehouse, run_id
    from flows.settings import load_settings
    from tasks import report as reports
    from tasks.classifier import check_base_model

    logger = get_run_logger()
    settings = load_settings()
    rid = run_id()
    started = dt.datetime.now(dt.UTC)
    dist = training.DistInfo.detect()
    wh = open_warehouse(settings)
    try:
        if not allow_invalid:
            from expectations.gate import check_gate

            check_gate(wh.con, ["classes", "images", "class_texts", "image_texts"])
        check_base_model(base_model)
        snapshot = wh.current_snapshot()
        data = training.prepare_training_data(wh.con, snapshot, folds, seed)
        balance = training.class_balance(data)
        logger.info(
            "snapshot %d: %d classes, %d image texts of %d images, %d class texts; %d junk texts left out",
            snapshot,
            balance["classes"],
            balance["image_texts"],
            balance["images"],
            balance["class_texts"],
            balance["junk_excluded"],
        )
        config = training.TrainConfig(
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            head_learning_rate=head_learning_rate,
            seed=seed,
        )
        spec = training.RunSpec(
            base_model=base_model,
            folds=folds,
            config=config,
            run_id=rid,
            models_dir=settings.models_dir,
            max_train_samples=max_train_samples,
            resume=resume,
        )
        params = {
            **spec.transformer_params(data, dist.world),
            "snapshot": snapshot,
            "baseline": baseline,
        }
        run_row = {
            "run_id": rid,
            "base_model": base_model,
            "folds": folds,
            "seed": seed,
            "snapshot": snapshot,
            "data_fingerprint": data.fingerprint,
            "params": params,
            "data": balance,
            "status": "running",
            "started_at": started,
        }
        if dist.is_main:
            training.record_training_run(wh, run_row)
            training.record_folds(wh, rid, data.image_folds)
        order = [*range(folds), -1]
        rows: list[dict] = []

        if baseline and dist.is_main:
            temperatures = []
            for fold in order:
                temperature = sum(temperatures) / len(temperatures) if fold < 0 and temperatures else None
                row = training.fit_baseline_task(data, fold, spec, temperature=temperature)
                temperatures.append(row["params"]["temperature"])
                training.register_models(wh, [row])
                rows.append(row)
                logger.info("baseline %s: %s", row["model_id"], _brief(row["metrics"]))

        encoder = encoders.resolve_encoder(frozen_encoder, base_model)
        if encoder is not None and dist.is_main:
            embeddings, speed = encoders.embed_training_texts(data, encoder)
            logger.info("embedded %d texts with %s (%.0f texts/s)", len(embeddings), encoder, speed)
            for kind in encoders.ENCODER_KINDS:
                kind_rows: list[dict] = []
                for fold in order:
                    temperature = encoders.average_temperature(kind_rows) if fold < 0 else None
                    row = fit_encoder_task(data, fold, spec, embeddings, kind, encoder, temperature)
                    training.register_models(wh, [row])
                    kind_rows.append(row)
                    logger.info("%s %s: %s", kind, row["model_id"], _brief(row["metrics"]))
                rows.extend(kind_rows)
            del embeddings

        curves: dict[str, training.TrainResult] = {}
        for fold in order:
            progress: list[Progress] = []

            def on_step(step: int, total: int, fold=fold, progress=progress) -> None:
                if not progress:
                    name = "all" if fold < 0 else f"fold {fold}"
                    progress.append(Progress(total, f"training {name} of {folds}"))
                    progress[0].done = step - 1
                progress[0].advance()

            row, result = training.fit_transformer_task(data, fold, spec, dist=dist, on_step=on_step)
            if progress:
                progress[0].close()
            curves["all" if fold < 0 else f"fold {fold}"] = result
            if dist.is_main:
                training.register_models(wh, [row])
                training.record_history(wh, rid, row["model_id"], result)
            rows.append(row)
            logger.info(
                "transformer %s%s: %s",
                row["model_id"],
                " (reused)" if row.get("reused") else "",
                _brief(row["metrics"]),
            )

        summary = {
            "run_id": rid,
            "snapshot": snapshot,
            "base_model": base_model,
            "folds": folds,
            "models": [r["model_id"] for r in rows],
            "held_out": training.summary_by_kind(rows),
            "classes": balance["classes"],
            "image_texts": balance["image_texts"],
            "class_texts": balance["class_texts"],
            "junk_excluded": balance["junk_excluded"],
            "device": training.device_name(dist),
            "report": None,
        }
        if dist.is_main:
            html = training.render_report(rid, rows, curves, balance, params)
            report = reports.write_report(html, settings.reports_dir, f"train-{rid}.html")
            summary["report"] = str(report)
            description = f"held-out metrics of {len(rows)} models ({base_model} and baseline), {folds} folds"
            artifacts.publish_table(
                training.metrics_table(rows), key="training-metrics", description=description
            )
            artifacts.publish_markdown(
                reports.training_report_markdown(rid, rows, curves, balance, params, str(report)),
                key="training-report",
                description="metrics side by side, curves",
            )
            artifacts.publish_summary(
                "Training",
                {k: summary[k] for k in ("run_id", "snapshot", "base_model", "folds", "classes", "device")}
                | {"held_out": summary["held_out"], "report": summary["report"]},
                key="training-summary",
            )
            finished = dt.datetime.now(dt.UTC)
            training.record_training_run(
                wh, {**run_row, "status": "done", "report_path": str(report), "finished_at": finished}
            )
            summary["duration_s"] = round((finished - started).total_seconds(), 1)
            logger.info("report %s", report)
        return summary
    except BaseException:
        if dist.is_main and "run_row" in locals():
            with contextlib.suppress(Exception):  # never hide the real error
                training.record_training_run(
                    wh, {**run_row, "status": "failed", "finished_at": dt.datetime.now(dt.UTC)}
                )
        raise
    finally:
        wh.close()


def _brief(metrics: dict) -> str:
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    return (
        f"top1 {f(metrics.get('top1'))}, top5 {f(metrics.get('top5'))}, macro-F1 {f(metrics.get('macro_f1'))}, "
        f"{metrics.get('train_time_s', 0):.1f}s, {metrics.get('texts_per_s') or 0:,.0f} texts/s"
    )
