"""Static HTML reports with inline SVG charts (no plotting library needed), and their Prefect artifacts."""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

KEPT = "#2b8a3e"
DROPPED = "#c92a2a"
INK = "#343a40"
GRID = "#dee2e6"

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;color:#212529;max-width:1080px;margin:24px auto;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #dee2e6}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;border-bottom:1px solid #e9ecef;text-align:left}
th{background:#f8f9fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#495057}svg text{font:11px system-ui,sans-serif;fill:#343a40}
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value, digits: int = 3) -> str:
    """Numbers for people: ints with separators, floats rounded, None as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}f}"
    return esc(value)


def html_table(rows: Sequence[dict], columns: Sequence[str] | None = None, limit: int | None = None) -> str:
    if not rows:
        return "<p class=note>(none)</p>"
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows[:limit] if limit else rows:
        cells = []
        for c in columns:
            v = row.get(c)
            numeric = isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
            cells.append(f"<td class=n>{fmt(v)}</td>" if numeric else f"<td>{fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (
        f"<p class=note>{len(rows) - limit:,} more rows not shown</p>" if limit and len(rows) > limit else ""
    )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def svg_histogram(
    values,
    *,
    kept=None,
    threshold: float | None = None,
    bins: int = 25,
    width: int = 640,
    height: int = 240,
    title: str = "",
    x_label: str = "p_true",
) -> str:
    """A histogram of values in [0, 1], stacked kept/dropped when `kept` is given, with a threshold line."""
    values = np.clip(np.asarray(values, dtype=float), 0.0, 1.0)
    kept = np.ones(values.shape, bool) if kept is None else np.asarray(kept, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    k_counts, _ = np.histogram(values[kept], bins=edges)
    d_counts, _ = np.histogram(values[~kept], bins=edges)
    top = max(int((k_counts + d_counts).max()) if values.size else 0, 1)
    left, right, upper, lower = 48, 12, 30, 36
    plot_w, plot_h = width - left - right, height - upper - lower
    bar_w = plot_w / bins
    parts = [_svg_open(width, height, title)]
    for tick in _ticks(top):
        y = upper + plot_h - plot_h * tick / top
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{tick:,}</text>')
    for i in range(bins):
        x = left + i * bar_w
        base = upper + plot_h
        for count, colour, name in ((d_counts[i], DROPPED, "dropped"), (k_counts[i], KEPT, "kept")):
            if count <= 0:
                continue
            h = plot_h * count / top
            base -= h
            parts.append(
                f'<rect x="{x + 0.5:.1f}" y="{base:.1f}" width="{max(bar_w - 1, 0.5):.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{edges[i]:.2f}–{edges[i + 1]:.2f}: {int(count):,} {name}</title></rect>'
            )
    for tick in np.linspace(0, 1, 6):
        x = left + plot_w * tick
        parts.append(f'<text x="{x:.1f}" y="{height - lower + 14}" text-anchor="middle">{tick:.1f}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">{esc(x_label)}</text>'
    )
    if threshold is not None:
        x = left + plot_w * min(max(threshold, 0.0), 1.0)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{upper}" y2="{upper + plot_h}" stroke="{INK}" '
            f'stroke-dasharray="4 3" stroke-width="1.5"/>'
            f'<text x="{x + 4:.1f}" y="{upper + 10}">threshold {threshold:.3g}</text>'
        )
    parts.append(_legend(width - right - 150, upper + 2, [("kept", KEPT), ("dropped", DROPPED)]))
    parts.append("</svg>")
    return "".join(parts)


def svg_ratio_bars(
    names: Sequence[str],
    ratios,
    *,
    width: int = 960,
    height: int = 220,
    title: str = "",
    tooltips: bool = True,
) -> str:
    """One thin bar per class, sorted by ratio (hover a bar for its class); missing ratios drawn at 0.

    Without `tooltips` the bars carry no class names: a fifth of the size, for an inline image.
    """
    ratios = np.asarray([np.nan if r is None else r for r in ratios], dtype=float)
    order = np.argsort(np.nan_to_num(ratios, nan=-1.0), kind="stable")
    left, right, upper, lower = 40, 12, 18, 28
    plot_w, plot_h = width - left - right, height - upper - lower
    n = max(len(order), 1)
    bar_w = plot_w / n
    parts = [_svg_open(width, height, title)]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = upper + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
    for pos, i in enumerate(order):
        r = ratios[i]
        h = 0.0 if np.isnan(r) else plot_h * r
        colour = DROPPED if np.isnan(r) or r == 0 else KEPT
        label = f"{names[i]}: {'no texts' if np.isnan(r) else f'{r:.2f}'}"
        parts.append(
            f'<rect x="{left + pos * bar_w:.2f}" y="{upper + plot_h - max(h, 1):.1f}" '
            f'width="{max(bar_w * 0.85, 0.4):.2f}" height="{max(h, 1):.1f}" fill="{colour}">'
            + (f"<title>{esc(label)}</title>" if tooltips else "")
            + "</rect>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
        f"{len(order):,} classes, sorted by kept ratio (red: nothing kept)</text></svg>"
    )
    return "".join(parts)


def svg_curve(
    curve: pl.DataFrame, *, chosen: float | None = None, width: int = 420, height: int = 300
) -> str:
    """Precision against recall of the kept texts, one point per threshold; the chosen one marked."""
    rows = curve.filter(pl.col("precision").is_not_null() & pl.col("recall").is_not_null())
    left, right, upper, lower = 52, 14, 20, 36
    plot_w, plot_h = width - left - right, height - upper - lower
    parts = [_svg_open(width, height, "precision / recall of the kept texts")]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = upper + plot_h * (1 - tick)
        x = left + plot_w * tick
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
        parts.append(f'<text x="{x:.1f}" y="{upper + plot_h + 14}" text-anchor="middle">{tick:.2f}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">recall</text>')
    parts.append(
        f'<text x="12" y="{upper + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {upper + plot_h / 2:.1f})">precision</text>'
    )
    points = [
        (left + plot_w * r, upper + plot_h * (1 - p), t)
        for t, p, r in rows.select("threshold", "precision", "recall").iter_rows()
    ]
    if points:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{INK}" stroke-width="1.5"/>')
    if chosen is not None and points:
        x, y, t = min(points, key=lambda p: abs(p[2] - chosen))
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{KEPT}"><title>threshold {t:.3g}</title></circle>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_open(width: int, height: int, title: str) -> str:
    head = f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
    if title:
        head += (
            f'<text x="{width / 2:.0f}" y="12" text-anchor="middle" font-weight="bold">{esc(title)}</text>'
        )
    return head


def _legend(x: float, y: float, items: Sequence[tuple[str, str]]) -> str:
    out = []
    for i, (name, colour) in enumerate(items):
        out.append(
            f'<rect x="{x + i * 70}" y="{y}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + i * 70 + 14}" y="{y + 9}">{esc(name)}</text>'
        )
    return "".join(out)


def _ticks(top: int) -> list[int]:
    step = 10 ** max(int(math.log10(max(top, 1))), 0)
    for mult in (1, 2, 5, 10):
        if top / (step * mult) <= 5:
            step *= mult
            break
    return list(range(0, top + 1, max(step, 1)))


def decisions_row(summary: dict) -> dict:
    """The headline figures of a curation: texts, kept, dropped, ratio, scored now, classes left empty."""
    return {
        "texts": summary.get("texts"),
        "kept": summary.get("kept"),
        "dropped": summary.get("dropped"),
        "kept ratio": summary.get("kept_ratio"),
        "scored now": summary.get("scored_now"),
        "classes with texts but none kept": summary.get("classes_without_text"),
    }


REASON_COLUMNS = ("dropped_other_class", "dropped_no_class", "dropped_junk", "dropped_below_threshold")


def lowest_kept(per_class: pl.DataFrame) -> pl.DataFrame:
    """Classes with texts, lowest kept ratio first, with why their texts were dropped."""
    reasons = [c for c in REASON_COLUMNS if c in per_class.columns]
    return (
        per_class.filter(pl.col("texts") > 0)
        .sort(["kept_ratio", "class_index"])
        .select("wnid", "name", "images", "texts", "kept", "kept_ratio", "images_with_text", *reasons)
    )


def policy_note(policy: dict, used: dict | None = None) -> str:
    """One sentence on how the policy decides (`used`: what the relative policy worked out)."""
    if policy.get("mode") == "relative":
        used = used or {}

        def value(key: str, scaled: str) -> str:
            if policy.get(key) is not None:
                return f"{policy[key]:g}"
            return f"{used[key]:.3g} ({scaled})" if used.get(key) is not None else scaled

        fit = value("fit_ratio", f"{policy.get('fit_scale')} × the mean out-of-fold p_true")
        margin = value("other_margin", f"that mean ^ -{policy.get('margin_power')}")
        return (
            "Relative policy: each class's threshold is the mean out-of-fold probability of the texts labelled "
            f"with it (shrunk towards the overall mean by {policy.get('prior_texts')} texts). A text is dropped "
            "as junk when marked junk and below max(threshold, junk_min_p_true); as another class when the "
            "scorer's preferred class is another one that reaches its own threshold and gets at least "
            f"{margin} × the text's own class while that one stays below its threshold; "
            f"as fitting no class when p_true < {fit} × its class's threshold."
        )
    return (
        "Keep a text when p_true ≥ min_p_true or true_rank ≤ top_k (0: off); a junk-marked text needs "
        "p_true ≥ max(min_p_true, junk_min_p_true)."
    )


def reason_rows(summary: dict) -> list[dict]:
    """Dropped texts per reason, and the held-out evidence the scorer choice rests on."""
    return [{"reason": k, "dropped": v} for k, v in (summary.get("dropped_by_reason") or {}).items()]


def evidence_rows(summary: dict) -> list[dict]:
    return [{"scorer": k, **v} for k, v in (summary.get("evidence") or {}).items()]


def curation_report_html(
    summary: dict,
    *,
    p_true,
    kept,
    per_class: pl.DataFrame,
    curve: pl.DataFrame | None = None,
) -> str:
    """The curation report: decisions, scorer choice, score histogram, kept ratio per class, labels, masked names."""
    policy = summary.get("policy", {})
    threshold = policy.get("min_p_true")
    sections = [
        f"<h1>Curation {esc(summary.get('run_id'))}</h1>",
        f"<p class=note>{esc(summary.get('finished_at', dt.datetime.now(dt.UTC).isoformat()))} · "
        f"warehouse snapshot {esc(summary.get('snapshot'))} · training run {esc(summary.get('training_run'))}</p>",
        "<h2>Decisions</h2>",
        html_table([decisions_row(summary)]),
        "<h2>Policy</h2>",
        html_table([policy]),
        f"<p class=note>{esc(policy_note(policy, summary.get('thresholds')))}</p>",
        html_table([summary["thresholds"]]) if summary.get("thresholds") else "",
        "<h2>Why texts were dropped</h2>",
        html_table(reason_rows(summary)),
        "<h2>Scorer</h2>",
        f"<p><b>{esc(summary.get('scorer'))}</b>: {esc(summary.get('scorer_reason'))}</p>",
        html_table(
            [{"kind": k, **v} for k, v in summary.get("candidates", {}).items()],
            ["kind", "macro_f1", "top1", "top5", "models"],
        ),
    ]
    if summary.get("evidence"):
        sections += [
            "<h3>Held-out evidence</h3>",
            "<p class=note>Calibrated probability of the held-out texts' classes per kind and for the weighted "
            "ensemble (weights fitted on these texts).</p>",
            html_table(evidence_rows(summary)),
        ]
    temperatures = summary.get("temperatures") or {}
    if temperatures:
        sections.append(
            "<p class=note>Ensemble calibration (temperature per kind, fitted on held-out folds): "
            + ", ".join(f"{esc(k)} {v:.3g}" for k, v in temperatures.items())
            + "</p>"
        )
    sections += [
        "<h2>Scores</h2>",
        svg_histogram(p_true, kept=kept, threshold=threshold, title="p_true of every scored text"),
        "<h2>Kept ratio per class</h2>",
        svg_ratio_bars(
            per_class["name"].to_list(),
            per_class["kept_ratio"].to_list(),
            title="kept texts / texts, per class",
        ),
    ]
    sections += ["<h3>Lowest kept ratios</h3>", html_table(lowest_kept(per_class).to_dicts(), limit=25)]
    labelled = summary.get("labels")
    if labelled:
        sections += ["<h2>Labelled relevance</h2>", html_table([labelled])]
        if curve is not None and not curve.is_empty():
            sections.append(svg_curve(curve, chosen=threshold))
    masked = summary.get("masked") or []
    if masked:
        sections += [
            "<h2>Class names masked</h2>",
            "<p class=note>Held-out texts that name their class, scored as written and with every lemma of "
            "the class replaced by a neutral word: where semantics, not keywords, decide.</p>",
            html_table(masked),
        ]
    body = "\n".join(sections)
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>imtext curation {esc(summary.get('run_id'))}"
        f"</title><style>{_STYLE}</style></head><body>{body}"
        f"<h2>Summary (JSON)</h2><pre>{esc(json.dumps(summary, indent=1, default=str))}</pre></body></html>"
    )


def write_report(text: str, reports_dir: str | Path, name: str) -> Path:
    """Write an HTML report under reports_dir (created) and return its absolute path."""
    folder = Path(reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / name).resolve()
    path.write_text(text, encoding="utf-8")
    return path


# -- the same reports as markdown artifacts, for the flow run's page in the Prefect UI ---------------
def curation_report_markdown(summary: dict, *, p_true, kept, per_class: pl.DataFrame, curve=None) -> str:
    """The curation report as markdown: decisions, policy, scorer, charts (inline images), lowest classes."""
    from tasks.markdown import escape, format_value, image_markdown, markdown_table

    threshold = (summary.get("policy") or {}).get("min_p_true")
    parts = [
        f"# Curation {escape(summary.get('run_id'))}",
        f"Warehouse snapshot {format_value(summary.get('snapshot'))}, training run "
        f"{format_value(summary.get('training_run'))}.",
        "## Decisions",
        markdown_table([decisions_row(summary)]),
        "## Policy",
        markdown_table([summary["policy"]] if summary.get("policy") else []),
        escape(policy_note(summary.get("policy") or {}, summary.get("thresholds"))),
        markdown_table([summary["thresholds"]]) if summary.get("thresholds") else "",
        "## Why texts were dropped",
        markdown_table(reason_rows(summary)),
        "## Scorer",
        f"**{escape(summary.get('scorer'))}**: {escape(summary.get('scorer_reason'))}",
        markdown_table(
            [{"kind": k, **v} for k, v in (summary.get("candidates") or {}).items()],
            ["kind", "macro_f1", "top1", "top5", "models"],
        ),
        markdown_table(evidence_rows(summary)) if summary.get("evidence") else "",
        "## Scores",
        image_markdown(
            svg_histogram(p_true, kept=kept, threshold=threshold, title="p_true of every scored text"),
            "p_true of every scored text, kept and dropped",
        ),
        "## Kept ratio per class",
        image_markdown(
            svg_ratio_bars(
                per_class["name"].to_list(),
                per_class["kept_ratio"].to_list(),
                title="kept texts / texts, per class",
                tooltips=False,
            ),
            "kept ratio per class",
        ),
        "### Lowest kept ratios",
        markdown_table(lowest_kept(per_class).head(25).to_dicts()),
    ]
    labelled = summary.get("labels")
    if labelled:
        parts += ["## Labelled relevance", markdown_table([labelled])]
        if curve is not None and not curve.is_empty():
            parts.append(image_markdown(svg_curve(curve, chosen=threshold), "precision against recall"))
    masked = summary.get("masked") or []
    if masked:
        parts += [
            "## Class names masked",
            "Held-out texts that name their class, scored as written and with every lemma of the class "
            "replaced by a neutral word.",
            markdown_table(masked),
        ]
    if summary.get("report"):
        parts.append(f"The HTML report was written to {escape(summary['report'])} on the machine of the run.")
    return "\n\n".join(parts) + "\n"


def training_report_markdown(
    run_id: str, rows: list[dict], curves: dict, balance: dict, params: dict, report_path: str | None = None
) -> str:
    """The training report as markdown: held-out metrics per model, the mean per kind, curves as images."""
    from tasks.markdown import escape, format_value, image_markdown, markdown_table
    from tasks.training_report import metrics_table, summary_by_kind, svg_lines

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
