"""What an export is cut into: its formats, its splits and the bounds of its shard files."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasks.common.errors import InputError

FORMATS = ("parquet", "webdataset", "hf")
PARQUET_DATA = "data"
# Warehouse split -> export split. "validation" is the name `datasets` and the Hub use.
SPLIT_NAMES = {"train": "train", "val": "validation"}
DEFAULT_SHARD_SIZE = 1000
DEFAULT_SHARD_MAX_MB = 500.0
DEFAULT_SEED = 0


@dataclass
class Options:
    """How an export is cut: shard bounds, seed, filter."""

    shard_size: int = DEFAULT_SHARD_SIZE
    shard_max_bytes: int = int(DEFAULT_SHARD_MAX_MB * 2**20)
    seed: int = DEFAULT_SEED
    only_with_text: bool = False


def options_from(shard_size: int, shard_max_mb: float, seed: int, only_with_text: bool) -> Options:
    """Options from the command's units (MB), checked."""
    if not shard_max_mb > 0 or not math.isfinite(shard_max_mb):
        raise InputError(f"--shard-max-mb must be more than 0, not {shard_max_mb}")
    if shard_size < 1:
        raise InputError(f"--shard-size must be at least 1, not {shard_size}")
    return Options(shard_size, max(1, int(shard_max_mb * 2**20)), seed, only_with_text)
