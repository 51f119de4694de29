"""The curation report: decisions, policy, scorer, drop reasons and charts, as HTML and as markdown."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

from tasks.report.charts import PAGE_STYLE, esc, html_table, svg_curve, svg_histogram, svg_ratio_bars
from tasks.report.markdown import escape, format_value, image_markdown, markdown_table


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


# -- the report's sections, listed once and rendered as HTML or as markdown -------------------------
# The markdown goes to the flow run's page in the Prefect UI; a block marked `only` appears in one
# of the two renderings.
@dataclass(frozen=True)
class Title:
    """The report's heading: the curation run it is about."""

    run_id: object


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2
    only: str | None = None


@dataclass(frozen=True)
class Note:
    """A line of prose, escaped by the renderer unless it is one of the report's own sentences (`fixed`)."""

    text: str
    only: str | None = None
    fixed: bool = False


@dataclass(frozen=True)
class Lead:
    """A bold term and what it means: the chosen scorer and why."""

    term: object
    text: object


@dataclass(frozen=True)
class Table:
    rows: Sequence[dict]
    columns: Sequence[str] | None = None
    limit: int | None = None  # rows shown; the HTML says how many more there are
    only: str | None = None


@dataclass(frozen=True)
class Chart:
    """An SVG chart: inline in HTML, a data-URI image with `alt` text in markdown."""

    draw: Callable[[bool], str]  # the SVG; the argument says whether it may carry tooltips
    alt: str


@dataclass(frozen=True)
class Blank:
    """An empty section: a block that is absent, kept so the spacing of the report stays as it was."""

    only: str | None = None


def _shown(value) -> str:
    return "" if value is None else str(value)


def curation_sections(summary: dict, *, p_true, kept, per_class: pl.DataFrame, curve=None) -> list:
    """Decisions, policy, drop reasons, scorer, charts, lowest classes, labels and masked names, in order."""
    policy = summary.get("policy") or {}
    threshold = policy.get("min_p_true")
    snapshot, training_run = summary.get("snapshot"), summary.get("training_run")
    finished = summary.get("finished_at", dt.datetime.now(dt.UTC).isoformat())
    sections = [
        Title(summary.get("run_id")),
        Note(
            f"{_shown(finished)} · warehouse snapshot {_shown(snapshot)} · training run {_shown(training_run)}",
            "html",
        ),
        Note(
            f"Warehouse snapshot {format_value(snapshot, markdown=False)}, training run "
            f"{format_value(training_run, markdown=False)}.",
            "markdown",
        ),
        Heading("Decisions"),
        Table([decisions_row(summary)]),
        Heading("Policy"),
        Table([summary.get("policy", {})], only="html"),
        Table([summary["policy"]] if summary.get("policy") else [], only="markdown"),
        Note(policy_note(policy, summary.get("thresholds"))),
        Table([summary["thresholds"]]) if summary.get("thresholds") else Blank(),
        Heading("Why texts were dropped"),
        Table(reason_rows(summary)),
        Heading("Scorer"),
        Lead(summary.get("scorer"), summary.get("scorer_reason")),
        Table(
            [{"kind": k, **v} for k, v in (summary.get("candidates") or {}).items()],
            ["kind", "macro_f1", "top1", "top5", "models"],
        ),
    ]
    if summary.get("evidence"):
        sections += [
            Heading("Held-out evidence", 3, only="html"),
            Note(
                "Calibrated probability of the held-out texts' classes per kind and for the weighted "
                "ensemble (weights fitted on these texts).",
                "html",
                fixed=True,
            ),
            Table(evidence_rows(summary)),
        ]
    else:
        sections.append(Blank("markdown"))
    temperatures = summary.get("temperatures") or {}
    if temperatures:
        calibration = ", ".join(f"{_shown(k)} {v:.3g}" for k, v in temperatures.items())
        sections.append(
            Note(
                f"Ensemble calibration (temperature per kind, fitted on held-out folds): {calibration}",
                "html",
            )
        )
    sections += [
        Heading("Scores"),
        Chart(
            lambda _: svg_histogram(
                p_true, kept=kept, threshold=threshold, title="p_true of every scored text"
            ),
            "p_true of every scored text, kept and dropped",
        ),
        Heading("Kept ratio per class"),
        Chart(
            lambda tooltips: svg_ratio_bars(
                per_class["name"].to_list(),
                per_class["kept_ratio"].to_list(),
                title="kept texts / texts, per class",
                tooltips=tooltips,
            ),
            "kept ratio per class",
        ),
        Heading("Lowest kept ratios", 3),
        Table(lowest_kept(per_class).to_dicts(), limit=25),
    ]
    labelled = summary.get("labels")
    if labelled:
        sections += [Heading("Labelled relevance"), Table([labelled])]
        if curve is not None and not curve.is_empty():
            sections.append(Chart(lambda _: svg_curve(curve, chosen=threshold), "precision against recall"))
    masked = summary.get("masked") or []
    if masked:
        held_out = (
            "Held-out texts that name their class, scored as written and with every lemma of the class "
            "replaced by a neutral word"
        )
        sections += [
            Heading("Class names masked"),
            Note(f"{held_out}: where semantics, not keywords, decide.", "html", fixed=True),
            Note(f"{held_out}.", "markdown", fixed=True),
            Table(masked),
        ]
    if summary.get("report"):
        sections.append(
            Note(f"The HTML report was written to {summary['report']} on the machine of the run.", "markdown")
        )
    return sections


