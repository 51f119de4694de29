"""The curation report: decisions, policy, scorer, drop reasons and charts, as HTML and as markdown."""

from __future__ import annotations

import datetime as dt
import json

import polars as pl

from tasks.report.charts import PAGE_STYLE, esc, html_table, svg_curve, svg_histogram, svg_ratio_bars


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
        f"</title><style>{PAGE_STYLE}</style></head><body>{body}"
        f"<h2>Summary (JSON)</h2><pre>{esc(json.dumps(summary, indent=1, default=str))}</pre></body></html>"
    )


# -- the same reports as markdown artifacts, for the flow run's page in the Prefect UI ---------------
def curation_report_markdown(summary: dict, *, p_true, kept, per_class: pl.DataFrame, curve=None) -> str:
    """The curation report as markdown: decisions, policy, scorer, charts (inline images), lowest classes."""
    from tasks.report.markdown import escape, format_value, image_markdown, markdown_table

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
