"""The masked-class-name evaluation: do the scorers read meaning, or only the class name?

Held-out texts that name their class are scored as written and with every name of the class
replaced by a neutral word; a scorer that only matches keywords falls apart once masked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import polars as pl

from tasks.common.metrics import macro_f1, top1_accuracy
from tasks.common.probability import softmax as _softmax
from tasks.curate.scorers import summarise, widen

MASK_WORD = "thing"
VERSIONS = ("plain", "masked")


def mask_class_names(text: str, lemmas: Sequence[str], word: str = MASK_WORD) -> str:
    """The text with every lemma of the class (and its plural) replaced by a neutral word."""
    names = sorted({n.strip() for n in lemmas if n and n.strip()}, key=len, reverse=True)
    if not names or not text:
        return text
    pattern = re.compile(
        r"(?<!\w)(?:" + "|".join(re.escape(n) for n in names) + r")(?:e?s)?(?!\w)", re.IGNORECASE
    )
    return pattern.sub(word, text)


def lemma_table(con) -> dict[str, list[str]]:
    """wnid -> its lemmas (and its display name) from the classes table."""
    from warehouse.db import load_query

    rows = con.execute(load_query("curate_lemmas")).fetchall()
    return {
        w: sorted({name or "", *[x.strip() for x in (lemmas or "").split(",")]} - {""})
        for w, name, lemmas in rows
    }


def masked_sample(texts: pl.DataFrame, lemmas: dict[str, list[str]], n: int, seed: int) -> pl.DataFrame:
    """Up to n texts that name their class, with the masked version (a stable sample, not a scan of all)."""
    rows: list[tuple] = []
    if n > 0:
        ordered = texts.select("text_id", "text", "wnid", "fold").with_columns(
            pl.col("text_id").hash(seed=seed).alias("_key")
        )
        # Look at growing slices in a stable random order until n texts that name their class are found.
        ordered = ordered.sort("_key").drop("_key")
        start, step = 0, max(20 * n, 1000)
        while len(rows) < n and start < ordered.height:
            for row in ordered.slice(start, step).iter_rows():
                text = row[1] or ""
                masked = mask_class_names(text, lemmas.get(row[2], []))
                if masked != text:
                    rows.append((*row, masked))
                    if len(rows) == n:
                        break
            start += step
    return pl.DataFrame(
        rows,
        schema={
            "text_id": pl.String,
            "text": pl.String,
            "wnid": pl.String,
            "fold": pl.Int32,
            "masked": pl.String,
        },
        orient="row",
    )


def masked_table(
    kinds: Sequence[str],
    scored: dict[str, dict[str, list]],
    truth: Sequence[str],
    labels: Sequence[str],
    temperatures: dict[str, float],
    weights: dict[str, float] | None,
) -> list[dict]:
    """One row per kind (and the ensemble when weighted): top-1, macro-F1 and mean p_true, as written
    and masked. `scored[kind][version]` holds (log-probabilities, labels) per fold."""
    variants = {}
    for kind in kinds:
        for version in VERSIONS:
            lp = np.concatenate([widen(a, labels) for a in scored[kind][version]])
            variants[(kind, version)] = _softmax(lp)
    if weights:
        for version in VERSIONS:
            variants[("ensemble", version)] = sum(
                w * _softmax(np.log(np.clip(variants[(k, version)], 1e-30, None)) / temperatures[k])
                for k, w in weights.items()
            )
    rows = []
    for kind in [*kinds, "ensemble"]:
        if (kind, "plain") not in variants:
            continue
        row = {"scorer": kind, "texts": len(truth)}
        for version in VERSIONS:
            s = summarise(variants[(kind, version)], labels, truth)
            pred = list(s["pred_wnid"])
            row[f"top1_{version}"] = top1_accuracy(pred, truth)
            row[f"macro_f1_{version}"] = macro_f1(pred, truth)
            row[f"mean_p_true_{version}"] = float(np.mean(s["p_true"]))
        rows.append(row)
    return rows
