"""docs/simulator.md documents exactly the ``x-sim-*`` headers and behaviours the simulator has."""

from __future__ import annotations

import re
from pathlib import Path

from streamwatch.simulator import profile, server
from streamwatch.simulator.profile import BEHAVIOURS
from tests.conftest import REPO_ROOT

DOC = (REPO_ROOT / "docs" / "simulator.md").read_text(encoding="utf-8")
SOURCES = "".join(
    Path(module.__file__).read_text(encoding="utf-8")
    for module in (profile, server)
    if module.__file__
)


class TestSimulatorDocs:
    """Every header the simulator reads is in the table, and the table names no other."""

    def test_headers_match_the_code(self) -> None:
        """The header table equals the set of x-sim-* names the code reads."""
        read = set(re.findall(r'_(?:int|ms|flag)_header\(headers, "([a-z-]+)"', SOURCES))
        read |= set(re.findall(r'HEADER_PREFIX \+ "([a-z-]+)"', SOURCES))
        read |= set(re.findall(r'after\("([a-z]+-after)"', SOURCES))  # the interruption points
        documented = set(re.findall(r"^\| `x-sim-([a-z-]+)` \|", DOC, flags=re.MULTILINE))
        assert read  # the pattern still finds the code's header reads
        assert documented == read

    def test_behaviours_match_the_code(self) -> None:
        """The behaviour table equals the simulator's behaviours."""
        documented = set(re.findall(r"^\| `([a-z_]+)` \|", DOC, flags=re.MULTILINE))
        assert documented == set(BEHAVIOURS)
