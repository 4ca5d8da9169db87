"""The default run leaves out what is marked long; ``-m`` still selects it (pyproject's addopts)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

# The files that hold the long runs (the soak and the long fuzz).
FILES = ("tests/reliability/test_limits.py", "tests/reliability/test_properties.py")
SOAK = "tests/reliability/test_limits.py::TestSlowConsumer::test_one_gibibyte"
FUZZ_LONG = "tests/reliability/test_properties.py::TestSseSplits::test_long"


def collected(*args: str) -> set[str]:
    """Node ids pytest collects from ``FILES`` with ``args`` after the configured ones."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *args, *FILES],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {line for line in result.stdout.splitlines() if "::" in line}


class TestMarkersSelect:
    """``soak`` and ``fuzz_long`` tests are deselected by default and selected by ``-m``."""

    def test_long_runs_only_on_request(self) -> None:
        """``-m "soak or fuzz_long"`` selects the long runs; the default collection has none of them."""
        default = collected()
        long = collected("-m", "soak or fuzz_long")
        assert {SOAK, FUZZ_LONG} <= long
        assert default
        assert not long & default, f"long runs in the default run: {long & default}"
