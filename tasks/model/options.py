"""The options of a training run, declared once: the train flow's parameters and `imtext train`'s options.

Each option has its default, its help text, its bounds and its command-line spelling here; the
flow's signature, the CLI and `TrainConfig` read them from this table. This module imports nothing
heavy, so the CLI can build its options without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Option:
    """One training option: its type, default, help, bounds and the CLI's spelling of it."""

    type: type
    default: Any
    help: str
    flag: str  # the command-line spelling, e.g. "--folds" or "--baseline/--no-baseline"
    metavar: str | None = None
    ge: float | None = None  # lower bound, inclusive
    gt: float | None = None  # lower bound, exclusive (the CLI checks it as inclusive)

    @property
    def minimum(self) -> float | None:
        """The lower bound the CLI checks."""
        return self.ge if self.ge is not None else self.gt

    def field(self):
        """The pydantic field of the flow parameter: its description and bounds."""
        from pydantic import Field

        return Field(description=self.help, ge=self.ge, gt=self.gt)


# In the order of the flow's parameters (and of `imtext train --help`).
TRAIN_OPTIONS: dict[str, Option] = {
    "base_model": Option(
        str,
        "roberta-base",
        "hub name, local model folder, or offline: minilm-offline (pretrained MiniLM), "
        "tiny-roberta (small RoBERTa from scratch)",
        "--base-model",
        metavar="NAME_OR_PATH",
    ),
    "folds": Option(
        int,
        2,
        "cross-fitting folds K: K models, each judging the fold it never saw, and one on all",
        "--folds",
        metavar="K",
        ge=2,
    ),
    "epochs": Option(int, 3, "passes over the training texts", "--epochs", metavar="N", ge=1),
    "max_steps": Option(
        int,
        None,
        "stop each model after this many optimizer steps (overrides epochs)",
        "--max-steps",
        metavar="N",
        ge=1,
    ),
    "batch_size": Option(int, 32, "texts per forward pass (per GPU)", "--batch-size", ge=1),
    "learning_rate": Option(
        float, 5e-5, "AdamW learning rate of the pretrained encoder", "--learning-rate", gt=0
    ),
    "head_learning_rate": Option(
        float,
        3e-3,
        "learning rate of the new classification head (and of a from-scratch model)",
        "--head-learning-rate",
        gt=0,
    ),
    "seed": Option(int, 0, "seed of the folds, batch order, dropout and the new head", "--seed"),
    "max_train_samples": Option(
        int, None, "cap on training texts per model, for quick runs", "--max-train-samples", ge=1
    ),
    "allow_invalid": Option(
        bool, False, "train even when the last validation failed or never ran", "--allow-invalid"
    ),
    "baseline": Option(
        bool, True, "also fit the TF-IDF + linear baseline on the same folds", "--baseline/--no-baseline"
    ),
    "processes": Option(
        int,
        1,
        "training processes of the transformer: above 1 the flow starts torchrun with that many "
        "(one per GPU) and registers their models once, as one flow run",
        "--processes",
        metavar="N",
        ge=1,
    ),
    "transformer": Option(
        bool,
        True,
        "fine-tune the base model (--no-transformer: only the baseline and the frozen-encoder models, "
        "e.g. all of ImageNet's texts on a CPU)",
        "--transformer/--no-transformer",
    ),
    "resume": Option(
        bool,
        True,
        "continue from checkpoints and reuse finished models of the same data and settings",
        "--resume/--no-resume",
    ),
    "frozen_encoder": Option(
        str,
        "auto",
        "sentence encoder of the frozen-encoder and class-similarity scorers: auto (the offline MiniLM "
        "when installed, else the base model when pretrained), a model name or folder, or none",
        "--frozen-encoder",
        metavar="NAME_OR_PATH",
    ),
}


def default(name: str) -> Any:
    """The default of the option `name`."""
    return TRAIN_OPTIONS[name].default


def parameter(name: str):
    """The pydantic field (description and bounds) of the flow parameter `name`."""
    return TRAIN_OPTIONS[name].field()


def config_field(name: str):
    """A `TrainConfig` field with the default and help of the option `name`."""
    option = TRAIN_OPTIONS[name]
    return field(default=option.default, metadata={"help": option.help})
