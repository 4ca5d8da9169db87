"""The README stays true to the code it documents."""

from __future__ import annotations

import re

from streamwatch.config import OPTIONS
from streamwatch.metricspec import BY_NAME, PROBE_FAMILIES
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


class TestReadme:
    """Every option and metric the code has is documented, and nothing documented is missing."""

    def test_every_option_is_in_the_configuration_table(self) -> None:
        documented = set(re.findall(r"^\| `--([a-z-]+)` \|", README, flags=re.MULTILINE))
        assert documented == {name.replace("_", "-") for name in OPTIONS}

    def test_every_metric_is_in_the_metric_table(self) -> None:
        documented = set(re.findall(r"^\| `(streamwatch_[a-z_]+)` \|", README, flags=re.MULTILINE))
        assert documented == set(BY_NAME) | {f.name for f in PROBE_FAMILIES}
