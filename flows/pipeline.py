"""The end-to-end flow: ingest, harvest, validate (gate), train, curate, export."""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from flows.curate import curate_flow
from flows.export import export_flow
from flows.harvest import harvest_classes_flow, harvest_images_flow
from flows.ingest import ingest_flow
from flows.runtime import FLOW_RETRY, final_on_user_error
from flows.train import train_flow
from flows.validate import validate_flow


class PipelineStopped(RuntimeError):
    """The pipeline stopped at a gate; the message says which expectations failed."""


# A failed step is retried by its own flow; a retry of the whole pipeline re-runs the steps that
# finished as cheap no-ops (every load is repeat-safe) and resumes the one that failed.
@flow(name="pipeline", log_prints=True, **FLOW_RETRY)
@final_on_user_error(PipelineStopped)
def pipeline_flow(
    source: Annotated[str, Field(description="ImageNet folder, ILSVRC tar or parquet shards to ingest")],
    split: Annotated[str, Field(description="train, val or auto")] = "auto",
    captions: Annotated[str | None, Field(description="ImageNet-Captions JSON file")] = None,
    flickr_urls: Annotated[str | None, Field(description="fall11_urls-style list for the Flickr API")] = None,
    flickr_rate_limit: Annotated[
        float | None, Field(description="Flickr requests per second (default: the API's 3,600 an hour)")
    ] = None,
    embedded: Annotated[bool, Field(description="harvest text embedded in the image files")] = True,
    wikipedia: Annotated[bool, Field(description="fetch Wikipedia summaries of the ingested classes")] = True,
    descriptions: Annotated[str | None, Field(description="class description file (JSON or JSONL)")] = None,
    base_model: Annotated[
        str, Field(description="hub name, local path, minilm-offline or tiny-roberta")
    ] = "roberta-base",
    folds: Annotated[int, Field(ge=2, description="cross-fitting folds")] = 2,
    epochs: Annotated[int, Field(ge=1, description="training epochs")] = 3,
    max_steps: Annotated[int | None, Field(description="cap on training steps per model")] = None,
    min_p_true: Annotated[float | None, Field(description="keep a text when p_true >= this")] = None,
    top_k: Annotated[int | None, Field(description="or when its class ranks within the top k")] = None,
    scorer: Annotated[str, Field(description="transformer, baseline, ensemble or auto")] = "auto",
    labels: Annotated[
        str | None, Field(description="JSONL of {text_id, relevant} to measure the filter")
    ] = None,
    export_format: Annotated[
        str | None, Field(description="parquet, webdataset or hf; none to skip")
    ] = "parquet",
    export_out: Annotated[str | None, Field(description="export folder (default under IMTEXT_HOME)")] = None,
    allow_invalid: Annotated[bool, Field(description="train even when validation failed")] = False,
) -> dict:
    """Run the whole mission in order and stop at a failed validation gate."""
    logger = get_run_logger()
    summary: dict = {"ingest": ingest_flow(source=source, split=split)}
    summary["harvest_classes"] = harvest_classes_flow(wikipedia=wikipedia, descriptions=descriptions)
    if captions or flickr_urls or embedded:
        if captions:
            summary["harvest_captions"] = harvest_images_flow(captions=captions)
        if flickr_urls:
            summary["harvest_flickr"] = harvest_images_flow(
                flickr_urls=flickr_urls, rate_limit=flickr_rate_limit
            )
        if embedded:
            summary["harvest_embedded"] = harvest_images_flow(embedded=True)
    validation = validate_flow()
    summary["validate"] = validation
    if not validation["success"] and not allow_invalid:
        failed = ", ".join(validation["failed_blocking"])
        raise PipelineStopped(f"validation failed, not training on bad data: {failed}")
    summary["train"] = train_flow(
        base_model=base_model, folds=folds, epochs=epochs, max_steps=max_steps, allow_invalid=allow_invalid
    )
    curate_kwargs = {k: v for k, v in {"min_p_true": min_p_true, "top_k": top_k}.items() if v is not None}
    summary["curate"] = curate_flow(scorer=scorer, labels=labels, **curate_kwargs)
    if export_format:
        summary["export"] = export_flow(format=export_format, **({"out": export_out} if export_out else {}))
    logger.info("pipeline done: %s", {k: v.get("run_id") for k, v in summary.items() if isinstance(v, dict)})
    return summary
