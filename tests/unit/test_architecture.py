"""ARCHITECTURE.md names every module of the four code folders, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("flows", "tasks", "expectations", "warehouse")
NAMED = re.compile(r"`((?:" + "|".join(FOLDERS) + r")/[\w/]*\.py)`")


def named_paths() -> set[str]:
    return set(NAMED.findall((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")))


def module_paths() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for folder in FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_every_module_is_named():
    assert sorted(module_paths() - named_paths()) == []


def test_every_named_module_exists():
    assert sorted(named_paths() - module_paths()) == []


def test_every_module_has_its_own_line():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^- `([\w/]+\.py)`: \S", text, flags=re.M))
    assert sorted(module_paths() - listed) == []
