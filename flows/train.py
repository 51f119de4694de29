"""The train flow: cross-fitted text→class classifiers (transformer and TF-IDF baseline) on one snapshot.

Several GPUs: `imtext train --processes 4` (or the deployment's `processes` parameter) stays one
flow run; its transformer step starts torchrun with 4 processes (`tasks.model.launch`), each training
its share of each epoch's batches (DistributedDataParallel over NCCL, or gloo on CPUs;
`--batch-size` is per process), and registers the models the first one saved. The flow itself fits
the baseline and the frozen-encoder models, and writes rows and the report.

The whole command under a launcher (`torchrun --nproc_per_node 4 -m flows.cli train ...`) still
works too, as one flow run per process; the processes must then see the same IMTEXT_HOME and should
talk to one Prefect server (`imtext serve`, or PREFECT_API_URL).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import asdict
from typing import Annotated

from prefect import flow, get_run_logger

from flows.runtime import FLOW_RETRY, final_on_user_error
from tasks.common.errors import InputError
from tasks.model import encoders, kept, steps
from tasks.model.data import record_folds
from tasks.model.devices import DistInfo
from tasks.model.fits import RunSpec
from tasks.model.options import default, parameter
from tasks.model.registry import record_training_run
from tasks.model.training import TrainConfig

# Prefect 3's @flow takes no tags: the `gpu` tag is on the deployment (prefect.yaml), on the
# fit-transformer task, and on CLI runs (`imtext train` runs the flow inside `tags("gpu")`).
FLOW_TAGS = ("gpu",)


# The parameters' defaults, descriptions and bounds are declared once, in tasks.model.options.
@flow(name="train", **FLOW_RETRY)
@final_on_user_error()
def train_flow(
    base_model: Annotated[str, parameter("base_model")] = default("base_model"),
    folds: Annotated[int, parameter("folds")] = default("folds"),
    epochs: Annotated[int, parameter("epochs")] = default("epochs"),
    max_steps: Annotated[int | None, parameter("max_steps")] = default("max_steps"),
    batch_size: Annotated[int, parameter("batch_size")] = default("batch_size"),
    learning_rate: Annotated[float, parameter("learning_rate")] = default("learning_rate"),
    head_learning_rate: Annotated[float, parameter("head_learning_rate")] = default("head_learning_rate"),
    seed: Annotated[int, parameter("seed")] = default("seed"),
    max_train_samples: Annotated[int | None, parameter("max_train_samples")] = default("max_train_samples"),
    allow_invalid: Annotated[bool, parameter("allow_invalid")] = default("allow_invalid"),
    baseline: Annotated[bool, parameter("baseline")] = default("baseline"),
    transformer: Annotated[bool, parameter("transformer")] = default("transformer"),
    processes: Annotated[int, parameter("processes")] = default("processes"),
    resume: Annotated[bool, parameter("resume")] = default("resume"),
    frozen_encoder: Annotated[str, parameter("frozen_encoder")] = default("frozen_encoder"),
) -> dict:
    """Train K fold models and one on everything, for the transformer and the baseline; register and report them."""
    from flows.runtime import Progress, open_warehouse, run_id
    from flows.settings import load_settings
    from tasks.model.classifier import check_base_model

    logger = get_run_logger()
    settings = load_settings()
    rid = run_id()
    started = dt.datetime.now(dt.UTC)
    dist = DistInfo.detect()
    wh = open_warehouse(settings)
    run = None
    try:
        if not allow_invalid:
            from expectations.gate import check_gate

            check_gate(wh.con, ["classes", "images", "class_texts", "image_texts"])
        encoder = encoders.resolve_encoder(frozen_encoder, base_model)
        if not (transformer or baseline or encoder):
            raise InputError("nothing to train: --no-transformer, --no-baseline and --frozen-encoder none")
        if transformer:
            check_base_model(base_model)
        config = TrainConfig(
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            head_learning_rate=head_learning_rate,
            seed=seed,
        )
        spec = RunSpec(base_model, folds, config, rid, settings.models_dir, max_train_samples, resume)
        launched = transformer and processes > 1 and dist.world == 1
        request = kept.request_fingerprint(
            {
                "base_model": base_model,
                "folds": folds,
                "config": asdict(config),
                "max_train_samples": max_train_samples,
                "baseline": baseline,
                "transformer": transformer,
                "encoder": encoder,
                "world": processes if launched else dist.world,
            }
        )
        if resume and dist.world == 1 and (previous := kept.kept_run(wh.con, request)) is not None:
            logger.info(
                "nothing to train: the options and texts of run %s (snapshot %d) are unchanged; "
                "its %d models are kept (--no-resume trains again)",
                previous["run_id"],
                previous["snapshot"],
                len(previous["models"]),
            )
            return previous
        data, balance = steps.training_data(wh.con, wh.current_snapshot(), spec, logger)
        run = steps.run_row(
            spec,
            data,
            balance,
            dist,
            baseline=baseline,
            started=started,
            transformer=transformer,
            world=processes if launched else dist.world,
        )
        run["params"]["request"] = request
        if dist.is_main:
            record_training_run(wh, run)
            record_folds(wh, rid, data.image_folds)
        rows: list[dict] = []
        if baseline and dist.is_main:
            rows += steps.fit_baselines(wh, data, spec, logger)
        if encoder is not None and dist.is_main:
            rows += steps.fit_encoder_heads(wh, data, spec, encoder, logger)
        curves: dict = {}
        if launched:
            transformer_rows, curves = steps.launch_transformer_folds(wh, data, spec, processes, logger)
            rows += transformer_rows
        elif transformer:
            transformer_rows, curves = steps.fit_transformers(wh, data, spec, dist, logger, Progress)
            rows += transformer_rows
        summary = steps.training_summary(run, rows, balance, dist)
        if launched and transformer_rows:
            summary["device"] = transformer_rows[0]["device"]
        if dist.is_main:
            summary |= _report(wh, run, rows, curves, balance, summary, settings.reports_dir)
        return summary
    except BaseException:
        if dist.is_main and run is not None:
            with contextlib.suppress(Exception):  # never hide the real error
                record_training_run(wh, steps.finished_run(run, "failed", dt.datetime.now(dt.UTC)))
        raise
    finally:
        wh.close()


def _report(wh, run: dict, rows: list[dict], curves: dict, balance: dict, summary: dict, reports_dir) -> dict:
    """Write the HTML report, publish the run's artifacts, and record the run as done; the summary's additions."""
    from flows import artifacts
    from tasks.report.charts import write_report
    from tasks.report.training import metrics_table, render_report, training_report_markdown

    rid, params = run["run_id"], run["params"]
    html = render_report(rid, rows, curves, balance, params)
    report = write_report(html, reports_dir, f"train-{rid}.html")
    description = (
        f"held-out metrics of {len(rows)} models ({run['base_model']} and baseline), {run['folds']} folds"
    )
    artifacts.publish_table(metrics_table(rows), key="training-metrics", description=description)
    artifacts.publish_markdown(
        training_report_markdown(rid, rows, curves, balance, params, str(report)),
        key="training-report",
        description="metrics side by side, curves",
    )
    artifacts.publish_summary(
        "Training",
        {k: summary[k] for k in ("run_id", "snapshot", "base_model", "folds", "classes", "device")}
        | {"held_out": summary["held_out"], "report": str(report)},
        key="training-summary",
    )
    finished = dt.datetime.now(dt.UTC)
    record_training_run(wh, steps.finished_run(run, "done", finished, str(report)))
    get_run_logger().info("report %s", report)
    return {"report": str(report), "duration_s": round((finished - run["started_at"]).total_seconds(), 1)}
