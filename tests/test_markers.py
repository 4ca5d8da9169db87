"""The default run leaves out what is marked long; ``-m`` still selects it (pyproject's addopts)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO_ROOT

LONG = ("soak", "fuzz_long")


def default_selection() -> str:
    """The ``-m`` expression of pyproject's addopts: what the README's test command selects."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))
    args = shlex.split(config["tool"]["pytest"]["ini_options"]["addopts"])
    return args[args.index("-m") + 1]


# The files that hold the long runs (the soaks and the long fuzz).
FILES = (
    "tests/reliability/test_limits.py",
    "tests/reliability/test_properties.py",
    "tests/reliability/test_security.py",
)
SOAK = "tests/reliability/test_limits.py::TestSlowConsumer::test_one_gibibyte"
FUZZ_LONG = "tests/reliability/test_properties.py::TestSseSplits::test_long"


class TestMarkersSelect:
    """``soak`` and ``fuzz_long`` tests are deselected by default and selected by ``-m``."""

    def test_default_run_has_no_long_runs(self, request: pytest.FixtureRequest) -> None:
        """This session, run as the README says, selected no test marked soak or fuzz_long."""
        if request.config.option.markexpr != default_selection():
            pytest.skip(f"run with -m {request.config.option.markexpr!r}, not the default")
        long = [
            item.nodeid
            for item in request.session.items
            if any(item.get_closest_marker(marker) for marker in LONG)
        ]
        assert long == []

    def test_m_selects_the_long_runs(self) -> None:
        """``-m "soak or fuzz_long"`` after the configured options selects the long runs."""
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                "-m",
                "soak or fuzz_long",
                *FILES,
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        selected = {line for line in result.stdout.splitlines() if "::" in line}
        assert {SOAK, FUZZ_LONG} <= selected
