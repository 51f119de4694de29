"""`imtext demo`: the whole pipeline, offline, on the bundled sample.

Demo scaffolding only: it generates the sample tree and the harvest inputs, starts local stand-ins
for the Wikipedia and Flickr APIs, points the settings at them and runs the production pipeline
flow, which never knows it runs a demo.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flows.demo.sample import generate_sample
from flows.demo.servers import serve_apis
from flows.demo.texts import write_harvest_inputs
from flows.settings import load_settings

EXAMPLE_QUERIES = [
    "SELECT wnid, count(*) AS images FROM images GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
    "SELECT source, field, count(*) AS texts FROM image_texts GROUP BY ALL ORDER BY ALL",
    "SELECT kept, count(*) FROM text_scores GROUP BY 1",
    "SELECT wnid, field, text, round(p_true, 3) AS p_true FROM curated LIMIT 10",
    "SELECT suite, expectation, unexpected_count FROM validation_results WHERE NOT success",
]


def run_demo(
    train_per_class: int = 24,
    val_per_class: int = 4,
    base_model: str = "minilm-offline",
    epochs: int = 2,
    max_steps: int | None = None,
    export_format: str = "webdataset",
    echo=print,
) -> dict:
    """Generate the sample (once), then run ingest → harvest → validate → train → curate → export."""
    settings = load_settings()
    demo_dir = settings.home / "demo"
    sample_root = demo_dir / "sample"
    started = time.monotonic()
    if not (sample_root / "train").exists():
        info = generate_sample(sample_root, train_per_class=train_per_class, val_per_class=val_per_class)
        echo(
            f"generated the sample: {info['images']} images, {info['quarantined']} broken files, at {sample_root}"
        )

    from flows.ingest import ingest_flow
    from flows.pipeline import pipeline_flow
    from flows.runtime import open_warehouse

    ingest_flow(source=str(sample_root))
    with open_warehouse(settings) as wh:
        pairs = wh.con.execute(
            "SELECT image_id, wnid FROM images WHERE source = ?", [str(sample_root.resolve())]
        ).fetchall()
        if not pairs:
            pairs = wh.con.execute("SELECT image_id, wnid FROM images").fetchall()
    inputs = write_harvest_inputs(pairs, demo_dir / "inputs")

    with serve_apis(inputs.root, api_key=inputs.api_key) as apis:
        env = {**apis.env(), "IMTEXT_FLICKR_API_KEY": inputs.api_key}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            summary = pipeline_flow(
                source=str(sample_root),
                captions=str(inputs.captions),
                flickr_urls=str(inputs.flickr_urls),
                # the stand-in answers at once; the real API's 1 request/s would only slow the demo
                flickr_rate_limit=50.0,
                embedded=True,
                descriptions=str(inputs.descriptions),
                base_model=base_model,
                epochs=epochs,
                max_steps=max_steps,
                labels=str(inputs.labels),
                export_format=export_format,
                export_out=str(settings.home / "exports" / export_format),
            )
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    summary["home"] = str(settings.home.resolve())
    return summary


RELEVANCE_FIGURES = Path(__file__).with_name("relevance_figures.json")


def print_relevance_figures(echo=print, path: Path = RELEVANCE_FIGURES) -> None:
    """The demo's texts are the demo's own: beside its figures, those measured on real descriptions
    nobody here wrote (`bench/relevance.py`, gathered into `relevance_figures.json` by
    `bench/relevance_figures.py --demo`)."""
    if not path.exists():
        return
    figures = json.loads(path.read_text(encoding="utf-8"))
    echo(f"  on real descriptions nobody here wrote ({figures['what']}; {figures['measured']}):")
    for row in figures["rows"]:
        echo(
            f"    {row['set']:<11} {row['scorer']:<9} kept {100 * row['kept_relevant']:5.1f}% of relevant, "
            f"dropped {100 * row['dropped_irrelevant']:5.1f}% of irrelevant"
        )


def print_summary(summary: dict, echo=print) -> None:
    """What the demo did, where the results are, and queries to try."""
    curate = summary.get("curate", {})
    echo("")
    echo(f"demo finished in {summary['elapsed_s']} s; everything is under {summary['home']}")
    echo(f"  images ingested: {summary['ingest'].get('added', 0) + summary['ingest'].get('skipped', 0)}")
    echo(f"  image texts kept: {curate.get('kept')}  dropped: {curate.get('dropped')}")
    if curate.get("precision") is not None:
        echo(
            f"  drop decisions against the sample's labels: precision {curate['precision']:.3f} "
            f"(dropped texts that are irrelevant), recall {curate['recall']:.3f} (irrelevant texts dropped)"
        )
    if curate.get("keep_precision") is not None:
        echo(
            f"  kept texts: precision {curate['keep_precision']:.3f} (kept texts that are relevant), "
            f"recall {curate['keep_recall']:.3f} (relevant texts kept)"
        )
    if curate.get("scorer"):
        echo(f"  scorer: {curate['scorer']} ({curate.get('scorer_reason', '')})")
    if curate.get("dropped_by_reason"):
        echo("  dropped because: " + ", ".join(f"{n} {r}" for r, n in curate["dropped_by_reason"].items()))
    print_relevance_figures(echo)
    for key in ("report", "data_docs"):
        for part in summary.values():
            if isinstance(part, dict) and part.get(key):
                echo(f"  {key.replace('_', ' ')}: {part[key]}")
    if summary.get("export"):
        echo(f"  export: {summary['export'].get('out')}")
    echo("\ntry:")
    for query in EXAMPLE_QUERIES:
        echo(f'  imtext sql "{query}"')
