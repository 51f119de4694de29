"""Every third-party module the package imports is declared in pyproject.toml, and what is declared is used.

Imports are read with `ast` (including those inside functions), mapped to the distributions that
install them with `importlib.metadata.packages_distributions()`, and compared with the requirements
of `[project]` (a requirement with extras, `dask[distributed]`, declares those extras' packages too).
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("flows", "tasks", "expectations", "warehouse")
# Declared for what they bring, not for an import of ours.
NOT_IMPORTED = {
    "duckdb-extension-ducklake",  # extension files loaded by path (warehouse/db.py)
    "duckdb-extension-sqlite-scanner",
    "duckdb-extension-postgres-scanner",
}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement(text: str) -> tuple[str, list[str]]:
    match = _NAME.match(text)
    assert match, text
    extras = [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
    return canonical(match.group(1)), extras


def provided(text: str) -> set[str]:
    """The distributions a requirement installs by name: itself and the packages of its extras."""
    name, extras = requirement(text)
    names = {name}
    for dependency in metadata.requires(name) or []:
        marker = _EXTRA.search(dependency)
        if marker and marker.group(1) in extras:
            names.add(requirement(dependency)[0])
    return names


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared() -> set[str]:
    """Distributions named in [project] dependencies and optional-dependencies, extras included."""
    texts = list(project()["dependencies"])
    for group in project().get("optional-dependencies", {}).values():
        texts += group
    return set().union(*(provided(text) for text in texts))


def imported_modules() -> dict[str, list[str]]:
    """Top-level module name -> files importing it, for every absolute import in the package."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], []).append(str(path.relative_to(ROOT)))
    return found


def third_party(modules: dict[str, list[str]]) -> dict[str, list[str]]:
    first_party = set(PACKAGES) | {"__future__"}
    return {
        name: files
        for name, files in modules.items()
        if name not in first_party and name not in sys.stdlib_module_names
    }


def test_every_third_party_import_is_declared():
    distributions = metadata.packages_distributions()
    names = declared()
    undeclared, unknown = [], []
    for module, files in sorted(third_party(imported_modules()).items()):
        owners = distributions.get(module)
        if not owners:
            unknown.append(f"{module} (imported by {files[0]}; no installed distribution provides it)")
        elif not {canonical(o) for o in owners} & names:
            undeclared.append(f"{module} from {'/'.join(owners)} (imported by {files[0]})")
    assert not unknown, unknown
    assert not undeclared, "imported but not declared in pyproject.toml: " + "; ".join(undeclared)


def test_every_declared_runtime_dependency_is_imported():
    distributions = metadata.packages_distributions()
    used = {
        canonical(owner)
        for module in third_party(imported_modules())
        for owner in distributions.get(module, [])
    }
    unused = [
        text
        for text in project()["dependencies"]
        if not provided(text) & used and requirement(text)[0] not in NOT_IMPORTED
    ]
    assert not unused, f"declared in pyproject.toml but imported nowhere in {', '.join(PACKAGES)}: {unused}"


def test_import_scan_sees_imports_inside_functions():
    modules = imported_modules()
    # scipy is imported only inside functions (tasks/model/baseline.py, tasks/ingest/layout.py)
    assert "scipy" in modules
    assert "prefect" in modules and "os" not in third_party(modules)
