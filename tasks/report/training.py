"""The training report: metrics side by side and training curves (HTML with inline SVG, no plotting library)."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tasks.model.training import TrainResult


def metrics_table(rows: list[dict]) -> list[dict]:
    """One line per model for the table artifact and the report, transformer and baseline side by side."""

    def fmt(value, digits=3):
        return None if value is None else round(float(value), digits)

    out = []
    for r in sorted(rows, key=lambda r: (r["fold"] < 0, r["fold"], r["params"]["kind"] != "transformer")):
        m = r["metrics"]
        out.append(
            {
                "fold": "all" if r["fold"] < 0 else r["fold"],
                "kind": r["params"]["kind"],
                "base_model": r["base_model"],
                "top1": fmt(m.get("top1")),
                "top5": fmt(m.get("top5")),
                "macro_f1": fmt(m.get("macro_f1")),
                "train_time_s": fmt(m.get("train_time_s"), 1),
                "texts_per_s": fmt(m.get("texts_per_s"), 0),
                "train_samples": m.get("train_samples"),
                "model_id": r["model_id"],
            }
        )
    return out


def summary_by_kind(rows: list[dict]) -> dict:
    """Mean held-out metrics over the fold models of each kind."""
    out: dict[str, dict] = {}
    for kind in sorted({r["params"]["kind"] for r in rows}):
        folds = [r["metrics"] for r in rows if r["params"]["kind"] == kind and r["fold"] >= 0]
        if not folds:
            continue
        out[kind] = {
            key: (
                float(np.mean([m[key] for m in folds if m.get(key) is not None]))
                if any(m.get(key) is not None for m in folds)
                else None
            )
            for key in ("top1", "top5", "macro_f1", "train_time_s", "texts_per_s")
        }
    return out


def svg_lines(series: list[tuple[str, list[tuple[float, float]]]], title: str, y_label: str) -> str:
    """A line chart of named (x, y) series with a legend, as inline SVG; empty when there are no points."""
    width, height, pad, legend = 560, 260, 44, 70  # the legend sits right of the plot
    points = [p for _, s in series for p in s]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad - legend)

    def sy(y):
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad - legend}" y2="{height - pad}" stroke="#888"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>',
        f'<text x="{pad}" y="{height - pad + 14}" font-size="10">{x0:g}</text>',
        f'<text x="{width - pad - legend}" y="{height - pad + 14}" font-size="10" text-anchor="end">'
        f"{x1:g} steps</text>",
        f'<text x="{pad - 4}" y="{height - pad}" font-size="10" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{pad - 4}" y="{pad + 4}" font-size="10" text-anchor="end">{y1:.3g}</text>',
        f'<text x="12" y="{height / 2}" font-size="10" transform="rotate(-90 12 {height / 2})">'
        f"{html.escape(y_label)}</text>",
    ]
    for i, (name, s) in enumerate(series):
        color = colors[i % len(colors)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{path}"/>')
        for x, y in s if len(s) < 30 else []:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>')
        parts.append(
            f'<text x="{width - pad - legend + 8}" y="{pad + 14 * i}" font-size="10" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def render_report(
    run_id: str, rows: list[dict], curves: dict[str, TrainResult], balance: dict, params: dict
) -> str:
    """The training report: metrics side by side, the choice they suggest, curves, class balance."""
    table = metrics_table(rows)
    summary = summary_by_kind(rows)
    columns = [
        "fold",
        "kind",
        "base_model",
        "top1",
        "top5",
        "macro_f1",
        "train_time_s",
        "texts_per_s",
        "train_samples",
        "model_id",
    ]
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape('' if r[c] is None else str(r[c]))}</td>" for c in columns)
        + "</tr>"
        for r in table
    )
    verdict = ""
    if {"transformer", "baseline"} <= summary.keys():
        t, b = summary["transformer"], summary["baseline"]
        if t["macro_f1"] is not None and b["macro_f1"] is not None:
            winner = "transformer" if t["macro_f1"] > b["macro_f1"] else "baseline"
            verdict = (
                f"<p>Mean held-out macro-F1: transformer {t['macro_f1']:.3f}, baseline {b['macro_f1']:.3f} "
                f"&rarr; <b>{winner}</b> is better on this data; the baseline scores "
                f"{(b['texts_per_s'] or 0):,.0f} texts/s against {(t['texts_per_s'] or 0):,.0f}.</p>"
            )
    loss_series = [(name, [(p["step"], p["loss"]) for p in r.loss_curve]) for name, r in curves.items()]
    top1_series = [
        (name, [(e["step"], e["top1"]) for e in r.evals if e["top1"] is not None])
        for name, r in curves.items()
    ]
    f1_series = [
        (name, [(e["step"], e["macro_f1"]) for e in r.evals if e["macro_f1"] is not None])
        for name, r in curves.items()
    ]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>imtext training {html.escape(run_id)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}} th{{background:#f3f3f3}}
.plots{{display:flex;flex-wrap:wrap;gap:12px}} pre{{background:#f7f7f7;padding:8px}}</style></head>
<body><h1>Training run {html.escape(run_id)}</h1>
<p>Base model <code>{html.escape(str(params.get("base_model")))}</code>, {params.get("folds")} folds, seed
{params.get("seed")}, snapshot {params.get("snapshot")}. Held-out metrics are those of each fold model on the
images it never saw; the model on everything (fold "all") has none.</p>
<h2>Held-out metrics, transformer and baseline side by side</h2>
<table><tr>{head}</tr>{body}</table>
{verdict}
<h2>Training curves</h2>
<div class="plots">{svg_lines(loss_series, "training loss", "cross-entropy")}
{svg_lines(top1_series, "held-out top-1", "top-1")}
{svg_lines(f1_series, "held-out macro-F1", "macro-F1")}</div>
<h2>Class balance</h2>
<pre>{html.escape(json.dumps(balance, indent=1, default=str))}</pre>
<h2>Parameters</h2>
<pre>{html.escape(json.dumps(params, indent=1, default=str))}</pre>
</body></html>
"""


