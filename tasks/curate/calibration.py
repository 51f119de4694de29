"""Calibration on held-out texts: one temperature per kind, the ensemble's weights, and the evidence.

Every fold's models see only texts of their own held-out fold, loaded once per (fold, kind); the
same pass scores the masked-class-name sample (`tasks.curate.masked`).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common.metrics import macro_f1, top1_accuracy
from tasks.common.probability import softmax as _softmax
from tasks.curate.masked import VERSIONS, masked_sample, masked_table
from tasks.curate.plan import KINDS, ScoringPlan
from tasks.curate.scorers import (
    DEFAULT_BATCH_SIZE,
    KeptBaseline,
    load_scorer,
    summarise,
    union_labels,
    widen,
)


def fit_weights(p_true_by_member: Sequence[np.ndarray], iterations: int = 200) -> list[float]:
    """Mixture weights that maximise the held-out likelihood of the true classes (EM on the simplex).

    `p_true_by_member[k][i]` is member k's calibrated probability of text i's labelled class. A member
    that explains the held-out texts no better than the others loses weight; one that is never
    better ends near zero.
    """
    p = np.clip(np.vstack([np.asarray(x, dtype=np.float64) for x in p_true_by_member]), 1e-12, None)
    k = p.shape[0]
    if p.shape[1] == 0:
        return [1.0 / k] * k
    w = np.full(k, 1.0 / k)
    for _ in range(iterations):
        resp = w[:, None] * p
        resp /= resp.sum(axis=0, keepdims=True)
        new = resp.mean(axis=1)
        if np.abs(new - w).max() < 1e-6:
            w = new
            break
        w = new
    return [float(x) for x in w]


def fit_temperature(log_probs: np.ndarray, labels: Sequence[str], true_wnids: Sequence[str]) -> float:
    """The temperature that makes softmax(log_probs / T) fit the held-out labels best (max likelihood)."""
    from tasks.model.baseline import fit_temperature as fit

    index = {w: i for i, w in enumerate(labels)}
    keep = [i for i, w in enumerate(true_wnids) if w in index]
    if not keep:
        return 1.0
    y = np.array([index[true_wnids[i]] for i in keep])
    return float(fit(np.asarray(log_probs)[keep], y))


def restore_calibration(plan: ScoringPlan, stored: dict[str, dict]) -> None:
    """Give the plan's ensembles the calibration stored by an earlier run (`store.read_ensembles`)."""
    for spec in plan.specs.values():
        if spec.model_id in stored:
            spec.temperatures = stored[spec.model_id]["temperatures"]
            spec.weights = stored[spec.model_id]["weights"]


def needs_calibration(plan: ScoringPlan, masked_texts: int) -> bool:
    """An ensemble not calibrated yet; or several kinds trained, so the masked-name table and the
    held-out evidence show every kind and the ensemble (2,000 texts are cheap)."""
    uncalibrated = plan.scorer == "ensemble" and any(s.temperatures is None for s in plan.specs.values())
    return uncalibrated or (len(plan.by_kind) >= 2 and masked_texts > 0)


def _sample(frame: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    if frame.height <= n:
        return frame
    keyed = frame.with_columns(
        pl.col("text_id").hash(seed=seed).alias("_key")  # stable order, independent of row order
    )
    return keyed.sort("_key").head(n).drop("_key")


@dataclass
class _HeldOutScores:
    """Log-probabilities (with their labels) of held-out texts, per kind and fold."""

    kinds: list[str]
    calibration: dict[str, list] = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)
    truth: list[str] = field(default_factory=list)
    masked: dict[str, dict[str, list]] = field(default_factory=dict)
    masked_truth: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.calibration = {k: [] for k in self.kinds}
        self.labels = {k: [] for k in self.kinds}
        self.masked = {k: {v: [] for v in VERSIONS} for k in self.kinds}


def _score_held_out(
    plan: ScoringPlan,
    kinds: list[str],
    out_of_fold: pl.DataFrame,
    masked_frame: pl.DataFrame,
    *,
    per_fold: int | None,
    seed: int,
    batch_size: int,
    device,
    kept: KeptBaseline | None = None,
) -> _HeldOutScores:
    """Each fold's models on a sample of their held-out texts (`per_fold` None: no sample) and on
    the masked-name texts of that fold."""
    out = _HeldOutScores(kinds)
    for fold in range(plan.folds):
        sample = (
            _sample(out_of_fold.filter(pl.col("fold") == fold), per_fold, seed)
            if per_fold is not None
            else None
        )
        masked = masked_frame.filter(pl.col("fold") == fold)
        if (sample is None or sample.is_empty()) and masked.is_empty():
            continue
        if sample is not None:
            out.truth.extend(sample["wnid"].to_list())
        out.masked_truth.extend(masked["wnid"].to_list())
        for kind in kinds:
            scorer = load_scorer(plan.by_kind[kind][fold], batch_size=batch_size, device=device, kept=kept)
            if sample is not None and not sample.is_empty():
                out.calibration[kind].append(
                    (scorer.log_proba(sample["text"].fill_null("").to_list()), scorer.labels)
                )
            if not masked.is_empty():
                out.masked[kind]["plain"].append((scorer.log_proba(masked["text"].to_list()), scorer.labels))
                out.masked[kind]["masked"].append(
                    (scorer.log_proba(masked["masked"].to_list()), scorer.labels)
                )
            out.labels[kind] = scorer.labels
            del scorer
            gc.collect()
    return out


