"""Fine-tuning with transformers' `Trainer`: `TrainConfig`, length-grouped batches, the head's own rate, early stopping.

`train_classifier` is the one entry point. `Trainer` runs the steps (gradient accumulation, clipping,
bf16 on CUDA, DistributedDataParallel under torchrun, checkpoints and `resume_from_checkpoint`); this
module gives it what the platform needs and `Trainer` does not have:

- batches of similar length drawn from (seed, epoch) alone, so a resumed epoch replays its batches;
- AdamW with the new head (or a network trained from scratch) at its own learning rate, no decay on
  biases and norms, the fused kernel, and linear warmup then decay;
- the loss in float32 on the logits (the classifiers' own heads compute none);
- at each epoch end, held-out top-1, top-5 and macro-F1 on a fixed sample, the best epoch kept in
  memory (and in `best.pt` beside the checkpoints), early stopping on macro-F1, and at the end the
  best weights restored and the whole held-out split scored.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
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
    PackedTokens,
    encode,
    head_parameter_names,
    pad_batch,
    predict_logits,
)
from tasks.model.devices import DistInfo
from tasks.model.evaluation import chunked_metrics, classification_metrics, cross_entropy
from tasks.model.options import config_field

log = logging.getLogger(__name__)

BEST_FILE = "best.pt"
PROGRESS_FILE = "imtext_progress.json"  # inside each Trainer checkpoint folder


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
    epoch replay the same batches. Every batch is full but the last one.
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
    # A short batch can only close the last group; it stays last, so that a sampler handing out
    # indices (which the data loader cuts every `batch_size`) gives back these very batches.
    short = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    return [batches[i] for i in rng.permutation(len(batches))] + short


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """`length_grouped_batches` as a sampler: the data loader (and, under torchrun, accelerate's shards)
    cut its indices into the same batches. `Trainer` sets the epoch before each one."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, group: int):
        self.lengths, self.batch_size, self.seed, self.group = lengths, batch_size, seed, group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        batches = length_grouped_batches(
            self.lengths, self.batch_size, seed=self.seed, epoch=self.epoch, group=self.group
        )
        return iter(np.concatenate(batches).tolist() if batches else [])


class TokenDataset(torch.utils.data.Dataset):
    """Pre-tokenised texts and their class columns."""

    def __init__(self, ids: PackedTokens, labels: np.ndarray):
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": int(self.labels[i])}


@dataclass
class PadToLongest:
    """Collator: a batch padded to its own longest text (to a multiple of 8 on CUDA)."""

    pad_id: int
    multiple_of: int = 1

    def __call__(self, features: list[dict]) -> dict:
        ids, mask = pad_batch([f["input_ids"] for f in features], self.pad_id, self.multiple_of)
        labels = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


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


def _trainer_class():
    """The `Trainer` subclass, built on first use (importing transformers' Trainer costs seconds)."""
    from transformers import Trainer

    class ClassifierTrainer(Trainer):
        """`Trainer` with the platform's sampler, optimizer, schedule and float32 loss."""

        def __init__(self, *args, imtext_config: TrainConfig, sampler, from_scratch: bool, **kwargs):
            super().__init__(*args, **kwargs)
            self.imtext_config, self.imtext_sampler, self.from_scratch = imtext_config, sampler, from_scratch
            self.model_accepts_loss_kwargs = False  # the loss below is a per-batch mean
            self.samples_seen = 0

        def _get_train_sampler(self, train_dataset=None):
            return self.imtext_sampler

        def create_optimizer(self, model=None):
            if self.optimizer is None:
                groups, _ = param_groups(self.model, self.imtext_config, self.from_scratch)
                # The fused kernel (CPU and CUDA): several times faster than the per-tensor loop on a
                # 30k-token embedding matrix, which dominates a step on a CPU.
                fused = self.args.device.type in ("cpu", "cuda")
                self.optimizer = torch.optim.AdamW(groups, lr=self.imtext_config.learning_rate, fused=fused)
            return self.optimizer

        def create_scheduler(self, num_training_steps: int, optimizer=None):
            if self.lr_scheduler is None:
                warmup = math.ceil(self.imtext_config.warmup_ratio * num_training_steps)
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer or self.optimizer, warmup_linear(num_training_steps, warmup)
                )
            return self.lr_scheduler

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = torch.nn.functional.cross_entropy(outputs.logits.float(), labels)
            self.samples_seen += labels.numel()
            return (loss, outputs) if return_outputs else loss

    return ClassifierTrainer


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _cpu_state(model) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class _Progress:
    """What the platform tracks around `Trainer`: epoch evaluations, the best epoch, early stopping, time.

    As a `TrainerCallback` (see `_callback`) it evaluates at each epoch end and writes its own state
    into each checkpoint, which a resumed run reads back.
    """

    def __init__(
        self, model, tokenizer, eval_texts, eval_ids, eval_y, config, dist, ckpt_dir, on_step, schedule
    ):
        self.model, self.tokenizer, self.config, self.dist = model, tokenizer, config, dist
        self.schedule = schedule  # what a checkpoint must match to be resumed
        self.eval_texts, self.eval_ids, self.eval_y = eval_texts, eval_ids, eval_y
        self.ckpt_dir, self.on_step = ckpt_dir, on_step
        self.state = {
            "evals": [],
            "best_score": None,
            "best_epoch": None,
            "bad_evals": 0,
            "train_seconds": 0.0,
            "samples": 0,
            "stopped_early": False,
        }
        self.best_state: dict | None = None
        self.best_unsaved = False
        self.clock = time.perf_counter()
        self.trainer = None  # set once the Trainer exists (its sample counter)

    def tick(self) -> None:
        """Add the time since the last tick to the training time (evaluations are left out)."""
        now = time.perf_counter()
        self.state["train_seconds"] += now - self.clock
        self.clock = now

    def samples(self) -> int:
        seen = self.trainer.samples_seen if self.trainer is not None else 0
        return self.state["samples"] + seen * self.dist.world

    def evaluate(self, epoch: float, step: int, learning_rate: float) -> None:
        """Held-out metrics into the history; the best epoch so far kept, early stopping counted."""
        if not len(self.eval_ids):
            return
        logits = predict_logits(
            self.model,
            self.tokenizer,
            self.eval_texts,
            token_ids=self.eval_ids,
            batch_size=self.config.eval_batch_size,
            device=self.dist.device,
        )
        metrics = classification_metrics(logits, self.eval_y)
        entry = {
            "epoch": epoch,
            "step": step,
            "loss": cross_entropy(logits, self.eval_y),
            **metrics,
            "learning_rate": learning_rate,
            "elapsed_s": self.state["train_seconds"],
        }
        self.state["evals"].append(entry)
        score = [metrics["macro_f1"], metrics["top1"], -entry["loss"]]
        best = self.state["best_score"]
        if best is None or score > best:
            self.state["best_score"], self.state["best_epoch"] = score, len(self.state["evals"])
            self.state["bad_evals"] = 0
            self.best_state, self.best_unsaved = _cpu_state(self.model), True
        else:
            self.state["bad_evals"] += 1

    def save(self, checkpoint: Path) -> None:
        """Beside `Trainer`'s checkpoint: this state, and the best weights when they changed."""
        if not self.dist.is_main:
            return
        if self.best_unsaved and self.best_state is not None:
            _atomic_save(self.best_state, self.ckpt_dir / BEST_FILE)
            self.best_unsaved = False
        state = {**self.state, "samples": self.samples(), "schedule": self.schedule}
        tmp = checkpoint / (PROGRESS_FILE + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, checkpoint / PROGRESS_FILE)

    def restore(self, checkpoint: Path) -> bool:
        """Read the state a checkpoint was saved with; False when it belongs to another schedule."""
        try:
            saved = json.loads((checkpoint / PROGRESS_FILE).read_text())
        except (OSError, ValueError):
            return False
        if saved.pop("schedule", None) != self.schedule:
            return False
        self.state = saved
        if (self.ckpt_dir / BEST_FILE).exists():
            self.best_state = torch.load(self.ckpt_dir / BEST_FILE, map_location="cpu", weights_only=True)
        return True


