"""Ingestion from archives: ILSVRC tars (nested class tars) and Hugging Face parquet shards."""

from __future__ import annotations

from pathlib import Path

from tasks.errors import InputError


def is_tar(path: Path) -> bool:
    return path.name.endswith(".tar")


def is_parquet(path: Path) -> bool:
    return path.name.endswith(".parquet")


def find_archives(root: Path) -> list[Path]:
    """ILSVRC tars or parquet shards directly in `root` (or in its data/ folder)."""
    return []


def locate_archives(root: Path, files: list[Path], split: str, labels_path: Path | None):
    raise InputError(f"{root}: archives are not supported yet")


def read_devkit_labels(path: Path) -> dict[str, str]:
    raise InputError(f"{path}: devkit labels are not supported yet")
