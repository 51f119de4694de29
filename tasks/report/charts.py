"""The pieces of the HTML reports: page style, escaped values, tables and inline SVG charts (no plotting library)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

KEPT = "#2b8a3e"
DROPPED = "#c92a2a"
INK = "#343a40"
GRID = "#dee2e6"

PAGE_STYLE = """
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


def write_report(text: str, reports_dir: str | Path, name: str) -> Path:
    """Write an HTML report under reports_dir (created) and return its absolute path."""
    folder = Path(reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / name).resolve()
    path.write_text(text, encoding="utf-8")
    return path