def _callback(progress: _Progress):
    from transformers import TrainerCallback

    class EpochEvaluation(TrainerCallback):
        """Epoch-end evaluation, early stopping, progress per step and the platform's checkpoint state."""

        def on_train_begin(self, args, state, control, **kwargs):
            progress.clock = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_log = True  # the loss curve ends at the last step
            if progress.on_step is not None:
                progress.on_step(state.global_step, state.max_steps)

        def on_epoch_end(self, args, state, control, lr_scheduler=None, **kwargs):
            progress.tick()
            rate = lr_scheduler.get_last_lr()[-1] if lr_scheduler is not None else None
            progress.evaluate(round(state.epoch, 6), state.global_step, rate)
            if progress.state["bad_evals"] >= progress.config.early_stopping_patience:
                progress.state["stopped_early"] = True
                control.should_training_stop = True
            control.should_save = progress.ckpt_dir is not None
            progress.clock = time.perf_counter()

        def on_save(self, args, state, control, **kwargs):
            progress.tick()
            progress.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return EpochEvaluation()


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

    `checkpoint_dir` holds `Trainer` checkpoints (every `checkpoint_every` steps and each epoch end)
    that a later call with `resume=True` continues from, replaying the same batches and random draws.
    `on_step(step, total_steps)` is called after each optimizer step.
    """
    from transformers import PrinterCallback, TrainingArguments

    config = config or TrainConfig()
    dist = dist or DistInfo.detect()
    device = dist.device
    if len(train_texts) != len(train_y) or len(eval_texts) != len(eval_y):
        raise InputError("texts and labels differ in length")
    if not len(train_texts):
        raise InputError("no training texts")
    if len(train_texts) < dist.world:
        raise InputError("fewer training texts than processes")
    from_scratch = getattr(model.config, "imtext_base_model", None) == TINY_ROBERTA

    torch.manual_seed(config.seed)
    train_ids = encode(tokenizer, train_texts, config.max_length)
    # Epoch-end evaluations read a fixed sample of the held-out split (early stopping needs a trend,
    # not every text); the final metrics read all of it.
    eval_rows = np.arange(len(eval_texts))
    if config.eval_max_samples and len(eval_rows) > config.eval_max_samples:
        picked = np.random.default_rng(config.seed).choice(
            len(eval_rows), config.eval_max_samples, replace=False
        )
        eval_rows = np.sort(picked)
    eval_sample = [eval_texts[i] for i in eval_rows]
    eval_ids = encode(tokenizer, eval_sample, config.max_length)
    y_eval = np.asarray(eval_y, dtype=np.int64)[eval_rows]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    use_bf16 = config.bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()
    if device.type == "cuda":
        # TF32 matmuls where the GPU has them (Trainer's tf32=True refuses GPUs older than Ampere).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)

    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else None
    schedule = {
        "config": asdict(config),
        "train_texts": len(train_texts),
        "eval_texts": len(eval_texts),
        "world": dist.world,
    }
    progress = _Progress(
        model, tokenizer, eval_sample, eval_ids, y_eval, config, dist, ckpt_dir, on_step, schedule
    )
    resume_from = _resumable_checkpoint(ckpt_dir, progress, resume, dist)
    scratch = None
    if ckpt_dir is None:
        scratch = tempfile.TemporaryDirectory(prefix="imtext-train-")
    output_dir = str(ckpt_dir) if ckpt_dir else scratch.name
    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=max(config.grad_accum_steps, 1),
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_strategy="steps",
        logging_steps=config.log_every,
        save_strategy="steps" if ckpt_dir else "no",
        save_steps=config.checkpoint_every,
        save_total_limit=1,
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=device.type == "cpu",
        bf16=use_bf16,
        dataloader_num_workers=0,
        dataloader_pin_memory=device.type == "cuda",
        remove_unused_columns=False,
        restore_callback_states_from_checkpoint=False,
    )
    sampler = LengthGroupedSampler(train_ids.lengths, config.batch_size, config.seed, config.length_group)
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=TokenDataset(train_ids, np.asarray(train_y, dtype=np.int64)),
        data_collator=PadToLongest(pad_id, 8 if device.type == "cuda" else 1),
        callbacks=[_callback(progress)],
        imtext_config=config,
        sampler=sampler,
        from_scratch=from_scratch,
    )
    # Progress goes through on_step (the flow's log); Trainer would also print every log dict to stdout.
    trainer.remove_callback(PrinterCallback)
    progress.trainer = trainer
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        if scratch is not None:
            scratch.cleanup()
    progress.tick()
    return _result(trainer, progress, eval_texts, eval_y, len(eval_rows), resume_from)


def _resumable_checkpoint(
    ckpt_dir: Path | None, progress: _Progress, resume: bool, dist: DistInfo
) -> str | None:
    """The last checkpoint of the same schedule, read into `progress`; anything else is cleared away."""
    if ckpt_dir is None or not ckpt_dir.exists():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(ckpt_dir))
    if resume and last and progress.restore(Path(last)):
        log.info("resuming from %s", Path(last).name)
        return last
    if last or any(ckpt_dir.iterdir()):
        log.warning(
            "checkpoints in %s belong to a different schedule (or resume is off); starting over", ckpt_dir
        )
        dist.barrier()
        if dist.is_main:
            shutil.rmtree(ckpt_dir)
        dist.barrier()
    return None


def _result(trainer, progress: _Progress, eval_texts, eval_y, sampled: int, resume_from) -> TrainResult:
    """The best epoch's weights back in the model, the whole held-out split scored, the curves."""
    model, config, device = progress.model, progress.config, progress.dist.device
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    model.eval()
    state = progress.state
    best = state["evals"][state["best_epoch"] - 1] if state["best_epoch"] else {}
    metrics = {
        "top1": best.get("top1"),
        "top5": best.get("top5"),
        "macro_f1": best.get("macro_f1"),
        "eval_loss": best.get("loss"),
    }
    if best and sampled < len(eval_texts):  # the epoch evaluations read a sample: now all of it
        metrics = chunked_metrics(
            lambda texts: predict_logits(
                model, progress.tokenizer, texts, batch_size=config.eval_batch_size, device=device
            ),
            eval_texts,
            eval_y,
        )
    loss_curve = [
        {
            "step": entry["step"],
            "epoch": int(math.ceil(entry["epoch"]) - 1),
            "loss": entry["loss"],
            "learning_rate": entry.get("learning_rate"),
        }
        for entry in trainer.state.log_history
        if "loss" in entry and "step" in entry
    ]
    steps = trainer.state.global_step
    # Batches per process and epoch (accelerate gives every process as many), then optimizer steps.
    batches = math.ceil(math.ceil(len(trainer.train_dataset) / config.batch_size) / progress.dist.world)
    steps_per_epoch = math.ceil(batches / max(config.grad_accum_steps, 1))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    seconds = state["train_seconds"]
    return TrainResult(
        metrics=metrics,
        loss_curve=loss_curve,
        evals=state["evals"],
        steps=steps,
        epochs_run=round(steps / max(steps_per_epoch, 1), 3),
        train_seconds=seconds,
        samples_per_s=progress.samples() / max(seconds, 1e-9),
        resumed_from_step=int(Path(resume_from).name.split("-")[-1]) if resume_from else None,
        stopped_early=state["stopped_early"],
        best_epoch=state["best_epoch"],
        peak_memory_mb=peak,
    )
