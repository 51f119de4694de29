"""Reports as markdown artifacts: every value HTML-escaped, charts inline as data: URI images."""

from __future__ import annotations

import base64
import re

import numpy as np
import polars as pl

from flows.artifacts import escape, image_markdown, markdown_table, summary_markdown
from tasks.report.curation import curation_report_markdown
from tasks.report.training import training_report_markdown

IMAGE = re.compile(r"!\[([^\]]*)\]\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)")


def images(markdown: str) -> dict[str, str]:
    """The inline SVG images of a markdown text, decoded, by alt text."""
    return {alt: base64.b64decode(data).decode() for alt, data in IMAGE.findall(markdown)}


def test_values_in_markdown_are_html_escaped_and_cannot_make_links():
    hostile = "<script>alert(2)</script> [click](javascript:alert(1)) `x` a|b"
    text = summary_markdown("Harvest <b>", {"title": hostile, "<img src=x onerror=y>": 1})
    assert "<script>" not in text and "<img" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in text and "&lt;img src=x onerror=y&gt;" in text
    assert "[click](" not in text and "\\[click\\]" in text  # no live link
    assert "a\\|b" in text and text.count("\n|") == 4  # heading row, rule, two rows: no broken cells
    table = markdown_table([{"name": "<i>goldfish</i>", "n": 3}, {"name": "line\nbreak", "n": None}])
    assert "&lt;i&gt;goldfish&lt;/i&gt;" in table and "<i>" not in table and "line break" in table
    assert table.splitlines()[1] == "|---|---:|"  # numbers right-aligned
    assert escape("&amp;") == "&amp;amp;"  # already-encoded text shows as written, not decoded


def test_image_markdown_is_a_data_uri_of_the_document():
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><rect width="1" height="1"/></svg>'
    assert images(image_markdown(svg, "a [chart]")) == {"a chart": svg}


def test_curation_report_markdown_has_the_figures_and_charts_escaped():
    per_class = pl.DataFrame(
        {
            "class_index": [0, 1, 2],
            "wnid": ["n01440764", "n01443537", "n02099601"],
            "name": ["tench", "<b>goldfish</b>", "retriever"],
            "images": [4, 4, 4],
            "texts": [6, 5, 0],
            "kept": [5, 1, 0],
            "kept_ratio": [5 / 6, 0.2, None],
            "images_with_text": [4, 3, 0],
        }
    )
    summary = {
        "run_id": "run-1",
        "snapshot": 7,
        "training_run": "train-1",
        "policy": {"min_p_true": 0.3, "top_k": 1},
        "scorer": "baseline",
        "scorer_reason": "better held-out macro-F1 <0.9>",
        "candidates": {"baseline": {"macro_f1": 0.88, "top1": 0.9, "top5": 1.0, "models": 3}},
        "texts": 11,
        "kept": 6,
        "dropped": 5,
        "kept_ratio": 6 / 11,
        "labels": {"precision": 0.75, "recall": 0.6},
    }
    curve = pl.DataFrame(
        {"threshold": [0.1, 0.3, 0.5], "precision": [0.5, 0.75, 0.9], "recall": [1.0, 0.6, 0.2]}
    )
    p_true = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01])
    text = curation_report_markdown(
        summary, p_true=p_true, kept=p_true >= 0.3, per_class=per_class, curve=curve
    )
    assert "| 11 | 6 | 5 | 0.5455 |" in text  # decisions: texts, kept, dropped, ratio
    assert "&lt;b&gt;goldfish&lt;/b&gt;" in text and "<b>goldfish" not in text
    assert "&lt;0.9&gt;" in text
    charts = images(text)
    assert set(charts) == {
        "p_true of every scored text, kept and dropped",
        "kept ratio per class",
        "precision against recall",
    }
    histogram = charts["p_true of every scored text, kept and dropped"]
    assert histogram.startswith("<svg") and "threshold 0.3" in histogram
    assert histogram.count("<rect") >= 3  # bars of kept and dropped texts, plus the legend
    assert charts["kept ratio per class"].count("<rect") == 3  # one bar per class
    # the lowest kept ratios: goldfish first, the class without texts left out
    lowest = text.split("### Lowest kept ratios", 1)[1]
    assert lowest.index("n01443537") < lowest.index("n01440764") and "n02099601" not in lowest


def test_training_report_markdown_has_metrics_and_curves():
    from tasks.model.training import TrainResult

    def row(fold, kind, top1):
        return {
            "model_id": f"m-{kind}-{fold}",
            "base_model": "tiny-roberta" if kind == "transformer" else "tfidf-linear",
            "fold": fold,
            "params": {"kind": kind},
            "metrics": {
                "top1": top1,
                "top5": 1.0,
                "macro_f1": top1,
                "train_time_s": 1.0,
                "texts_per_s": 10.0,
            },
        }

    rows = [
        row(0, "transformer", 0.5),
        row(1, "transformer", 0.7),
        row(0, "baseline", 0.9),
        row(1, "baseline", 0.8),
    ]
    curve = TrainResult(
        metrics={},
        loss_curve=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}],
        evals=[{"step": 2, "top1": 0.5, "macro_f1": 0.4}],
        steps=2,
        epochs_run=1.0,
        train_seconds=1.0,
        samples_per_s=10.0,
    )
    text = training_report_markdown(
        "run-<1>", rows, {"fold 0": curve}, {"classes": 4}, {"base_model": "tiny-roberta", "folds": 2}
    )
    assert text.startswith("# Training run run-&lt;1&gt;")
    assert "| m-baseline-0 |" in text and "| m-transformer-1 |" in text
    assert re.search(r"\| transformer \| 0\.6 \|", text)  # the mean top-1 of the two folds
    assert set(images(text)) == {"training loss", "held-out top-1", "held-out macro-F1"}
    assert "<polyline" in images(text)["training loss"] or "<path" in images(text)["training loss"]
