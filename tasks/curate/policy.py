"""The keep/drop policy of curation, and why each dropped text was dropped.

Two modes.

`relative` (the default) decides per class from out-of-fold evidence, in the spirit of confident
learning: a class's threshold `t[c]` is the mean out-of-fold probability that the scorers give the
texts labelled with class c (shrunk towards the mean over all classes when a class has few texts, so
ten texts do not set a threshold alone). A probability means something different for a model
trained on ten texts per class than for one trained on a thousand, and for dog breeds than for
volcanoes; a threshold measured on the class itself absorbs both. A text of class y is then

- dropped as `junk` when harvesting marked it junk and it does not reach `max(t[y], junk_min_p_true)`;
- dropped as `another class <wnid>` when the class the scorer prefers is another one, reaches that
  class's own threshold, gets at least `other_margin` times the probability of the text's own class,
  and the text's own class does not reach its threshold;
- dropped as `fits no class` when its own class gets less than `fit_ratio * t[y]`;
- kept otherwise.

How much a low probability says depends on how strong the scorer is, and the mean out-of-fold
probability `g` of every text's own class measures that without labels (0.72-0.79 on the dev sets
whose texts name their class, 0.26 with ten texts per class that never name it). A weak scorer
often puts a relevant text's class second, a little behind a neighbour, and gives relevant texts
probabilities far below their class's mean; a description of another class still puts that class
far ahead. So by default both rules scale with `g`: `fit_ratio = fit_scale * g` and
`other_margin = g ** -margin_power` (about 1.6 for a strong scorer, 15 for a weak one). Either can
be fixed instead.

`fixed` (asked for with `--min-p-true` or `--top-k`) keeps a text when `p_true >= min_p_true` or its
class ranks within the top k; a junk-marked text needs `p_true >= max(min_p_true, junk_min_p_true)`.
Drops are `junk` or `below threshold`.

`fit_scale`, `margin_power` and `prior_texts` were chosen with `bench/tune_policy.py` on the
development relevance sets (`bench/data/relevance/dev-*`, ~10 and ~50 texts per class, with and
without class names), never on the evaluation sets.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from tasks.common.errors import InputError

DEFAULT_MIN_P_TRUE: float | None = None  # None: the relative policy
DEFAULT_TOP_K = 0
DEFAULT_JUNK_MIN_P_TRUE = 0.5
DEFAULT_FIT_SCALE = 0.45
DEFAULT_MARGIN_POWER = 2.0
DEFAULT_PRIOR_TEXTS = 5.0
# What a provisional decision uses while scores are written, before the class thresholds exist.
PROVISIONAL_MIN_P_TRUE = 0.2

REASON_JUNK = "junk"
REASON_OTHER = "another class"
REASON_NONE = "fits no class"
REASON_BELOW = "below threshold"
REASONS = (REASON_JUNK, REASON_OTHER, REASON_NONE, REASON_BELOW)


@dataclass(frozen=True)
class Policy:
    """The keep/drop rule; `threshold_source` says where it came from (default, user, labels)."""

    min_p_true: float | None = DEFAULT_MIN_P_TRUE
    top_k: int = DEFAULT_TOP_K
    junk_min_p_true: float = DEFAULT_JUNK_MIN_P_TRUE
    fit_ratio: float | None = None  # None: fit_scale x the mean out-of-fold probability
    other_margin: float | None = None  # None: that mean ** -margin_power
    fit_scale: float = DEFAULT_FIT_SCALE
    margin_power: float = DEFAULT_MARGIN_POWER
    prior_texts: float = DEFAULT_PRIOR_TEXTS
    threshold_source: str = "default"

    def __post_init__(self) -> None:
        if self.min_p_true is not None and not 0.0 <= self.min_p_true <= 1.0:
            raise InputError(f"--min-p-true must be within [0, 1], not {self.min_p_true}")
        if self.top_k < 0:
            raise InputError(f"--top-k must be 0 (off) or more, not {self.top_k}")
        if not 0.0 <= self.junk_min_p_true <= 1.0:
            raise InputError(f"--junk-min-p-true must be within [0, 1], not {self.junk_min_p_true}")
        if self.fit_ratio is not None and not 0.0 <= self.fit_ratio <= 1.0:
            raise InputError(f"the fit ratio must be within [0, 1], not {self.fit_ratio}")
        if self.other_margin is not None and not self.other_margin >= 1.0:
            raise InputError(f"the other-class margin must be 1 or more, not {self.other_margin}")
        if not 0.0 <= self.fit_scale <= 1.0:
            raise InputError(f"the fit scale must be within [0, 1], not {self.fit_scale}")
        if not 0.0 <= self.margin_power <= 10.0:
            raise InputError(f"the margin power must be within [0, 10], not {self.margin_power}")
        if self.prior_texts < 0:
            raise InputError(f"the threshold prior must be 0 or more texts, not {self.prior_texts}")

    @property
    def mode(self) -> str:
        return "fixed" if self.min_p_true is not None or self.top_k > 0 else "relative"

    @property
    def fixed_threshold(self) -> float:
        """`min_p_true` of the fixed rule (a rank-only rule keeps nothing by probability)."""
        if self.min_p_true is not None:
            return self.min_p_true
        return PROVISIONAL_MIN_P_TRUE if self.top_k == 0 else 1.0 + 1e-9

    def keep(self, p_true, true_rank, junk=None) -> np.ndarray:
        """Fixed-rule keep flags for arrays of scores (in relative mode: the provisional decision)."""
        p = np.asarray(p_true, dtype=np.float64)
        rank = np.asarray(true_rank, dtype=np.int64)
        junk = np.zeros(p.shape, dtype=bool) if junk is None else np.asarray(junk, dtype=bool)
        threshold = self.fixed_threshold
        clean = (p >= threshold) | ((rank <= self.top_k) & (self.top_k > 0))
        marked = p >= max(min(threshold, 1.0), self.junk_min_p_true)
        return np.where(junk, marked, clean)

    def scaled(self, overall: float) -> tuple[float, float]:
        """(fit_ratio, other_margin) for a scorer whose mean out-of-fold p_true is `overall`."""
        g = min(max(overall, 1e-6), 1.0)
        fit = self.fit_ratio if self.fit_ratio is not None else self.fit_scale * g
        margin = self.other_margin if self.other_margin is not None else g**-self.margin_power
        return fit, margin

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "mode": self.mode}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


def class_thresholds(
    wnids: Sequence[str], p_true, usable=None, prior_texts: float = DEFAULT_PRIOR_TEXTS
) -> tuple[dict[str, float], float]:
    """Per class, the shrunk mean probability its labelled texts get: ({wnid: t}, global mean).

    `usable` marks the texts that count as evidence (out-of-fold, not junk-marked). A class with n
    texts of mean m gets (n*m + prior_texts*g) / (n + prior_texts), g the mean over every usable text.
    """
    frame = pl.DataFrame(
        {"wnid": pl.Series(list(wnids), dtype=pl.String), "p": np.asarray(p_true, dtype=np.float64)}
    )
    if usable is not None:
        frame = frame.filter(pl.Series(np.asarray(usable, dtype=bool)))
    if frame.is_empty():
        return {}, PROVISIONAL_MIN_P_TRUE
    overall = float(frame["p"].mean())
    per = frame.group_by("wnid").agg(pl.col("p").sum().alias("s"), pl.len().alias("n"))
    thresholds = {w: (s + prior_texts * overall) / (n + prior_texts) for w, s, n in per.iter_rows()}
    return thresholds, overall


def decide(
    policy: Policy,
    *,
    wnid: Sequence[str],
    p_true,
    true_rank,
    pred_wnid: Sequence[str],
    pred_p,
    junk,
    evidence=None,
) -> tuple[np.ndarray, list[str | None], dict]:
    """Keep flags, the reason of every drop (None when kept), and what the decision used.

    `evidence` marks the texts whose scores may set the class thresholds (out-of-fold scores);
    junk-marked texts never do.
    """
    p = np.asarray(p_true, dtype=np.float64)
    junk = np.asarray(junk, dtype=bool)
    n = p.size
    if policy.mode == "fixed":
        kept = policy.keep(p, true_rank, junk)
        reasons = [
            None if k else (REASON_JUNK if j else REASON_BELOW) for k, j in zip(kept, junk, strict=True)
        ]
        return kept, reasons, {"mode": "fixed", "min_p_true": policy.fixed_threshold, "top_k": policy.top_k}

    usable = ~junk if evidence is None else (~junk & np.asarray(evidence, dtype=bool))
    thresholds, overall = class_thresholds(wnid, p, usable, policy.prior_texts)
    fit_ratio, other_margin = policy.scaled(overall)
    t_own = np.array([thresholds.get(w, overall) for w in wnid], dtype=np.float64)
    pred_p = np.asarray(pred_p, dtype=np.float64)
    t_pred = np.array([thresholds.get(w, overall) for w in pred_wnid], dtype=np.float64)
    other = (
        (np.asarray(pred_wnid, dtype=object) != np.asarray(wnid, dtype=object))
        & (pred_p >= t_pred)
        & (pred_p >= other_margin * p)
    )
    own_ok = p >= t_own
    drop_junk = junk & (p < np.maximum(t_own, policy.junk_min_p_true))
    drop_other = ~drop_junk & other & ~own_ok
    drop_none = ~drop_junk & ~drop_other & (p < fit_ratio * t_own)
    kept = ~(drop_junk | drop_other | drop_none)
    reasons: list[str | None] = [None] * n
    for i in np.flatnonzero(~kept):
        if drop_junk[i]:
            reasons[i] = REASON_JUNK
        elif drop_other[i]:
            reasons[i] = f"{REASON_OTHER} {pred_wnid[i]}"
        else:
            reasons[i] = REASON_NONE
    values = np.array(list(thresholds.values())) if thresholds else np.array([overall])
    used = {
        "mode": "relative",
        "classes": len(thresholds),
        "mean_threshold": float(values.mean()),
        "min_threshold": float(values.min()),
        "max_threshold": float(values.max()),
        "overall_mean_p_true": overall,
        "fit_ratio": fit_ratio,
        "other_margin": other_margin,
        "thresholds": {w: round(t, 6) for w, t in sorted(thresholds.items())},
    }
    return kept, reasons, used


def reason_kind(reason: str | None) -> str | None:
    """The reason without its wnid (`another class n01440764` -> `another class`)."""
    if reason is None:
        return None
    return REASON_OTHER if reason.startswith(REASON_OTHER) else reason