def training_report_markdown(
    run_id: str, rows: list[dict], curves: dict, balance: dict, params: dict, report_path: str | None = None
) -> str:
    """The training report as markdown: held-out metrics per model, the mean per kind, curves as images."""
    from tasks.report.markdown import escape, format_value, image_markdown, markdown_table

    by_kind = summary_by_kind(rows)
    parts = [
        f"# Training run {escape(run_id)}",
        f"Base model {escape(params.get('base_model'))}, {format_value(params.get('folds'))} folds, seed "
        f"{format_value(params.get('seed'))}, snapshot {format_value(params.get('snapshot'))}. Held-out "
        'metrics are those of each fold model on the images it never saw; the model on everything (fold "all") '
        "has none.",
        "## Held-out metrics",
        markdown_table(metrics_table(rows)),
        "### Mean over the folds, per kind",
        markdown_table([{"kind": kind, **metrics} for kind, metrics in by_kind.items()]),
    ]
    charts = []
    for title, label, key in (
        ("training loss", "cross-entropy", "loss"),
        ("held-out top-1", "top-1", "top1"),
        ("held-out macro-F1", "macro-F1", "macro_f1"),
    ):
        series = [
            (
                name,
                [
                    (p["step"], p[key])
                    for p in (r.loss_curve if key == "loss" else r.evals)
                    if p.get(key) is not None
                ],
            )
            for name, r in curves.items()
        ]
        svg = svg_lines(series, title, label)
        if svg:
            charts.append(image_markdown(svg, title))
    if charts:
        parts += ["## Training curves", "\n\n".join(charts)]
    parts += ["## Class balance", markdown_table([balance])]
    if report_path:
        parts.append(f"The HTML report was written to {escape(report_path)} on the machine of the run.")
    return "\n\n".join(parts) + "\n"
