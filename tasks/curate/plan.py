"""Which models score which texts: the training run and scorer kind chosen, and each text's scorer."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from tasks.common.errors import InputError
from tasks.model.folds import fold_of

SCORERS = ("auto", "transformer", "baseline", "frozen", "similarity", "ensemble")
KINDS = ("transformer", "baseline", "frozen", "similarity")


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

    def kind_temperatures(self) -> dict[str, float]:
        """The ensemble's temperature per kind once calibrated (empty for a single kind)."""
        return self._per_kind("temperatures")

    def kind_weights(self) -> dict[str, float]:
        """The ensemble's weight per kind once calibrated (empty for a single kind)."""
        return self._per_kind("weights")

    def _per_kind(self, name: str) -> dict[str, float]:
        for spec in self.specs.values():
            values = getattr(spec, name)
            if spec.kind == "ensemble" and values is not None:
                return {m.kind: v for m, v in zip(spec.members, values, strict=True)}
        return {}


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
    run, by_kind = _pick_run(models, runs, order, scorer, training_run)
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


def _pick_run(
    models: list[ModelRef],
    runs: dict[str, dict[str, list[ModelRef]]],
    order: list[str],
    scorer: str,
    training_run: str | None,
) -> tuple[str, dict[str, dict[int, ModelRef]]]:
    """The training run to score with and its complete cross-fittings per kind (newest run first)."""
    # A run still training or failed is passed over unless named (runs without a status row count as done).
    unfinished = {m.run_id for m in models if m.run_status in ("running", "failed")}
    candidates_runs = [training_run] if training_run else [r for r in reversed(order) if r not in unfinished]
    needed = {"auto": None, "ensemble": None}.get(scorer, [scorer])
    least = 2 if scorer == "ensemble" else 1
    for run in candidates_runs:
        complete = {k: c for k in KINDS if (c := _complete(runs[run].get(k, []))) is not None}
        if needed is None:
            if len(complete) >= least:
                return run, complete
        elif all(k in complete for k in needed):
            return run, complete
    what = "two kinds of " if scorer == "ensemble" else "" if needed is None else " and ".join(needed) + " "
    where = f"the training run {training_run}" if training_run else "no finished training run"
    verb = "holds" if training_run else "has"
    hint = "run `imtext train` first"
    skipped = [r for r in reversed(order) if r in unfinished]
    if skipped and not training_run:
        status = next(m.run_status for m in models if m.run_id == skipped[0])
        hint += (
            f" (the latest run {skipped[0]} is {status}; --training-run {skipped[0]} uses its models anyway)"
        )
    raise InputError(
        f"{where} {verb} a complete cross-fitted set of {what}models (every fold 0..K-1): {hint}"
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
