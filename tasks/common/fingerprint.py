"""A fingerprint of code: source files' paths and bytes, and the versions of installed packages.

Validate and curate keep an earlier outcome only while the code that decided it is the same; any
edit to one of the files counts as new code, which at worst redoes the work once more than needed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def source_fingerprint(files: Iterable[Path], packages: Iterable[str] = ()) -> str:
    """sha256 (hex) over each file's path within the checkout and its bytes, then each package's version."""
    digest = hashlib.sha256()
    for path in files:
        resolved = path.resolve()
        name = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else path.name
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for package in packages:
        try:
            digest.update(f"{package}=={version(package)}\0".encode())
        except PackageNotFoundError:
            pass
    return digest.hexdigest()
