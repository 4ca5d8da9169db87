"""The sans-IO core imports nothing that does I/O, reads a clock, logs, or draws randomness.

The forbidden list is the import-linter contract in pyproject.toml, read here so there is one list:
lint-imports enforces it on the import graph, the AST scan below on every statement (including
imports inside functions) of every file of the core.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

CORE_PACKAGE = "streamwatch.core"


def core_contract() -> dict[str, Any]:
    """The ``forbidden`` contract of pyproject.toml whose source is the core."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))
    contracts = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["type"] == "forbidden" and CORE_PACKAGE in c["source_modules"]
    ]
    assert len(contracts) == 1, f"expected one forbidden contract on {CORE_PACKAGE}: {contracts}"
    return contracts[0]


CONTRACT = core_contract()
FORBIDDEN = tuple(CONTRACT["forbidden_modules"])
# Dynamic imports would dodge both checks.
DYNAMIC = ("__import__", "importlib")
CORE = REPO_ROOT.joinpath(*CORE_PACKAGE.split("."))
CORE_FILES = sorted(CORE.rglob("*.py"))


def imported_modules(path: Path, root: Path = REPO_ROOT) -> set[str]:
    """Dotted names a file imports anywhere in it, relative imports resolved, ``__import__`` too."""
    package = list(path.relative_to(root).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.add("__import__")
    return found


def forbidden_in(modules: set[str], forbidden: tuple[str, ...]) -> set[str]:
    return {m for m in modules for f in forbidden if m == f or m.startswith(f + ".")}


class TestCoreImports:
    """No module of streamwatch.core imports a module the pyproject.toml core contract forbids."""

    def test_contract_covers_the_core(self) -> None:
        """The contract's source is the core package on disk, so the scan below has files to read."""
        assert (CORE / "__init__.py").is_file()
        assert CORE_FILES

    @pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(CORE)))
    def test_ast_scan(self, path: Path) -> None:
        """The file imports nothing forbidden, at any depth, and imports nothing dynamically."""
        assert forbidden_in(imported_modules(path), FORBIDDEN + DYNAMIC) == set()

    def test_scan_detects_a_forbidden_import(self, tmp_path: Path) -> None:
        """Absolute, nested, from- and relative imports of forbidden modules are all found."""
        package = tmp_path / "streamwatch" / "core"
        package.mkdir(parents=True)
        sample = package / "sample.py"
        sample.write_text(
            "import os.path\nfrom time import monotonic\nfrom .. import proxy\n"
            "def f():\n    import socket\n    __import__('x')\n"
        )
        modules = imported_modules(sample, root=tmp_path)
        assert forbidden_in(modules, FORBIDDEN + DYNAMIC) >= {
            "os.path",
            "time",
            "streamwatch.proxy",
            "socket",
            "__import__",
        }

    def test_import_linter_keeps_the_contract(self) -> None:
        """lint-imports, run on the repository, keeps the same contract and breaks none."""
        lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
        assert lint_imports is not None, "lint-imports missing: install the dev extra"
        result = subprocess.run(
            [lint_imports, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{CONTRACT['name']} KEPT" in result.stdout
        assert " 0 broken" in result.stdout
