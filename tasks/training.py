"""Training the text→class classifier: data from one snapshot, folds by image, the loop, the registry.

Data. Every image text (without a junk mark: junk texts are noise labels by construction; curation
still scores them) is labelled with its image's class; class texts (WordNet glosses, Wikipedia
summaries, description files) are extra training examples in every fold and never held out. The
classes are those with at least one image text, in the standard ImageNet order. Everything is read at
one pinned snapshot (`AT (VERSION => n)`), which each model row records.

Cross-fitting. Images are split into K folds by `tasks.folds.group_folds` (twins share a fold), never by
text, so no image is on both sides. The model of fold k is trained on every other fold and judges
fold k; one more model (fold -1) is trained on everything for new texts.

Loop. Pre-tokenised texts, length-grouped batches padded to their own longest text, AdamW with warmup
and linear decay, a separate (higher) learning rate for the new head, bf16 autocast on CUDA, gradient
accumulation and clipping, evaluation each epoch (top-1, top-5, macro-F1 on the held-out split), early
stopping on macro-F1 with the best epoch restored, and resumable checkpoints. On CPU the same seed
gives the same metrics. Under `torchrun`/`accelerate launch` every process trains on its share of the
batches (DistributedDataParallel) and only the first one writes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import html
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.classifier import (
    DEFAULT_MAX_LENGTH,
    TINY_ROBERTA,
    encode,
    head_parameter_names,
    pad_batch,
    predict_logits,
)
from tasks.errors import InputError
from tasks.folds import group_folds
from tasks.metrics import macro_f1

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
TRAINING_FILE = "training.json"  # written last into a model folder: its presence means "complete"


# =============================================================================================
# Data
# =============================================================================================


@dataclass
class TrainingData:
    """The texts of one snapshot with their labels and folds, and the class order."""

    texts: pl.DataFrame  # text_id, text, wnid, image_id, source, field, origin, fold (-1: class text)
    labels: list[str]  # wnids, in output-column order
    snapshot: int
    folds: int
    seed: int
    junk_excluded: int = 0
    image_folds: pl.DataFrame | None = None  # image_id, group, fold (twins share a group)

    @property
    def fingerprint(self) -> str:
        """A hash of what the models learn from (texts, labels, folds), not of the snapshot number."""
        digest = hashlib.blake2b(digest_size=10)
        digest.update(json.dumps([self.labels, self.folds, self.seed]).encode())
        frame = self.texts.select("text_id", "text", "wnid", "fold").sort("text_id")
        for row in frame.iter_rows():
            digest.update("\x1f".join(map(str, row)).encode())
            digest.update(b"\x1e")
        return digest.hexdigest()


def _query(name: str) -> str:
    from warehouse.db import load_query

    return load_query(name)


def load_training_texts(con, snapshot: int) -> tuple[pl.DataFrame, int]:
    """Image texts (with their image's wnid) and class texts at `snapshot`; and how many junk texts were left out."""
    frame = pl.from_arrow(con.execute(_query("train_texts"), {"snapshot": snapshot}).to_arrow_table())
    junk = con.execute(_query("train_junk_count"), {"snapshot": snapshot}).fetchone()[0]
    return frame, int(junk)


def prepare_training_data(con, snapshot: int, folds: int, seed: int = 0) -> TrainingData:
    """Texts, folds and class order for one training run, read at `snapshot`."""
    if folds < 2:
        raise InputError(f"--folds must be at least 2 (got {folds}): cross-fitting needs a held-out split")
    texts, junk = load_training_texts(con, snapshot)
    images = texts.filter(pl.col("origin") == "image")
    if images.height == 0:
        raise InputError(
            "no image texts to train on: harvest some first (imtext harvest images ...), "
            "and check that their images are ingested with a class"
        )
    order = con.execute(_query("train_class_order"), {"snapshot": snapshot}).fetchall()
    present = set(images["wnid"].unique().to_list())
    labels = [wnid for wnid, _, _ in order if wnid in present]
    texts = texts.filter(pl.col("wnid").is_in(labels))
    # Twins (one description pasted onto many images) share a fold: see tasks.folds.
    image_folds = group_folds(texts.filter(pl.col("origin") == "image"), folds, seed)
    texts = (
        texts.join(image_folds.select("image_id", "fold"), on="image_id", how="left", maintain_order="left")
        .with_columns(pl.col("fold").fill_null(-1).cast(pl.Int32))
        .with_columns(pl.when(pl.col("origin") == "class").then(-1).otherwise(pl.col("fold")).alias("fold"))
    )
    return TrainingData(texts, labels, snapshot, folds, seed, junk, image_folds)


def fold_split(
    data: TrainingData, fold: int, max_train_samples: int | None = None, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train, held-out) texts of the model of `fold`; fold -1 trains on everything and holds nothing out."""
    texts = data.texts
    if fold < 0:
        train, held = texts, texts.clear()
    else:
        train, held = texts.filter(pl.col("fold") != fold), texts.filter(pl.col("fold") == fold)
    if max_train_samples is not None and train.height > max_train_samples:
        train = train.sample(n=max_train_samples, seed=seed, shuffle=False)
    return train, held


def class_balance(data: TrainingData) -> dict:
    """Texts and images per class and per fold, sources, and the imbalance summary."""
    texts = data.texts
    images = texts.filter(pl.col("origin") == "image")
    per_class = (
        images.group_by("wnid")
        .agg(pl.len().alias("texts"), pl.col("image_id").n_unique().alias("images"))
        .join(
            texts.filter(pl.col("origin") == "class").group_by("wnid").agg(pl.len().alias("class_texts")),
            on="wnid",
            how="left",
        )
        .with_columns(pl.col("class_texts").fill_null(0))
        .sort("texts")
    )
    counts = per_class["texts"].to_numpy()
    per_fold = images.group_by("fold").agg(
        pl.len().alias("texts"), pl.col("image_id").n_unique().alias("images")
    )
    return {
        "classes": len(data.labels),
        "image_texts": images.height,
        "images": images["image_id"].n_unique(),
        "class_texts": texts.height - images.height,
        "junk_excluded": data.junk_excluded,
        "texts_per_class": {
            "min": int(counts.min()),
            "median": float(np.median(counts)),
            "max": int(counts.max()),
            "imbalance": round(float(counts.max() / max(counts.min(), 1)), 2),
        },
        "classes_with_fewer_images_than_folds": int((per_class["images"] < data.folds).sum()),
        "smallest_classes": per_class.head(5).to_dicts(),
        "largest_classes": per_class.tail(5).reverse().to_dicts(),
        "per_fold": {
            int(r["fold"]): {"texts": r["texts"], "images": r["images"]} for r in per_fold.to_dicts()
        },
        "per_source": dict(texts.group_by("source").agg(pl.len()).sort("source").iter_rows()),
    }


# =============================================================================================
# The training loop
# =============================================================================================


@dataclass
class TrainConfig:
    """Hyper-parameters of one fine-tuning run (per-device batch; effective batch = batch × accumulation × processes)."""

    epochs: int = field(default=3, metadata={"help": "passes over the training texts"})
    max_steps: int | None = field(
        default=None, metadata={"help": "stop after this many optimizer steps (overrides epochs)"}
    )
    batch_size: int = field(default=32, metadata={"help": "texts per forward pass on each device"})
    learning_rate: float = field(
        default=5e-5, metadata={"help": "AdamW learning rate of the pretrained encoder"}
    )
    head_learning_rate: float = field(
        default=3e-3, metadata={"help": "learning rate of the new classification head"}
    )
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (not on biases and norms)"}
    )
    warmup_ratio: float = field(
        default=0.06, metadata={"help": "share of the steps with a rising learning rate"}
    )
    grad_accum_steps: int = field(default=1, metadata={"help": "forward passes per optimizer step"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0: off)"})
    max_length: int = field(default=DEFAULT_MAX_LENGTH, metadata={"help": "tokens per text at most"})
    early_stopping_patience: int = field(
        default=2, metadata={"help": "evaluations without a better macro-F1 before stopping"}
    )
    length_group: int = field(
        default=50, metadata={"help": "batches per length-sorted group (1: no grouping)"}
    )
    eval_batch_size: int = field(default=128, metadata={"help": "texts per forward pass when evaluating"})
    eval_max_samples: int | None = field(
        default=20_000,
        metadata={"help": "held-out texts read at each epoch end (the final metrics read all)"},
    )
    checkpoint_every: int = field(
        default=200, metadata={"help": "optimizer steps between checkpoints (and each epoch end)"}
    )
    log_every: int = field(default=10, metadata={"help": "optimizer steps per point of the loss curve"})
    seed: int = field(default=0, metadata={"help": "seed of batch order, dropout and the new head"})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on CUDA (ignored on CPU)"})


@dataclass
class TrainResult:
    """What one training run produced: final held-out metrics and the curves."""

    metrics: dict
    loss_curve: list[dict]
    evals: list[dict]
    steps: int
    epochs_run: float
    train_seconds: float
    samples_per_s: float
    resumed_from_step: int | None = None
    stopped_early: bool = False
    best_epoch: int | None = None
    peak_memory_mb: float | None = None


@dataclass
class DistInfo:
    """This process's place in a multi-process launch (torchrun / accelerate launch), or a single process."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def detect(cls, device: str | None = None) -> DistInfo:
        """Single process unless started by a launcher; the launcher's variables name the rank and world."""
        # WORLD_SIZE is the launcher protocol (set by torchrun and accelerate launch), not a setting.
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            state = PartialState(cpu=not torch.cuda.is_available())  # CPU processes: gloo
            return cls(state.process_index, state.num_processes, torch.device(state.device))
        if device:
            return cls(device=torch.device(device))
        return cls(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))

    def barrier(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, group: int = 50
) -> list[np.ndarray]:
    """Batches of indices for one epoch: shuffled, then sorted by length within groups of `group` batches.

    Texts of similar length share a batch, so padding (wasted compute) stays small, while batch order
    and group membership stay random. The order depends on (seed, epoch) only, which makes a resumed
    epoch replay the same batches.
    """
    n = len(lengths)
    lengths = np.asarray(lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    size = batch_size * max(group, 1)
    batches: list[np.ndarray] = []
    for start in range(0, n, size):
        chunk = order[start : start + size]
        if group > 1:
            chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def classification_metrics(logits: np.ndarray, y: np.ndarray) -> dict:
    """top1, top5 and macro-F1 (over the classes present in `y`) of logits against true column indices."""
    if len(y) == 0:
        return {"top1": None, "top5": None, "macro_f1": None}
    y = np.asarray(y)
    pred = logits.argmax(axis=1)
    k = min(5, logits.shape[1])
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return {
        "top1": float((pred == y).mean()),
        "top5": float((topk == y[:, None]).any(axis=1).mean()),
        "macro_f1": macro_f1(pred, y),
    }


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float((log_norm - z[np.arange(len(y)), y]).mean())


def _param_groups(model, config: TrainConfig, from_scratch: bool) -> tuple[list[dict], float]:
    """AdamW groups: head (and, for a network trained from scratch, everything) at the head rate."""
    head = head_parameter_names(model)
    encoder_lr = config.head_learning_rate if from_scratch else config.learning_rate
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = config.head_learning_rate if name in head else encoder_lr
        no_decay = param.ndim < 2 or "norm" in name.lower()
        decay = 0.0 if no_decay else config.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return [{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()], encoder_lr


def _warmup_linear(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(warmup_steps, 1)
        return max(0.0, (total_steps - step) / max(total_steps - warmup_steps, 1))

    return factor


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _cpu_state(model) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _is_better(score: tuple, best: tuple | None) -> bool:
    return best is None or score > best


def train_classifier(
    model,
    tokenizer,
    train_texts: Sequence[str],
    train_y: Sequence[int],
    eval_texts: Sequence[str] = (),
    eval_y: Sequence[int] = (),
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    dist: DistInfo | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Fine-tune `model` in place on (texts, column indices); evaluate on the held-out pair each epoch.

    `checkpoint_dir` holds a checkpoint (every `checkpoint_every` steps and each epoch end) that a
    later call with `resume=True` continues from, replaying the same batches and random draws.
    `on_step(step, total_steps)` is called after each optimizer step. Losses stay on the device
    until a point of the loss curve is due, so a GPU is never made to wait for the host.
    """
    config = config or TrainConfig()
    dist = dist or DistInfo.detect()
    device = dist.device
    if len(train_texts) != len(train_y) or len(eval_texts) != len(eval_y):
        raise InputError("texts and labels differ in length")
    if not len(train_texts):
        raise InputError("no training texts")
    from_scratch = getattr(model.config, "imtext_base_model", None) == TINY_ROBERTA

    torch.manual_seed(config.seed)
    model.to(device)
    train_ids = encode(tokenizer, train_texts, config.max_length)
    y_train = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    # Epoch-end evaluations read a fixed sample of the held-out split (early stopping needs a trend,
    # not every text); the final metrics read all of it.
    eval_rows = np.arange(len(eval_texts))
    if config.eval_max_samples and len(eval_rows) > config.eval_max_samples:
        picked = np.random.default_rng(config.seed).choice(
            len(eval_rows), config.eval_max_samples, replace=False
        )
        eval_rows = np.sort(picked)
    eval_texts_sample = [eval_texts[i] for i in eval_rows]
    eval_ids = encode(tokenizer, eval_texts_sample, config.max_length)
    y_eval = np.asarray(eval_y, dtype=np.int64)[eval_rows]
    lengths = train_ids.lengths
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pad_multiple = 8 if device.type == "cuda" else 1
    use_bf16 = config.bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)

    def epoch_batches(epoch: int) -> list[np.ndarray]:
        batches = length_grouped_batches(
            lengths, config.batch_size, seed=config.seed, epoch=epoch, group=config.length_group
        )
        per_rank = len(batches) // dist.world if dist.world > 1 else len(batches)
        return batches[dist.rank :: dist.world][:per_rank] if dist.world > 1 else batches

    micro_per_epoch = len(epoch_batches(0))
    if micro_per_epoch == 0:
        raise InputError("fewer training texts than processes")
    accum = max(config.grad_accum_steps, 1)
    steps_per_epoch = math.ceil(micro_per_epoch / accum)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    groups, _ = _param_groups(model, config, from_scratch)
    # The fused kernel (CPU and CUDA): several times faster than the per-tensor loop on a 30k-token
    # embedding matrix, which dominates a step on a CPU.
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, fused=device.type in ("cpu", "cuda"))
    warmup = math.ceil(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_linear(total_steps, warmup))

    train_model = model
    if dist.world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    state = {
        "epoch": 0,
        "micro": 0,
        "step": 0,
        "loss_curve": [],
        "evals": [],
        "best_score": None,
        "best_epoch": None,
        "bad_evals": 0,
        "train_seconds": 0.0,
        "samples": 0,
        "stopped_early": False,
        "window": [],  # losses since the last point of the loss curve
    }
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
    best_state: dict | None = None
    resumed_from = None
    if ckpt_dir and resume and (ckpt_dir / CHECKPOINT_FILE).exists():
        saved = torch.load(ckpt_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
        if saved.get("total_steps") == total_steps and saved.get("micro_per_epoch") == micro_per_epoch:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            state = saved["loop"]
            _set_rng_state(saved["rng"])
            if (ckpt_dir / BEST_FILE).exists():
                best_state = torch.load(ckpt_dir / BEST_FILE, map_location="cpu", weights_only=True)
            resumed_from = state["step"]
            log.info("resuming from step %d (epoch %d)", state["step"], state["epoch"])
        else:
            log.warning("checkpoint in %s belongs to a different schedule; starting over", ckpt_dir)

    def save_checkpoint(best_changed: bool) -> None:
        if not ckpt_dir or not dist.is_main:
            dist.barrier()
            return
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if best_changed and best_state is not None:
            _atomic_save(best_state, ckpt_dir / BEST_FILE)
        _atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "loop": {**state, "window": [float(v) for v in window]},
                "rng": _rng_state(),
                "total_steps": total_steps,
                "micro_per_epoch": micro_per_epoch,
                "config": asdict(config),
            },
            ckpt_dir / CHECKPOINT_FILE,
        )
        dist.barrier()

    def evaluate(epoch: float) -> bool:
        """Held-out metrics into the history; True when they are the best so far."""
        nonlocal best_state
        if not len(eval_ids):
            return False
        logits = predict_logits(
            model,
            tokenizer,
            eval_texts_sample,
            token_ids=eval_ids,
            batch_size=config.eval_batch_size,
            device=device,
        )
        metrics = classification_metrics(logits, y_eval)
        entry = {
            "epoch": epoch,
            "step": state["step"],
            "loss": cross_entropy(logits, y_eval),
            **metrics,
            "learning_rate": scheduler.get_last_lr()[-1],
            "elapsed_s": state["train_seconds"],
        }
        state["evals"].append(entry)
        score = (metrics["macro_f1"], metrics["top1"], -entry["loss"])
        if _is_better(score, state["best_score"]):
            state["best_score"], state["best_epoch"], state["bad_evals"] = score, len(state["evals"]), 0
            best_state = _cpu_state(model)
            return True
        state["bad_evals"] += 1
        return False

    model.train()
    window: list = list(state["window"])
    while state["epoch"] < n_epochs and state["step"] < total_steps and not state["stopped_early"]:
        epoch = state["epoch"]
        batches = epoch_batches(epoch)
        started = time.perf_counter()
        micro = state["micro"]
        optimizer.zero_grad(set_to_none=True)
        while micro < len(batches) and state["step"] < total_steps:
            rows = batches[micro]
            last_of_step = (micro + 1) % accum == 0 or micro + 1 == len(batches)
            input_ids, mask = pad_batch([train_ids[i] for i in rows], pad_id, pad_multiple)
            sync = contextlib.nullcontext() if last_of_step or dist.world == 1 else train_model.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    logits = train_model(
                        input_ids=input_ids.to(device), attention_mask=mask.to(device)
                    ).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), y_train[rows].to(device))
                # An incomplete last accumulation of the epoch is scaled by its own size.
                span = accum if (micro // accum + 1) * accum <= len(batches) else len(batches) % accum
                (loss / span).backward()
            window.append(loss.detach())
            state["samples"] += len(rows) * dist.world
            micro += 1
            if not last_of_step:
                continue
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["micro"] = micro
            if state["step"] % config.log_every == 0 or state["step"] == total_steps:
                state["loss_curve"].append(
                    {
                        "step": state["step"],
                        "epoch": epoch,
                        "loss": float(np.mean([float(v) for v in window])),
                        "learning_rate": scheduler.get_last_lr()[-1],
                    }
                )
                window = []
            if on_step is not None:
                on_step(state["step"], total_steps)
            if state["step"] % config.checkpoint_every == 0 and micro < len(batches):
                state["train_seconds"] += time.perf_counter() - started
                started = time.perf_counter()
                save_checkpoint(False)
        state["train_seconds"] += time.perf_counter() - started
        finished_epoch = micro >= len(batches)
        improved = evaluate(epoch + (1.0 if finished_epoch else micro / len(batches)))
        if state["bad_evals"] >= config.early_stopping_patience:
            state["stopped_early"] = True
        state["epoch"], state["micro"] = epoch + 1, 0
        save_checkpoint(improved)

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    best = state["evals"][state["best_epoch"] - 1] if state["best_epoch"] else {}
    metrics = {
        "top1": best.get("top1"),
        "top5": best.get("top5"),
        "macro_f1": best.get("macro_f1"),
        "eval_loss": best.get("loss"),
    }
    if best and len(eval_rows) < len(eval_texts):  # the epoch evaluations read a sample: now all of it
        y_all = np.asarray(eval_y, dtype=np.int64)
        logits = predict_logits(
            model, tokenizer, eval_texts, batch_size=config.eval_batch_size, device=device
        )
        metrics = {**classification_metrics(logits, y_all), "eval_loss": cross_entropy(logits, y_all)}
    peak = None
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    return TrainResult(
        metrics=metrics,
        loss_curve=state["loss_curve"],
        evals=state["evals"],
        steps=state["step"],
        epochs_run=round(state["step"] / steps_per_epoch, 3),
        train_seconds=state["train_seconds"],
        samples_per_s=state["samples"] / max(state["train_seconds"], 1e-9),
        resumed_from_step=resumed_from,
        stopped_early=state["stopped_early"],
        best_epoch=state["best_epoch"],
        peak_memory_mb=peak,
    )


def scoring_speed(score: Callable[[list[str]], object], texts: Sequence[str], limit: int = 2000) -> float:
    """Texts per second of `score` over up to `limit` texts, tokenisation included."""
    sample = list(texts[:limit])
    if not sample:
        return float("nan")
    started = time.perf_counter()
    score(sample)
    return len(sample) / max(time.perf_counter() - started, 1e-9)


# =============================================================================================
# Registry
# =============================================================================================


def model_id_for(name: str, fold: int, folds: int, fingerprint: str) -> str:
    """`<base>-fold<k>of<K>-<hash>` (or `-allof<K>-`): the same training of the same data gets the same id."""
    where = "all" if fold < 0 else f"fold{fold}"
    return f"{name}-{where}of{folds}-{fingerprint[:10]}"


def spec_fingerprint(data_fingerprint: str, params: dict) -> str:
    """Hash of the data and every parameter that changes the model."""
    return hashlib.blake2b(
        json.dumps([data_fingerprint, params], sort_keys=True, default=str).encode(), digest_size=10
    ).hexdigest()


def read_complete(model_dir: Path) -> dict | None:
    """The training record of a finished model folder, or None when it is absent or unfinished."""
    record = model_dir / TRAINING_FILE
    if not record.exists():
        return None
    try:
        return json.loads(record.read_text())
    except ValueError:
        return None


def write_complete(model_dir: Path, record: dict) -> None:
    tmp = model_dir / (TRAINING_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, model_dir / TRAINING_FILE)


def remove_checkpoints(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_frame(wh, name: str, table, query: str) -> None:
    """Run the statements of queries/<query>.sql over the Arrow `table` seen as `name`, in one snapshot."""

    def write(con):
        con.register(name, table)
        try:
            for statement in con.extract_statements(_query(query)):
                con.execute(statement)
        finally:
            con.unregister(name)

    wh.write(write)


def record_folds(wh, run_id: str, image_folds: pl.DataFrame | None) -> None:
    """Store the fold of every training image of the run (curation judges each text by its fold)."""
    if image_folds is None or image_folds.is_empty():
        return
    table = image_folds.select(
        pl.lit(run_id).alias("run_id"), "image_id", pl.col("group").alias("group_key"), "fold"
    ).to_arrow()
    _write_frame(wh, "new_folds", table, "train_insert_folds")


def register_models(wh, rows: list[dict]) -> None:
    """MERGE model rows into `models` (key model_id), in one snapshot."""
    import pyarrow as pa

    if not rows:
        return
    table = pa.Table.from_pylist(
        [
            {
                "model_id": r["model_id"],
                "base_model": r["base_model"],
                "fold": int(r["fold"]),
                "folds": int(r["folds"]),
                "snapshot": int(r["snapshot"]),
                "params": json.dumps(r["params"], sort_keys=True, default=str),
                "metrics": json.dumps(r["metrics"], sort_keys=True, default=str),
                "path": str(r["path"]),
                "duration_s": float(r["duration_s"]),
                "device": r["device"],
                "created_at": r.get("created_at") or _now(),
                "run_id": r["run_id"],
            }
            for r in rows
        ]
    )

    _write_frame(wh, "new_models", table, "train_upsert_models")


def record_history(wh, run_id: str, model_id: str, result: TrainResult) -> None:
    """Loss curve and held-out evaluations of one model into `training_history`."""
    import pyarrow as pa

    now = _now()
    rows = [
        {
            "model_id": model_id,
            "run_id": run_id,
            "kind": "train",
            "epoch": int(p["epoch"]),
            "step": p["step"],
            "loss": p["loss"],
            "top1": None,
            "top5": None,
            "macro_f1": None,
            "learning_rate": p["learning_rate"],
            "elapsed_s": None,
            "recorded_at": now,
        }
        for p in result.loss_curve
    ] + [
        {
            "model_id": model_id,
            "run_id": run_id,
            "kind": "eval",
            "epoch": math.ceil(e["epoch"]),
            "step": e["step"],
            "loss": e["loss"],
            "top1": e["top1"],
            "top5": e["top5"],
            "macro_f1": e["macro_f1"],
            "learning_rate": e["learning_rate"],
            "elapsed_s": e["elapsed_s"],
            "recorded_at": now,
        }
        for e in result.evals
    ]
    if not rows:
        return
    schema = pa.schema(
        [
            ("model_id", pa.string()),
            ("run_id", pa.string()),
            ("kind", pa.string()),
            ("epoch", pa.int32()),
            ("step", pa.int32()),
            ("loss", pa.float64()),
            ("top1", pa.float64()),
            ("top5", pa.float64()),
            ("macro_f1", pa.float64()),
            ("learning_rate", pa.float64()),
            ("elapsed_s", pa.float64()),
            ("recorded_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)

    _write_frame(wh, "history_rows", table, "train_history_insert")


def record_training_run(wh, row: dict) -> None:
    """Start or finish a row of `training_runs` (key run_id)."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("base_model", pa.string()),
            ("folds", pa.int32()),
            ("seed", pa.int32()),
            ("snapshot", pa.int64()),
            ("data_fingerprint", pa.string()),
            ("params", pa.string()),
            ("data", pa.string()),
            ("status", pa.string()),
            ("report_path", pa.string()),
            ("started_at", pa.timestamp("us", tz="UTC")),
            ("finished_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    full = {name: row.get(name) for name in schema.names}
    for key in ("params", "data"):
        if full[key] is not None and not isinstance(full[key], str):
            full[key] = json.dumps(full[key], default=str)
    table = pa.Table.from_pylist([full], schema=schema)

    _write_frame(wh, "run_row", table, "train_upsert_run")


# =============================================================================================
# Report: metrics side by side and training curves (HTML with inline SVG, no plotting library)
# =============================================================================================


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


def _svg_lines(series: list[tuple[str, list[tuple[float, float]]]], title: str, y_label: str) -> str:
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
<div class="plots">{_svg_lines(loss_series, "training loss", "cross-entropy")}
{_svg_lines(top1_series, "held-out top-1", "top-1")}
{_svg_lines(f1_series, "held-out macro-F1", "macro-F1")}</div>
<h2>Class balance</h2>
<pre>{html.escape(json.dumps(balance, indent=1, default=str))}</pre>
<h2>Parameters</h2>
<pre>{html.escape(json.dumps(params, indent=1, default=str))}</pre>
</body></html>
"""


# =============================================================================================
# One model per fold: the transformer and the baseline
# =============================================================================================


@dataclass
class RunSpec:
    """What one `imtext train` run trains, shared by its fold models."""

    base_model: str
    folds: int
    config: TrainConfig
    run_id: str
    models_dir: Path
    max_train_samples: int | None = None
    resume: bool = True

    def transformer_params(self, data: TrainingData, world: int = 1) -> dict:
        c = self.config
        return {
            "kind": "transformer",
            "base_model": self.base_model,
            "seed": c.seed,
            "folds": self.folds,
            "max_length": c.max_length,
            "epochs": c.epochs,
            "max_steps": c.max_steps,
            "batch_size": c.batch_size,
            "learning_rate": c.learning_rate,
            "head_learning_rate": c.head_learning_rate,
            "weight_decay": c.weight_decay,
            "warmup_ratio": c.warmup_ratio,
            "grad_accum_steps": c.grad_accum_steps,
            "max_grad_norm": c.max_grad_norm,
            "early_stopping_patience": c.early_stopping_patience,
            "length_group": c.length_group,
            "eval_max_samples": c.eval_max_samples,
            "max_train_samples": self.max_train_samples,
            "num_labels": len(data.labels),
            "world_size": world,
            "data_fingerprint": data.fingerprint,
        }

    def baseline_params(self, data: TrainingData, baseline) -> dict:
        from tasks.baseline import BASELINE_NAME

        return {
            "kind": "baseline",
            "base_model": BASELINE_NAME,
            "seed": self.config.seed,
            "folds": self.folds,
            "max_length": None,
            "max_train_samples": self.max_train_samples,
            "num_labels": len(data.labels),
            "data_fingerprint": data.fingerprint,
            **{f"tfidf_{k}": v for k, v in asdict(baseline).items() if k != "seed"},
        }


def device_name(dist: DistInfo) -> str:
    device = dist.device
    if device.type == "cuda":
        name = f"cuda:{torch.cuda.get_device_name(device)}"
        return f"{name} x{dist.world}" if dist.world > 1 else name
    return f"cpu x{dist.world}" if dist.world > 1 else "cpu"


def _result_from_record(record: dict) -> TrainResult:
    metrics = record["row"]["metrics"]
    return TrainResult(
        metrics=metrics,
        loss_curve=record.get("loss_curve", []),
        evals=record.get("evals", []),
        steps=metrics.get("steps", 0),
        epochs_run=metrics.get("epochs_run", 0),
        train_seconds=metrics.get("train_time_s", 0.0),
        samples_per_s=metrics.get("train_samples_per_s", 0.0),
    )


def _finish_model_folder(model_dir: Path, row: dict) -> None:
    """The model card, and the code that lets plain transformers load the model (see tasks.model_card)."""
    from tasks.model_card import finish_model_folder

    finish_model_folder(model_dir, row)


def _reuse(spec: RunSpec, model_dir: Path) -> dict | None:
    record = read_complete(model_dir) if spec.resume else None
    if record is None:
        return None
    log.info("reusing the finished model %s", model_dir.name)
    if int(os.environ.get("RANK", "0")) == 0:  # the launcher protocol: only the first process writes
        _finish_model_folder(model_dir, record["row"])
    return {**record["row"], "run_id": spec.run_id, "created_at": _now(), "reused": True}


def fit_transformer_fold(
    data: TrainingData,
    fold: int,
    spec: RunSpec,
    *,
    dist: DistInfo | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[dict, TrainResult]:
    """Train (or reuse, when finished before) the transformer of one fold; returns its registry row and curves."""
    from tasks.classifier import build_classifier, save_classifier, short_name

    dist = dist or DistInfo.detect()
    params = spec.transformer_params(data, dist.world)
    fingerprint = spec_fingerprint(data.fingerprint, params)
    model_id = model_id_for(short_name(spec.base_model), fold, spec.folds, fingerprint)
    model_dir = spec.models_dir / model_id
    if (row := _reuse(spec, model_dir)) is not None:
        return row, _result_from_record(read_complete(model_dir))
    started = time.perf_counter()
    train, held = fold_split(data, fold, spec.max_train_samples, spec.config.seed)
    index = {w: i for i, w in enumerate(data.labels)}
    train_texts = train["text"].to_list()
    model, tokenizer, pooling = build_classifier(
        spec.base_model,
        data.labels,
        corpus=train_texts,
        max_length=spec.config.max_length,
        seed=spec.config.seed,
    )
    result = train_classifier(
        model,
        tokenizer,
        train_texts,
        [index[w] for w in train["wnid"]],
        held["text"].to_list(),
        [index[w] for w in held["wnid"]],
        spec.config,
        checkpoint_dir=spec.models_dir / ".checkpoints" / model_id,
        resume=spec.resume,
        dist=dist,
        on_step=on_step,
    )
    sample = held["text"].to_list() or train_texts
    speed = scoring_speed(
        lambda texts: predict_logits(model, tokenizer, texts, batch_size=spec.config.eval_batch_size), sample
    )
    _, encoder_lr = _param_groups(model, spec.config, model.config.imtext_base_model == TINY_ROBERTA)
    metrics = {
        **result.metrics,
        "train_time_s": round(result.train_seconds, 3),
        "texts_per_s": round(speed, 1),
        "train_samples": train.height,
        "heldout_samples": held.height,
        "train_samples_per_s": round(result.samples_per_s, 2),
        "steps": result.steps,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "resumed_from_step": result.resumed_from_step,
        "peak_memory_mb": result.peak_memory_mb,
    }
    row = {
        "model_id": model_id,
        "base_model": spec.base_model,
        "fold": fold,
        "folds": spec.folds,
        "snapshot": data.snapshot,
        "params": {**params, "pooling": pooling, "encoder_learning_rate": encoder_lr},
        "metrics": metrics,
        "path": str(model_dir.resolve()),
        "duration_s": round(time.perf_counter() - started, 3),
        "device": device_name(dist),
        "run_id": spec.run_id,
        "created_at": _now(),
    }
    if dist.is_main:
        save_classifier(model, tokenizer, model_dir)
        _finish_model_folder(model_dir, row)
        write_complete(
            model_dir,
            {
                "row": {k: v for k, v in row.items() if k != "created_at"},
                "loss_curve": result.loss_curve,
                "evals": result.evals,
            },
        )
        remove_checkpoints(spec.models_dir / ".checkpoints" / model_id)
    dist.barrier()
    return row, result


def cpu_model_row(
    model_id: str,
    base_model: str,
    fold: int,
    spec: RunSpec,
    data: TrainingData,
    params,
    metrics,
    model_dir,
    started,
) -> dict:
    """The registry row of a model fitted on the CPU (the baseline and the encoder heads)."""
    return {
        "model_id": model_id,
        "base_model": base_model,
        "fold": fold,
        "folds": spec.folds,
        "snapshot": data.snapshot,
        "params": params,
        "metrics": metrics,
        "path": str(Path(model_dir).resolve()),
        "duration_s": round(time.perf_counter() - started, 3),
        "device": "cpu",
        "run_id": spec.run_id,
        "created_at": _now(),
    }


def fit_baseline_fold(
    data: TrainingData, fold: int, spec: RunSpec, *, temperature: float | None = None, config=None
) -> dict:
    """Fit (or reuse) the TF-IDF + linear baseline of one fold on exactly the transformer's texts; its registry row."""
    from tasks.baseline import BASELINE_NAME, BaselineConfig, save_baseline, train_baseline

    config = config or BaselineConfig(seed=spec.config.seed)
    params = spec.baseline_params(data, config)
    fingerprint = spec_fingerprint(data.fingerprint, params)
    model_id = model_id_for(BASELINE_NAME, fold, spec.folds, fingerprint)
    model_dir = spec.models_dir / model_id
    if (row := _reuse(spec, model_dir)) is not None:
        return row
    started = time.perf_counter()
    train, held = fold_split(data, fold, spec.max_train_samples, spec.config.seed)
    held_texts = held["text"].to_list()
    model = train_baseline(
        train["text"].to_list(),
        train["wnid"].to_list(),
        classes=data.labels,
        eval_texts=held_texts or None,
        eval_labels=held["wnid"].to_list() or None,
        temperature=temperature,
        config=config,
    )
    train_seconds = time.perf_counter() - started
    index = {w: i for i, w in enumerate(data.labels)}
    metrics = {"top1": None, "top5": None, "macro_f1": None, "eval_loss": None}
    if held_texts:
        scores = model.decision_function(held_texts)
        y = np.array([index[w] for w in held["wnid"]])
        metrics = {
            **classification_metrics(scores, y),
            "eval_loss": cross_entropy(scores / model.temperature, y),
        }
    speed = scoring_speed(model.predict_proba, held_texts or train["text"].to_list())
    row = cpu_model_row(
        model_id,
        BASELINE_NAME,
        fold,
        spec,
        data,
        {**params, "temperature": model.temperature},
        {
            **metrics,
            "train_time_s": round(train_seconds, 3),
            "texts_per_s": round(speed, 1),
            "train_samples": train.height,
            "heldout_samples": held.height,
        },
        model_dir,
        started,
    )
    save_baseline(model, model_dir, extra={"model_id": model_id})
    _finish_model_folder(model_dir, row)
    write_complete(model_dir, {"row": {k: v for k, v in row.items() if k != "created_at"}})
    return row


# =============================================================================================
# Prefect tasks (thin wrappers; run in the flow's own process and thread, as DDP needs)
# =============================================================================================

fit_transformer_task = task(name="fit-transformer", tags=["gpu"], cache_policy=NO_CACHE)(fit_transformer_fold)
fit_baseline_task = task(name="fit-baseline", cache_policy=NO_CACHE)(fit_baseline_fold)
