"""The sans-IO core imports nothing that does I/O, reads a clock, logs, or draws randomness."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

CORE = REPO_ROOT / "streamwatch" / "core"
FORBIDDEN = frozenset(
    {
        "asyncio",
        "socket",
        "time",
        "logging",
        "aiohttp",
        "prometheus_client",
        "opentelemetry",
        "structlog",
        "os",
        "random",
        "httpx",
        "threading",
        "selectors",
        "subprocess",
        "datetime",
    }
)


def imported_roots(path: Path) -> set[str]:
    """Top-level module names a file imports (absolute imports, at any depth in the file)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            roots.add("__import__")
    return roots


class TestCoreImports:
    """No module of streamwatch.core imports an I/O, clock, logging or randomness module."""

    def test_core_files_exist(self) -> None:
        assert len(list(CORE.rglob("*.py"))) >= 5

    @pytest.mark.parametrize(
        "path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE))
    )
    def test_ast_scan(self, path: Path) -> None:
        assert imported_roots(path) & (FORBIDDEN | {"__import__", "importlib"}) == set()

    def test_scan_detects_a_forbidden_import(self, tmp_path: Path) -> None:
        sample = tmp_path / "sample.py"
        sample.write_text(
            "import os.path\nfrom time import monotonic\ndef f():\n    import socket\n"
        )
        assert imported_roots(sample) >= {"os", "time", "socket"}

    def test_import_linter_contract(self) -> None:
        lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
        assert lint_imports is not None, "lint-imports missing: install the dev extra"
        result = subprocess.run(
            [lint_imports, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "The sans-IO core does no I/O, reads no clock and logs nothing KEPT" in result.stdout
        assert " 0 broken" in result.stdout
