"""Curation: score every image text out-of-fold, decide keep/drop, measure the decisions.

Scorers. A text is judged by a model that never trained on it: the images are split into folds by
`tasks.folds.fold_of`, the fold-k model was trained on every fold but k, so it scores the texts of
fold k. Texts added after the models were trained (absent from the training snapshot) are scored by
the model trained on everything (fold -1) when there is one. Three kinds of scorer exist:
`transformer` (the fine-tuned classifier), `baseline` (TF-IDF + linear) and `ensemble` (the average
of the two's probabilities, each calibrated by one temperature fitted on held-out folds so they are
comparable). An ensemble is a row in `ensembles`; its id is what `text_scores.model_id` holds.

Policy. Keep a text when `p_true >= min_p_true` or `true_rank <= top_k` (0 turns the rank rule
off). A junk mark from harvesting (camera file name, boilerplate, ...) is evidence, not a verdict:
a junk-marked text is kept only when `p_true >= max(min_p_true, junk_min_p_true)`, so a junk-marked
text that plainly names its class survives. With a labelled set (JSONL of `{text_id, relevant}`),
`min_p_true` can be chosen as the lowest threshold whose kept texts reach a target precision.

Scores are written in Arrow batches as they come (one warehouse transaction each, anti-joined on
(text_id, model_id)), so a killed run resumes where it stopped and a re-run never adds a row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.errors import InputError
from tasks.folds import fold_of
from tasks.policy import (  # noqa: F401  (the policy's names are part of this module's interface)
    DEFAULT_JUNK_MIN_P_TRUE,
    DEFAULT_MIN_P_TRUE,
    DEFAULT_TOP_K,
    Policy,
    decide,
)
from tasks.probability import log_softmax as _log_softmax
from tasks.probability import softmax as _softmax

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256
DEFAULT_CHUNK_SIZE = 16_384
SCORERS = ("auto", "transformer", "baseline", "frozen", "similarity", "ensemble")
KINDS = ("transformer", "baseline", "frozen", "similarity")
MASK_WORD = "thing"


def is_junk(marks: pl.Series | Sequence[str | None]) -> np.ndarray:
    """A junk mark is any non-empty string (the harvesting step writes the reason)."""
    series = marks if isinstance(marks, pl.Series) else pl.Series(list(marks), dtype=pl.String)
    return series.fill_null("").str.strip_chars().str.len_chars().gt(0).to_numpy()


# -- labelled relevance ------------------------------------------------------------------------


def load_labels(path: str | Path) -> pl.DataFrame:
    """A JSONL file of `{"text_id": ..., "relevant": true|false}` as a frame (the last line wins)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no labels file at {path}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text_id, relevant = row["text_id"], row["relevant"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}:{number}: expected a JSON object with text_id and relevant") from None
        if not isinstance(relevant, bool) and relevant not in (0, 1):
            raise InputError(f"{path}:{number}: relevant must be true or false, not {relevant!r}")
        rows.append((str(text_id), bool(relevant)))
    if not rows:
        raise InputError(f"{path} holds no labels")
    frame = pl.DataFrame(rows, schema={"text_id": pl.String, "relevant": pl.Boolean}, orient="row")
    return frame.unique("text_id", keep="last", maintain_order=True)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def relevance_metrics(kept, relevant) -> dict:
    """Precision and recall of the keep and of the drop decisions against labelled relevance.

    `precision`/`recall` are those of the drop decisions (of the dropped texts, how many were
    irrelevant; of the irrelevant texts, how many were dropped); `keep_precision` is the purity of
    what the dataset keeps and `keep_recall` the share of relevant texts it keeps.
    """
    kept = np.asarray(kept, dtype=bool)
    relevant = np.asarray(relevant, dtype=bool)
    tp_keep = int((kept & relevant).sum())
    fp_keep = int((kept & ~relevant).sum())
    fn_keep = int((~kept & relevant).sum())
    tn_keep = int((~kept & ~relevant).sum())
    out = {
        "labelled": int(kept.size),
        "relevant": int(relevant.sum()),
        "irrelevant": int((~relevant).sum()),
        "kept": int(kept.sum()),
        "dropped": int((~kept).sum()),
        "keep_precision": _ratio(tp_keep, tp_keep + fp_keep),
        "keep_recall": _ratio(tp_keep, tp_keep + fn_keep),
        "drop_precision": _ratio(tn_keep, tn_keep + fn_keep),
        "drop_recall": _ratio(tn_keep, tn_keep + fp_keep),
    }
    out["precision"] = out["drop_precision"]
    out["recall"] = out["drop_recall"]
    return out