def _html(block) -> str:
    match block:
        case Title():
            return f"<h1>Curation {esc(block.run_id)}</h1>"
        case Heading():
            return f"<h{block.level}>{esc(block.text)}</h{block.level}>"
        case Note():
            return f"<p class=note>{block.text if block.fixed else esc(block.text)}</p>"
        case Lead():
            return f"<p><b>{esc(block.term)}</b>: {esc(block.text)}</p>"
        case Table():
            return html_table(block.rows, block.columns, limit=block.limit)
        case Chart():
            return block.draw(True)
    return ""


def _markdown(block) -> str:
    match block:
        case Title():
            return f"# Curation {escape(block.run_id)}"
        case Heading():
            return "#" * block.level + f" {escape(block.text)}"
        case Note():
            return block.text if block.fixed else escape(block.text)
        case Lead():
            return f"**{escape(block.term)}**: {escape(block.text)}"
        case Table():
            return markdown_table(block.rows[: block.limit] if block.limit else block.rows, block.columns)
        case Chart():
            return image_markdown(block.draw(False), block.alt)
    return ""


def _rendered(sections: list, fmt: str, render: Callable) -> list[str]:
    return [render(block) for block in sections if getattr(block, "only", None) in (None, fmt)]


def curation_report_html(
    summary: dict,
    *,
    p_true,
    kept,
    per_class: pl.DataFrame,
    curve: pl.DataFrame | None = None,
) -> str:
    """The curation report: decisions, scorer choice, score histogram, kept ratio per class, labels, masked names."""
    sections = curation_sections(summary, p_true=p_true, kept=kept, per_class=per_class, curve=curve)
    body = "\n".join(_rendered(sections, "html", _html))
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>imtext curation {esc(summary.get('run_id'))}"
        f"</title><style>{PAGE_STYLE}</style></head><body>{body}"
        f"<h2>Summary (JSON)</h2><pre>{esc(json.dumps(summary, indent=1, default=str))}</pre></body></html>"
    )


def curation_report_markdown(summary: dict, *, p_true, kept, per_class: pl.DataFrame, curve=None) -> str:
    """The curation report as markdown: decisions, policy, scorer, charts (inline images), lowest classes."""
    sections = curation_sections(summary, p_true=p_true, kept=kept, per_class=per_class, curve=curve)
    return "\n\n".join(_rendered(sections, "markdown", _markdown)) + "\n"