def _evidence(
    probs: dict[str, np.ndarray], labels: list[str], truth: list[str]
) -> tuple[dict[str, float], dict[str, dict]]:
    """Mixture weights of the calibrated kinds, and each kind's (and the ensemble's) held-out record:
    mean log-likelihood of the true class, top-1, macro-F1 and weight."""
    p_true = {k: summarise(p, labels, truth)["p_true"] for k, p in probs.items()}
    weights = dict(zip(probs, fit_weights(list(p_true.values())), strict=True))
    mixed = sum(w * probs[k] for k, w in weights.items())
    evidence = {}
    for name, pr in [*probs.items(), ("ensemble", mixed)]:
        s = summarise(pr, labels, truth)
        pred = list(s["pred_wnid"])
        evidence[name] = {
            "log_likelihood": float(np.mean(np.log(np.clip(s["p_true"], 1e-12, None)))),
            "top1": top1_accuracy(pred, truth),
            "macro_f1": macro_f1(pred, truth),
            "weight": weights.get(name),
        }
    return weights, evidence


def held_out_pass(
    plan: ScoringPlan,
    assigned: pl.DataFrame,
    lemmas: dict[str, list[str]],
    *,
    calibrate: bool,
    calibration_texts: int = 2000,
    masked_texts: int = 500,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device=None,
    seed: int = 0,
    temperatures: dict[str, float] | None = None,
    kept: KeptBaseline | None = None,
) -> dict:
    """Held-out work over every fold, one model load per (fold, kind); the last baseline stays in `kept`.

    Fits one temperature per kind on held-out texts (labelled with their image's class) when
    `calibrate`, and measures every kind (and the ensemble) on texts that name their class, as
    written and with the class name masked (`mask_class_names`).
    """
    kinds = [k for k in KINDS if k in plan.by_kind]
    out_of_fold = assigned.filter(pl.col("role") == "out-of-fold")
    per_fold = max(1, calibration_texts // max(plan.folds, 1)) if calibrate else None
    # Only texts that name their class tell semantics from keywords once masked.
    masked_frame = masked_sample(out_of_fold, lemmas, masked_texts, seed)
    held = _score_held_out(
        plan,
        kinds,
        out_of_fold,
        masked_frame,
        per_fold=per_fold,
        seed=seed,
        batch_size=batch_size,
        device=device,
        kept=kept,
    )
    labels = union_labels([held.labels[k] for k in kinds if held.labels[k]])
    cal = held.calibration
    fitted = dict(temperatures or {})
    if calibrate:
        for kind in kinds:
            if cal[kind]:
                lp = np.concatenate([widen(a, labels) for a in cal[kind]])
                fitted[kind] = fit_temperature(lp, labels, held.truth)
    result: dict = {"temperatures": fitted, "calibration_texts": len(held.truth), "masked": []}
    calibrated = [k for k in kinds if k in fitted and cal[k]]
    if len(calibrated) >= 2 and held.truth:
        # The evidence auto and the ensemble decide by: each kind's calibrated probability of the
        # held-out texts' classes, and the mixture weights that explain them best.
        probs = {
            k: _softmax(np.concatenate([widen(a, labels) for a in cal[k]]) / fitted[k]) for k in calibrated
        }
        result["weights"], result["evidence"] = _evidence(probs, labels, held.truth)
    if held.masked_truth:
        result["masked"] = masked_table(
            kinds, held.masked, held.masked_truth, labels, fitted, result.get("weights")
        )
    return result


def ensemble_rows(
    plan: ScoringPlan, temperatures: dict[str, float], run_id: str, weights: dict[str, float] | None = None
) -> list[dict]:
    """`ensembles` rows for the plan's ensembles (the calibration each one scores with)."""
    import datetime as dt

    rows = []
    now = dt.datetime.now(dt.UTC)
    for spec in plan.specs.values():
        if spec.kind != "ensemble":
            continue
        spec.temperatures = spec.temperatures or [temperatures.get(m.kind, 1.0) for m in spec.members]
        if spec.weights is None and weights:
            spec.weights = [weights.get(m.kind, 0.0) for m in spec.members]
        rows.append(
            {
                "model_id": spec.model_id,
                "fold": spec.fold,
                "members": json.dumps([m.model_id for m in spec.members]),
                "calibration": json.dumps(
                    {
                        "method": "temperature",
                        "temperatures": spec.temperatures,
                        "weights": spec.weights,
                        "kinds": [m.kind for m in spec.members],
                    }
                ),
                "training_run": plan.training_run,
                "created_at": now,
                "run_id": run_id,
            }
        )
    return rows


@task(name="held-out-pass", tags=["gpu"], cache_policy=NO_CACHE)
def held_out_task(plan: ScoringPlan, assigned: pl.DataFrame, lemmas: dict, **kwargs) -> dict:
    """Calibrate the ensemble's members and run the masked-name evaluation on held-out texts."""
    return held_out_pass(plan, assigned, lemmas, **kwargs)