def pr_curve(p_true, relevant, *, always=None, floor=None) -> pl.DataFrame:
    """Precision/recall of the kept texts for every threshold on `p_true` (one row per threshold).

    `always` marks texts kept whatever the threshold (the rank rule); `floor` is a per-text lower
    bound on the threshold (the junk rule: a junk text needs `p_true >= junk_min_p_true` too).
    """
    p = np.asarray(p_true, dtype=np.float64)
    y = np.asarray(relevant, dtype=bool)
    always = np.zeros(p.shape, bool) if always is None else np.asarray(always, dtype=bool)
    floor = np.zeros(p.shape) if floor is None else np.asarray(floor, dtype=np.float64)
    total_relevant = int(y.sum())
    base_tp, base_n = int((always & y).sum()), int(always.sum())
    # A text the threshold can keep is kept for every threshold <= its p_true (if above its floor).
    free = ~always & (p >= floor)
    order = np.argsort(-p[free], kind="stable")
    values = p[free][order]
    tp = np.cumsum(y[free][order])
    n = np.arange(1, values.size + 1)
    # Keep the last position of each distinct value: the threshold t = value keeps all >= t.
    last = np.r_[values[1:] != values[:-1], True] if values.size else np.array([], bool)
    thresholds = np.r_[values[last], np.nextafter(1.0, 2.0)] if values.size else np.array([1.0])
    kept = np.r_[base_n + n[last], base_n] if values.size else np.array([base_n])
    true_pos = np.r_[base_tp + tp[last], base_tp] if values.size else np.array([base_tp])
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(kept > 0, true_pos / np.maximum(kept, 1), np.nan)
        recall = true_pos / total_relevant if total_relevant else np.full(kept.shape, np.nan)
    frame = pl.DataFrame(
        {"threshold": thresholds, "kept": kept, "precision": precision, "recall": recall},
        schema={"threshold": pl.Float64, "kept": pl.Int64, "precision": pl.Float64, "recall": pl.Float64},
    )
    return frame.with_columns(pl.col("precision").fill_nan(None)).sort("threshold")


def choose_threshold(curve: pl.DataFrame, target_precision: float) -> tuple[float, bool]:
    """The threshold with the highest recall whose kept texts reach `target_precision`.

    Returns (threshold, reached). When no threshold reaches the target, the most precise one.
    """
    if not 0.0 < target_precision <= 1.0:
        raise InputError(f"--target-precision must be within (0, 1], not {target_precision}")
    usable = curve.filter(pl.col("precision").is_not_null())
    if usable.is_empty():
        return 1.0, False
    reaching = usable.filter(pl.col("precision") >= target_precision - 1e-12)
    if not reaching.is_empty():
        best = reaching.sort(["recall", "threshold"], descending=[True, True]).row(0, named=True)
        return min(float(best["threshold"]), 1.0), True
    best = usable.sort(["precision", "recall"], descending=[True, True]).row(0, named=True)
    return min(float(best["threshold"]), 1.0), False


# -- scorers -----------------------------------------------------------------------------------


class TransformerScorer:
    """A saved classifier behind the scorer interface: `.labels`, `.log_proba(texts)`.

    Fast inference: texts are tokenised once without padding, sorted by length and scored in large
    batches padded to their own longest text, under `torch.inference_mode`, in bf16 on CUDA.
    """

    kind = "transformer"

    def __init__(self, model, tokenizer, *, batch_size: int = DEFAULT_BATCH_SIZE, device=None):
        import torch

        from tasks.classifier import default_device, labels_of, max_length_of

        self.device = torch.device(device) if device is not None else default_device()
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            model = model.to(torch.bfloat16)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length_of(model)
        self.labels = labels_of(model)

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> TransformerScorer:
        from tasks.classifier import load_classifier

        model, tokenizer = load_classifier(path)
        return cls(model, tokenizer, **kwargs)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        from tasks.classifier import predict_logits

        return predict_logits(
            self.model,
            self.tokenizer,
            [t or "" for t in texts],
            batch_size=self.batch_size,
            max_length=self.max_length,
            device=self.device,
        )

    def log_proba(self, texts: Sequence[str]) -> np.ndarray:
        return _log_softmax(self.logits(texts))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.exp(self.log_proba(texts))


class BaselineScorer:
    """A saved TF-IDF + linear baseline behind the scorer interface."""

    kind = "baseline"

    def __init__(self, model):
        self.model = model
        self.labels = list(model.labels)

    @classmethod
    def load(cls, path: str | Path, **_) -> BaselineScorer:
        from tasks.baseline import load_baseline

        return cls(load_baseline(path))

    def log_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = [t or "" for t in texts]
        if hasattr(self.model, "decision_function") and hasattr(self.model, "temperature"):
            return _log_softmax(self.model.decision_function(texts) / self.model.temperature)
        return np.log(np.clip(self.model.predict_proba(texts), 1e-30, None))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.exp(self.log_proba(texts))


