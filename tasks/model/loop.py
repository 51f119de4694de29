"""The hand-written training loop: `TrainConfig`, length-grouped batches, AdamW, checkpoints, early stopping.

See tasks.model for what the loop does; `train_classifier` is its one entry point.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tasks.common.errors import InputError
from tasks.model.classifier import (
    DEFAULT_MAX_LENGTH,
    TINY_ROBERTA,
    encode,
    head_parameter_names,
    pad_batch,
    predict_logits,
)
from tasks.model.devices import DistInfo
from tasks.model.evaluation import chunked_metrics, classification_metrics, cross_entropy
from tasks.model.options import config_field

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"


@dataclass
class TrainConfig:
    """Hyper-parameters of one fine-tuning run (per-device batch; effective batch = batch × accumulation × processes)."""

    # The options a train run exposes take their default and help from tasks.model.options.
    epochs: int = config_field("epochs")
    max_steps: int | None = config_field("max_steps")
    batch_size: int = config_field("batch_size")
    learning_rate: float = config_field("learning_rate")
    head_learning_rate: float = config_field("head_learning_rate")
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
    seed: int = config_field("seed")
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


def param_groups(model, config: TrainConfig, from_scratch: bool) -> tuple[list[dict], float]:
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


def warmup_linear(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The learning-rate factor of a step: linear warmup over `warmup_steps`, then linear decay to 0."""

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

    groups, _ = param_groups(model, config, from_scratch)
    # The fused kernel (CPU and CUDA): several times faster than the per-tensor loop on a 30k-token
    # embedding matrix, which dominates a step on a CPU.
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, fused=device.type in ("cpu", "cuda"))
    warmup = math.ceil(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(total_steps, warmup))

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
        metrics = chunked_metrics(
            lambda texts: predict_logits(
                model, tokenizer, texts, batch_size=config.eval_batch_size, device=device
            ),
            eval_texts,
            eval_y,
        )
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