class EnsembleScorer:
    """A weighted average of its members' probabilities, each sharpened or softened by its temperature.

    Weights default to equal; the curate flow fits them on held-out texts (`fit_weights`).
    """

    kind = "ensemble"

    def __init__(
        self, members: Sequence, temperatures: Sequence[float], weights: Sequence[float] | None = None
    ):
        if len(members) != len(temperatures) or not members:
            raise ValueError("an ensemble needs one temperature per member")
        self.members = list(members)
        self.temperatures = [float(t) for t in temperatures]
        weights = [1.0] * len(self.members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(self.members) or sum(weights) <= 0:
            raise ValueError("an ensemble needs one non-negative weight per member, not all zero")
        total = sum(weights)
        self.weights = [w / total for w in weights]
        labels: list[str] = []
        for member in self.members:
            labels.extend(w for w in member.labels if w not in set(labels))
        self.labels = labels
        index = {w: i for i, w in enumerate(labels)}
        self._columns = [np.array([index[w] for w in m.labels]) for m in self.members]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for member, temperature, weight, columns in zip(
            self.members, self.temperatures, self.weights, self._columns, strict=True
        ):
            if weight > 0:
                out[:, columns] += weight * _softmax(member.log_proba(texts) / temperature)
        return out.astype(np.float32)

    def log_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.log(np.clip(self.predict_proba(texts), 1e-30, None))


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


def summarise(probs: np.ndarray, labels: Sequence[str], true_wnids: Sequence[str]) -> dict[str, np.ndarray]:
    """Per text: p_true, true_rank (1 = best; ties count in the text's favour), pred_wnid, pred_p.

    A class the scorer has no output for gets p_true 0 and rank len(labels) + 1.
    """
    probs = np.asarray(probs)
    index = {w: i for i, w in enumerate(labels)}
    true_idx = np.array([index.get(w, -1) for w in true_wnids], dtype=np.int64)
    known = true_idx >= 0
    rows = np.arange(len(true_idx))
    p_true = np.where(known, probs[rows, np.maximum(true_idx, 0)], 0.0) if len(rows) else np.zeros(0)
    rank = (probs > p_true[:, None]).sum(axis=1) + 1 if len(rows) else np.zeros(0, np.int64)
    rank = np.where(known, rank, len(labels) + 1)
    pred = probs.argmax(axis=1) if len(rows) else np.zeros(0, np.int64)
    labels_arr = np.asarray(labels, dtype=object)
    return {
        "p_true": p_true.astype(np.float64),
        "true_rank": rank.astype(np.int32),
        "pred_wnid": labels_arr[pred] if len(rows) else np.zeros(0, object),
        "pred_p": probs[rows, pred].astype(np.float64) if len(rows) else np.zeros(0),
    }


def fit_temperature(log_probs: np.ndarray, labels: Sequence[str], true_wnids: Sequence[str]) -> float:
    """The temperature that makes softmax(log_probs / T) fit the held-out labels best (max likelihood)."""
    from tasks.baseline import fit_temperature as fit

    index = {w: i for i, w in enumerate(labels)}
    keep = [i for i, w in enumerate(true_wnids) if w in index]
    if not keep:
        return 1.0
    y = np.array([index[true_wnids[i]] for i in keep])
    return float(fit(np.asarray(log_probs)[keep], y))


# -- which models score which texts ------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A trained model row of the `models` table."""

    model_id: str
    kind: str
    fold: int
    folds: int
    seed: int
    path: str
    snapshot: int | None
    run_id: str
    base_model: str
    metrics: dict = field(default_factory=dict, hash=False, compare=False)
    run_status: str | None = None


@dataclass
class ScorerSpec:
    """One scorer of a curation: its id in text_scores, its fold, the models behind it."""

    model_id: str
    kind: str
    fold: int
    members: list[ModelRef]
    temperatures: list[float] | None = None
    weights: list[float] | None = None

    @property
    def role(self) -> str:
        return "new-texts" if self.fold < 0 else "out-of-fold"


@dataclass
class ScoringPlan:
    """Which scorer judges which fold, for one training run."""

    training_run: str
    scorer: str
    reason: str
    folds: int
    seed: int
    snapshot: int | None
    specs: dict[int, ScorerSpec]
    by_kind: dict[str, dict[int, ModelRef]]
    candidates: dict[str, dict] = field(default_factory=dict)

    @property
    def model_ids(self) -> list[str]:
        return [s.model_id for s in self.specs.values()]

    def spec(self, model_id: str) -> ScorerSpec:
        return next(s for s in self.specs.values() if s.model_id == model_id)


def _json(value) -> dict:
    if not value:
        return {}
    try:
        out = json.loads(value) if isinstance(value, str) else dict(value)
    except (ValueError, TypeError):
        return {}
    return out if isinstance(out, dict) else {}


def read_models(con) -> list[ModelRef]:
    """Every model of the `models` table (one row per model_id, latest wins)."""
    from warehouse.db import load_query

    rows = con.execute(load_query("curate_models")).pl().unique("model_id", keep="last", maintain_order=True)
    refs = []
    for row in rows.iter_rows(named=True):
        params = _json(row["params"])
        kind = params.get("kind") or ("baseline" if row["base_model"] == "tfidf-linear" else "transformer")
        refs.append(
            ModelRef(
                model_id=row["model_id"],
                kind=kind,
                fold=int(row["fold"]),
                folds=int(row["folds"] or params.get("folds") or 0),
                seed=int(params.get("seed", 0) or 0),
                path=row["path"],
                snapshot=row["snapshot"],
                run_id=row["run_id"],
                base_model=row["base_model"] or "",
                metrics=_json(row["metrics"]),
                run_status=row["run_status"],
            )
        )
    return refs


def _complete(models: list[ModelRef]) -> dict[int, ModelRef] | None:
    """fold -> model when every fold 0..K-1 of one cross-fitting has a model, else None."""
    if not models:
        return None
    folds = max(m.folds for m in models)
    by_fold = {m.fold: m for m in models if m.folds == folds}
    if folds < 2 or any(k not in by_fold for k in range(folds)):
        return None
    return by_fold


def _mean_metric(models: dict[int, ModelRef], name: str) -> float | None:
    values = [m.metrics.get(name) for k, m in models.items() if k >= 0]
    values = [float(v) for v in values if isinstance(v, int | float)]
    return sum(values) / len(values) if values else None


def ensemble_id(members: Sequence[ModelRef]) -> str:
    digest = hashlib.blake2b("+".join(m.model_id for m in members).encode(), digest_size=8).hexdigest()
    return f"ens-{digest}"


def plan_scoring(
    models: list[ModelRef], scorer: str = "auto", training_run: str | None = None
) -> ScoringPlan:
    """Pick the training run and the scorer kind, and the scorer of every fold.

    Default run: the latest one with a complete cross-fitting of the kind(s) needed. `ensemble`
    combines every kind the run trained completely; `auto` is that ensemble when there are two kinds
    or more (its weights are fitted on held-out texts, so a kind that does not help gets none), else
    the one kind there is.
    """
    if scorer not in SCORERS:
        raise InputError(f"--scorer must be one of {', '.join(SCORERS)}, not {scorer!r}")
    runs: dict[str, dict[str, list[ModelRef]]] = {}
    order: list[str] = []
    for m in models:  # models arrive oldest first
        if m.run_id not in runs:
            order.append(m.run_id)
        runs.setdefault(m.run_id, {}).setdefault(m.kind, []).append(m)
    if training_run is not None and training_run not in runs:
        raise InputError(f"no models were trained by the training run {training_run!r}")
    # A run still training or failed is passed over unless named (runs without a status row count as done).
    unfinished = {m.run_id for m in models if m.run_status in ("running", "failed")}
    candidates_runs = [training_run] if training_run else [r for r in reversed(order) if r not in unfinished]
    needed = {"auto": None, "ensemble": None}.get(scorer, [scorer])
    least = 2 if scorer == "ensemble" else 1
    for run in candidates_runs:
        complete = {k: c for k in KINDS if (c := _complete(runs[run].get(k, []))) is not None}
        if needed is None:
            if len(complete) >= least:
                break
        elif all(k in complete for k in needed):
            break
    else:
        what = (
            "two kinds of " if scorer == "ensemble" else "" if needed is None else " and ".join(needed) + " "
        )
        where = f"the training run {training_run}" if training_run else "no finished training run"
        verb = "holds" if training_run else "has"
        hint = "run `imtext train` first"
        skipped = [r for r in reversed(order) if r in unfinished]
        if skipped and not training_run:
            status = next(m.run_status for m in models if m.run_id == skipped[0])
            hint += f" (the latest run {skipped[0]} is {status}; --training-run {skipped[0]} uses its models anyway)"
        raise InputError(
            f"{where} {verb} a complete cross-fitted set of {what}models (every fold 0..K-1): {hint}"
        )
    by_kind = {k: complete[k] for k in complete}
    candidates = {
        k: {
            "macro_f1": _mean_metric(v, "macro_f1"),
            "top1": _mean_metric(v, "top1"),
            "top5": _mean_metric(v, "top5"),
            "models": len([f for f in v if f >= 0]),
        }
        for k, v in by_kind.items()
    }
    if scorer == "auto":
        scorer, reason = _auto_choice(candidates)
    else:
        reason = f"--scorer {scorer} was asked for"
    kinds = [k for k in KINDS if k in by_kind] if scorer == "ensemble" else [scorer]
    folds_seen = {
        (next(iter(by_kind[k].values())).folds, next(iter(by_kind[k].values())).seed) for k in kinds
    }
    if len(folds_seen) != 1:
        raise InputError(f"the {' and '.join(kinds)} models of run {run} were cross-fitted differently")
    folds, seed = folds_seen.pop()
    fold_ids = sorted({f for k in kinds for f in by_kind[k]}, key=lambda f: (f < 0, f))
    specs: dict[int, ScorerSpec] = {}
    for f in fold_ids:
        if not all(f in by_kind[k] for k in kinds):
            continue
        members = [by_kind[k][f] for k in kinds]
        model_id = members[0].model_id if len(members) == 1 else ensemble_id(members)
        specs[f] = ScorerSpec(model_id=model_id, kind=scorer, fold=f, members=members)
    snapshots = [m.snapshot for k in kinds for m in by_kind[k].values() if m.snapshot is not None]
    return ScoringPlan(
        training_run=run,
        scorer=scorer,
        reason=reason,
        folds=folds,
        seed=seed,
        snapshot=min(snapshots) if snapshots else None,
        specs=specs,
        by_kind=by_kind,
        candidates=candidates,
    )


def _auto_choice(candidates: dict[str, dict]) -> tuple[str, str]:
    if len(candidates) == 1:
        kind = next(iter(candidates))
        return kind, f"only {kind} models were trained in this run"
    kinds = ", ".join(
        f"{k} (held-out macro-F1 {v['macro_f1']:.3f})" if v.get("macro_f1") is not None else k
        for k, v in candidates.items()
    )
    return "ensemble", f"an ensemble of {kinds}, weighted by the likelihood of held-out texts"


def load_scorer(
    spec_or_ref: ScorerSpec | ModelRef, *, batch_size: int = DEFAULT_BATCH_SIZE, device=None, members=None
):
    """A ready scorer for a plan entry (or one model row)."""
    if isinstance(spec_or_ref, ModelRef):
        ref = spec_or_ref
        if ref.kind == "baseline":
            return BaselineScorer.load(ref.path)
        if ref.kind in ("frozen", "similarity"):
            from tasks.encoders import EncoderScorer

            return EncoderScorer.load(ref.path, device=device)
        return TransformerScorer.load(ref.path, batch_size=batch_size, device=device)
    spec = spec_or_ref
    loaded = members or [load_scorer(m, batch_size=batch_size, device=device) for m in spec.members]
    if spec.kind == "ensemble":
        if spec.temperatures is None:
            raise ValueError(f"the ensemble {spec.model_id} is not calibrated")
        return EnsembleScorer(loaded, spec.temperatures, spec.weights)
    return loaded[0]


# -- texts -------------------------------------------------------------------------------------


def read_texts(con, training_snapshot: int | None) -> pl.DataFrame:
    """Every image text with its image's class; `trained` = present when the models were trained."""
    from warehouse.db import load_query

    texts = con.execute(load_query("curate_texts")).pl()
    if training_snapshot is None:
        return texts.with_columns(pl.lit(True).alias("trained"))
    try:
        seen = con.execute(load_query("curate_texts_at"), {"snapshot": int(training_snapshot)}).pl()
    except Exception as exc:  # an expired snapshot: fall back to the fold models (always safe)
        log.warning(
            "cannot read image_texts at snapshot %s (%s); every text counts as trained",
            training_snapshot,
            exc,
        )
        return texts.with_columns(pl.lit(True).alias("trained"))
    return texts.with_columns(pl.col("text_id").is_in(seen["text_id"].implode()).alias("trained"))


def read_folds(con, training_run: str) -> pl.DataFrame:
    """image_id -> fold as the training run split them (empty for runs that did not store folds)."""
    from warehouse.db import load_query

    return con.execute(load_query("curate_training_folds"), {"run": training_run}).pl()


def assign_scorers(texts: pl.DataFrame, plan: ScoringPlan, folds: pl.DataFrame | None = None) -> pl.DataFrame:
    """Add fold, model_id and role: the scorer that judges each text without having trained on it.

    `folds` (image_id, fold) are the training run's own folds, twins grouped; an image it does not
    list had no training text, so any fold is safe and `fold_of(image_id)` is used.
    """
    hashed = pl.Series("fold", [fold_of(i, plan.folds, plan.seed) for i in texts["image_id"].to_list()])
    out = texts.with_columns(hashed.cast(pl.Int32))
    if folds is not None and not folds.is_empty():
        stored = folds.select("image_id", pl.col("fold").cast(pl.Int32).alias("_stored"))
        out = (
            out.join(stored, on="image_id", how="left", maintain_order="left")
            .with_columns(pl.coalesce("_stored", "fold").alias("fold"))
            .drop("_stored")
        )
    full = plan.specs.get(-1)
    if full is not None:
        out = out.with_columns(
            pl.when(pl.col("trained")).then(pl.col("fold")).otherwise(-1).cast(pl.Int32).alias("fold")
        )
    ids = {f: s.model_id for f, s in plan.specs.items()}
    roles = {f: s.role for f, s in plan.specs.items()}
    return out.with_columns(
        pl.col("fold").replace_strict(ids, return_dtype=pl.String).alias("model_id"),
        pl.col("fold").replace_strict(roles, return_dtype=pl.String).alias("role"),
    )


def pending_texts(con, assigned: pl.DataFrame) -> pl.DataFrame:
    """The assigned texts that have no score from their scorer yet."""
    from warehouse.db import load_query

    ids = assigned["model_id"].unique().to_list()
    done = con.execute(load_query("curate_scored"), {"ids": ids}).pl()
    if done.is_empty():
        return assigned
    return assigned.join(done, on=["text_id", "model_id"], how="anti")


# -- scoring -----------------------------------------------------------------------------------


SCORE_SCHEMA = pa.schema(
    [
        ("text_id", pa.string()),
        ("model_id", pa.string()),
        ("p_true", pa.float64()),
        ("true_rank", pa.int32()),
        ("pred_wnid", pa.string()),
        ("pred_p", pa.float64()),
        ("kept", pa.bool_()),
        ("policy", pa.string()),
        ("run_id", pa.string()),
    ]
)


def score_table(scorer, texts: pl.DataFrame, model_id: str, policy: Policy, run_id: str) -> pa.Table:
    """Score one batch of texts (columns text_id, text, wnid, junk) into text_scores rows."""
    probs = scorer.predict_proba(texts["text"].fill_null("").to_list())
    s = summarise(probs, scorer.labels, texts["wnid"].to_list())
    kept = policy.keep(s["p_true"], s["true_rank"], is_junk(texts["junk"]))
    n = texts.height
    return pa.table(
        {
            "text_id": texts["text_id"].to_arrow(),
            "model_id": pa.array([model_id] * n, pa.string()),
            "p_true": s["p_true"],
            "true_rank": s["true_rank"],
            "pred_wnid": pa.array(list(s["pred_wnid"]), pa.string()),
            "pred_p": s["pred_p"],
            "kept": kept,
            "policy": pa.array([policy.to_json()] * n, pa.string()),
            "run_id": pa.array([run_id] * n, pa.string()),
        },
        schema=SCORE_SCHEMA,
    )


def insert_arrow(wh, query: str, name: str, table: pa.Table) -> int:
    """Run an INSERT query over an Arrow table seen as `name`, in one transaction; rows inserted."""
    from warehouse.db import load_query

    def insert(con) -> int:
        con.register(name, table)
        try:
            return con.execute(load_query(query)).fetchone()[0]
        finally:
            con.unregister(name)

    return wh.write(insert)


def write_scores(wh, table: pa.Table) -> int:
    """Insert score rows not yet present for their (text_id, model_id), in one transaction."""
    return insert_arrow(wh, "curate_insert_scores", "new_scores", table)


def _chunks(frame: pl.DataFrame, size: int) -> Iterator[pl.DataFrame]:
    for start in range(0, frame.height, size):
        yield frame.slice(start, size)


def score_pending(
    wh,
    plan: ScoringPlan,
    pending: pl.DataFrame,
    policy: Policy,
    run_id: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    device=None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Score every pending text with its scorer, writing each chunk as it is done; returns rows added.

    The warehouse write of a chunk runs in a background thread while the next chunk is scored (one
    write in flight at most; nothing else touches the connection meanwhile).
    """
    added = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-writer") as writer:
        in_flight: Future | None = None

        def settle() -> None:
            nonlocal added, in_flight
            if in_flight is not None:
                rows, n = in_flight.result()
                added += rows
                in_flight = None
                if on_batch is not None:
                    on_batch(n)

        try:
            for model_id in sorted(pending["model_id"].unique().to_list()):
                spec = plan.spec(model_id)
                todo = (
                    pending.filter(pl.col("model_id") == model_id)
                    .with_columns(pl.col("text").fill_null("").str.len_bytes().alias("_len"))
                    .sort("_len", descending=True)
                )
                scorer = load_scorer(spec, batch_size=batch_size, device=device)
                for chunk in _chunks(todo, chunk_size):
                    table = score_table(scorer, chunk, model_id, policy, run_id)
                    settle()
                    in_flight = writer.submit(lambda t=table, n=chunk.height: (write_scores(wh, t), n))
                del scorer
                gc.collect()
            settle()
        finally:
            if in_flight is not None:  # a failure while scoring: still store what was scored
                with contextlib.suppress(Exception):
                    settle()
    return added


def read_decisions(con, assigned: pl.DataFrame) -> pl.DataFrame:
    """The assigned texts with their scores from their scorer (texts not scored are left out)."""
    from warehouse.db import load_query

    ids = assigned["model_id"].unique().to_list()
    scores = con.execute(load_query("curate_read_scores"), {"ids": ids}).pl()
    return assigned.join(scores, on=["text_id", "model_id"], how="inner")


def apply_policy(decided: pl.DataFrame, policy: Policy) -> tuple[pl.DataFrame, dict]:
    """`kept` and `reason` (why a dropped text was dropped) for the policy; and what the policy used.

    In the relative policy only out-of-fold scores set the class thresholds.
    """
    evidence = (decided["role"] == "out-of-fold").to_numpy() if "role" in decided.columns else None
    kept, reasons, used = decide(
        policy,
        wnid=decided["wnid"].to_list(),
        p_true=decided["p_true"].to_numpy(),
        true_rank=decided["true_rank"].to_numpy(),
        pred_wnid=decided["pred_wnid"].to_list(),
        pred_p=decided["pred_p"].to_numpy(),
        junk=is_junk(decided["junk"]),
        evidence=evidence,
    )
    return (
        decided.with_columns(
            pl.Series("kept", kept, dtype=pl.Boolean), pl.Series("reason", reasons, dtype=pl.String)
        ),
        used,
    )


def reason_counts(decided: pl.DataFrame) -> dict[str, int]:
    """Dropped texts per reason kind (`another class` without its wnid)."""
    from tasks.policy import reason_kind

    kinds = [reason_kind(r) for r in decided["reason"].to_list() if r is not None]
    return {k: kinds.count(k) for k in sorted(set(kinds))}


def tune_policy(
    decided: pl.DataFrame, labels: pl.DataFrame, policy: Policy, target_precision: float | None
) -> tuple[Policy, pl.DataFrame, dict]:
    """Precision/recall curve on the labelled texts, and the policy for a target precision if asked."""
    joined = decided.join(labels, on="text_id", how="inner")
    if joined.is_empty():
        raise InputError(
            f"none of the {labels.height} labelled text ids was scored: do the labels belong to this warehouse?"
        )
    junk = is_junk(joined["junk"])
    rank = joined["true_rank"].to_numpy()
    always = ~junk & (rank <= policy.top_k) & (policy.top_k > 0)
    floor = np.where(junk, policy.junk_min_p_true, 0.0)
    curve = pr_curve(joined["p_true"].to_numpy(), joined["relevant"].to_numpy(), always=always, floor=floor)
    info: dict = {"labelled_scored": joined.height}
    if target_precision is not None:
        threshold, reached = choose_threshold(curve, target_precision)
        policy = dataclasses.replace(
            policy, min_p_true=threshold, threshold_source=f"labels:target_precision={target_precision:g}"
        )
        info.update(target_precision=target_precision, target_reached=reached, chosen_threshold=threshold)
    return policy, curve, info


def label_metrics(decided: pl.DataFrame, labels: pl.DataFrame) -> dict:
    """Precision/recall of the decisions in `decided` (needs `kept`) on the labelled texts."""
    joined = decided.join(labels, on="text_id", how="inner")
    return relevance_metrics(joined["kept"].to_numpy(), joined["relevant"].to_numpy())


def evaluate_curation(con, labels: str | Path | pl.DataFrame) -> dict:
    """Precision/recall of the latest curation's keep/drop decisions against a labels file."""
    from warehouse.db import load_query

    labels = labels if isinstance(labels, pl.DataFrame) else load_labels(labels)
    decisions = con.execute(load_query("curate_latest_decisions")).pl()
    if decisions.is_empty():
        raise InputError("no curation has finished yet: run `imtext curate` first")
    out = label_metrics(decisions, labels)
    out["unscored_labels"] = labels.height - out["labelled"]
    return out


def persist_decisions(wh, decided: pl.DataFrame, plan: ScoringPlan, policy: Policy, run: dict) -> int:
    """One transaction: store kept/policy for this curation's rows and the curation row."""
    from warehouse.db import load_query

    decisions = decided.select("text_id", "model_id", "kept", "reason").to_arrow()
    counts = decided.group_by("model_id").len()
    models = pa.table(
        {
            "run_id": [run["run_id"]] * len(plan.specs),
            "model_id": [s.model_id for s in plan.specs.values()],
            "kind": [s.kind for s in plan.specs.values()],
            "fold": [s.fold for s in plan.specs.values()],
            "role": [s.role for s in plan.specs.values()],
            "texts": [
                int(counts.filter(pl.col("model_id") == s.model_id)["len"].sum()) for s in plan.specs.values()
            ],
        }
    )
    run_row = pa.Table.from_pylist([run])

    def txn(con) -> int:
        con.register("decisions", decisions)
        con.register("curation_row", run_row)
        con.register("curation_scorers", models)
        try:
            changed = con.execute(load_query("curate_apply_policy"), {"policy": policy.to_json()}).fetchone()[
                0
            ]
            con.execute(load_query("curate_insert_run"))
            return changed
        finally:
            for name in ("decisions", "curation_row", "curation_scorers"):
                con.unregister(name)

    return wh.write(txn)


# -- calibration and the masked-name evaluation ------------------------------------------------


def read_ensembles(con, ids: Sequence[str]) -> dict[str, dict]:
    """Stored calibration of ensembles, {model_id: {temperatures, weights}} (reused so a resumed run
    scores with the same calibration)."""
    from warehouse.db import load_query

    rows = con.execute(load_query("curate_ensembles"), {"ids": list(ids)}).fetchall()
    out = {}
    for model_id, cal in rows:
        data = json.loads(cal)
        out[model_id] = {"temperatures": list(data["temperatures"]), "weights": data.get("weights")}
    return out


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
    rows = con.execute("SELECT wnid, name, lemmas FROM classes").fetchall()
    return {
        w: sorted({name or "", *[x.strip() for x in (lemmas or "").split(",")]} - {""})
        for w, name, lemmas in rows
    }


def _sample(frame: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    if frame.height <= n:
        return frame
    keyed = frame.with_columns(
        pl.col("text_id").hash(seed=seed).alias("_key")  # stable order, independent of row order
    )
    return keyed.sort("_key").head(n).drop("_key")


def _masked_sample(texts: pl.DataFrame, lemmas: dict[str, list[str]], n: int, seed: int) -> pl.DataFrame:
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


def _top1_macro_f1(pred: Sequence[str], true: Sequence[str]) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    if not len(true):
        return float("nan"), float("nan")
    top1 = float(np.mean(np.asarray(pred, dtype=object) == np.asarray(true, dtype=object)))
    return top1, float(
        f1_score(list(true), list(pred), average="macro", labels=sorted(set(true)), zero_division=0)
    )


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
) -> dict:
    """Held-out work over every fold, one model load per (fold, kind).

    Fits one temperature per kind on held-out texts (labelled with their image's class) when
    `calibrate`, and measures every kind (and the ensemble) on texts that name their class, as
    written and with the class name masked (`mask_class_names`).
    """
    kinds = [k for k in KINDS if k in plan.by_kind]
    out_of_fold = assigned.filter(pl.col("role") == "out-of-fold")
    per_fold_cal = max(1, calibration_texts // max(plan.folds, 1))
    # Only texts that name their class tell semantics from keywords once masked.
    masked_frame = _masked_sample(out_of_fold, lemmas, masked_texts, seed)

    cal: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    cal_labels: dict[str, list[str]] = {k: [] for k in kinds}
    cal_truth: list[str] = []
    masked_lp: dict[str, dict[str, list]] = {k: {"plain": [], "masked": []} for k in kinds}
    masked_truth: list[str] = []
    for fold in range(plan.folds):
        sample = (
            _sample(out_of_fold.filter(pl.col("fold") == fold), per_fold_cal, seed) if calibrate else None
        )
        masked = masked_frame.filter(pl.col("fold") == fold)
        if (sample is None or sample.is_empty()) and masked.is_empty():
            continue
        if sample is not None:
            cal_truth.extend(sample["wnid"].to_list())
        masked_truth.extend(masked["wnid"].to_list())
        for kind in kinds:
            scorer = load_scorer(plan.by_kind[kind][fold], batch_size=batch_size, device=device)
            if sample is not None and not sample.is_empty():
                cal[kind].append((scorer.log_proba(sample["text"].fill_null("").to_list()), scorer.labels))
            if not masked.is_empty():
                masked_lp[kind]["plain"].append((scorer.log_proba(masked["text"].to_list()), scorer.labels))
                masked_lp[kind]["masked"].append(
                    (scorer.log_proba(masked["masked"].to_list()), scorer.labels)
                )
            cal_labels[kind] = scorer.labels
            del scorer
            gc.collect()

    labels = _union_labels([cal_labels[k] for k in kinds if cal_labels[k]])
    fitted = dict(temperatures or {})
    if calibrate:
        for kind in kinds:
            if cal[kind]:
                lp = np.concatenate([_widen(a, labels) for a in cal[kind]])
                fitted[kind] = fit_temperature(lp, labels, cal_truth)
    result: dict = {"temperatures": fitted, "calibration_texts": len(cal_truth), "masked": []}
    calibrated = [k for k in kinds if k in fitted and cal[k]]
    if len(calibrated) >= 2 and cal_truth:
        # The evidence auto and the ensemble decide by: each kind's calibrated probability of the
        # held-out texts' classes, and the mixture weights that explain them best.
        probs = {
            k: _softmax(np.concatenate([_widen(a, labels) for a in cal[k]]) / fitted[k]) for k in calibrated
        }
        p_true = {k: summarise(probs[k], labels, cal_truth)["p_true"] for k in calibrated}
        weights = fit_weights([p_true[k] for k in calibrated])
        result["weights"] = dict(zip(calibrated, weights, strict=True))
        mixed = sum(w * probs[k] for k, w in result["weights"].items())
        evidence = {}
        for name, pr in [*probs.items(), ("ensemble", mixed)]:
            s = summarise(pr, labels, cal_truth)
            top1, f1 = _top1_macro_f1(list(s["pred_wnid"]), cal_truth)
            evidence[name] = {
                "log_likelihood": float(np.mean(np.log(np.clip(s["p_true"], 1e-12, None)))),
                "top1": top1,
                "macro_f1": f1,
                "weight": result["weights"].get(name),
            }
        result["evidence"] = evidence
    if masked_truth:
        variants = {}
        for kind in kinds:
            for version in ("plain", "masked"):
                lp = np.concatenate([_widen(a, labels) for a in masked_lp[kind][version]])
                variants[(kind, version)] = _softmax(lp)
        weights = result.get("weights")
        if weights:
            for version in ("plain", "masked"):
                variants[("ensemble", version)] = sum(
                    w * _softmax(np.log(np.clip(variants[(k, version)], 1e-30, None)) / fitted[k])
                    for k, w in weights.items()
                )
        for kind in [*kinds, "ensemble"]:
            if (kind, "plain") not in variants:
                continue
            row = {"scorer": kind, "texts": len(masked_truth)}
            for version in ("plain", "masked"):
                probs_v = variants[(kind, version)]
                s = summarise(probs_v, labels, masked_truth)
                top1, f1 = _top1_macro_f1(list(s["pred_wnid"]), masked_truth)
                row[f"top1_{version}"] = top1
                row[f"macro_f1_{version}"] = f1
                row[f"mean_p_true_{version}"] = float(np.mean(s["p_true"]))
            result["masked"].append(row)
    return result


def _union_labels(lists: Sequence[Sequence[str]]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for labels in lists:
        for w in labels:
            if w not in seen:
                seen.add(w)
                out.append(w)
    return out


def _widen(scored: tuple[np.ndarray, list[str]], labels: Sequence[str]) -> np.ndarray:
    """Log-probabilities on the common label order (about -inf for classes the scorer lacks)."""
    values, own = scored
    if own == list(labels):
        return values
    out = np.full((values.shape[0], len(labels)), -69.0, dtype=np.float32)
    index = {w: i for i, w in enumerate(labels)}
    out[:, [index[w] for w in own]] = values
    return out


def register_ensembles(wh, rows: list[dict]) -> int:
    """Store new ensembles before they score, so a resumed run scores with the same calibration."""
    if not rows:
        return 0
    return insert_arrow(wh, "curate_insert_ensembles", "new_ensembles", pa.Table.from_pylist(rows))


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


# -- per-class statistics ----------------------------------------------------------------------


def per_class_stats(con, decided: pl.DataFrame) -> pl.DataFrame:
    """Per class with ingested images: images, texts, kept texts, kept ratio, images left with text,
    and the dropped texts by reason."""
    from tasks.policy import REASON_BELOW, REASON_JUNK, REASON_NONE, REASON_OTHER
    from warehouse.db import load_query

    classes = con.execute(load_query("curate_class_images")).pl()
    reason = pl.col("reason").fill_null("")
    texts = decided.group_by("wnid").agg(
        pl.len().alias("texts"),
        pl.col("kept").sum().cast(pl.Int64).alias("kept"),
        pl.col("image_id").filter(pl.col("kept")).n_unique().alias("images_with_text"),
        (reason.str.starts_with(REASON_OTHER)).sum().cast(pl.Int64).alias("dropped_other_class"),
        (reason == REASON_NONE).sum().cast(pl.Int64).alias("dropped_no_class"),
        (reason == REASON_JUNK).sum().cast(pl.Int64).alias("dropped_junk"),
        (reason == REASON_BELOW).sum().cast(pl.Int64).alias("dropped_below_threshold"),
    )
    counts = ["texts", "kept", "images_with_text", *REASON_COLUMNS]
    out = classes.join(texts, on="wnid", how="left").with_columns(pl.col(c).fill_null(0) for c in counts)
    return out.with_columns(
        pl.when(pl.col("texts") > 0).then(pl.col("kept") / pl.col("texts")).alias("kept_ratio")
    ).sort("class_index")


REASON_COLUMNS = ("dropped_other_class", "dropped_no_class", "dropped_junk", "dropped_below_threshold")


# -- Prefect tasks (thin wrappers the curate flow calls) -----------------------------------------


@task(name="score-texts", tags=["gpu"], cache_policy=NO_CACHE)
def score_texts_task(
    wh, plan: ScoringPlan, pending: pl.DataFrame, policy: Policy, run_id: str, **kwargs
) -> int:
    """Score the pending texts out-of-fold, writing each chunk as it is done."""
    return score_pending(wh, plan, pending, policy, run_id, **kwargs)


@task(name="held-out-pass", tags=["gpu"], cache_policy=NO_CACHE)
def held_out_task(plan: ScoringPlan, assigned: pl.DataFrame, lemmas: dict, **kwargs) -> dict:
    """Calibrate the ensemble's members and run the masked-name evaluation on held-out texts."""
    return held_out_pass(plan, assigned, lemmas, **kwargs)


@task(name="store-decisions", cache_policy=NO_CACHE)
def persist_task(wh, decided: pl.DataFrame, plan: ScoringPlan, policy: Policy, run: dict) -> int:
    """Store keep/drop decisions and the curation row in one warehouse transaction."""
    return persist_decisions(wh, decided, plan, policy, run)
