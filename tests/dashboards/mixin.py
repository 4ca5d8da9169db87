"""Read the generated mixin files back: every PromQL expression and every metric name they use."""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

# CI sets this: a missing tool (promtool, prometheus, kubernetes-validate) then fails the test
# instead of skipping it.
REQUIRE_TOOLS = os.environ.get("STREAMWATCH_REQUIRE_TOOLS") == "1"


def skip_unless(present: bool, reason: str) -> None:
    """Skip the calling test when a tool is missing, or fail it under STREAMWATCH_REQUIRE_TOOLS=1."""
    if present:
        return
    if REQUIRE_TOOLS:
        pytest.fail(f"{reason}; STREAMWATCH_REQUIRE_TOOLS=1 forbids skipping")
    pytest.skip(reason)


def import_or_skip(module: str, reason: str) -> ModuleType:
    """Import an optional test dependency, under the same rule as :func:`skip_unless`."""
    try:
        return importlib.import_module(module)
    except ImportError:
        skip_unless(False, reason)
        raise


REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
MIXIN_CONFIG = REPO / "streamwatch" / "mixin" / "config.yaml"  # thresholds and links
RULE_FILES = (
    DASHBOARDS / "prometheus" / "recording_rules.yml",
    DASHBOARDS / "prometheus" / "alerts.yml",
)
DASHBOARD_FILES = tuple(sorted((DASHBOARDS / "grafana").glob("*.json")))

# Grafana variables replaced so a dashboard query can be evaluated by Prometheus directly.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def _panel_targets(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for panel in panels:
        yield from _panel_targets(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield f"{panel['title']} [{target['refId']}]", target["expr"]


def dashboard_targets(path: Path) -> list[tuple[str, str]]:
    """Every panel query of one dashboard, verbatim, with its panel title and refId."""
    return list(_panel_targets(json.loads(path.read_text())["panels"]))


def dashboard_exprs(path: Path) -> list[str]:
    """Every panel query of one dashboard, verbatim."""
    return [expr for _, expr in dashboard_targets(path)]


def dashboard_variables(path: Path) -> list[dict[str, Any]]:
    variables: list[dict[str, Any]] = json.loads(path.read_text())["templating"]["list"]
    return variables


def evaluable(expr: str, values: Mapping[str, str] | None = None) -> str:
    """A dashboard query with Grafana's variables replaced by values Prometheus accepts: a
    template variable by its entry in ``values`` (as if selected in Grafana), else by ``.*``."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    chosen = values or {}
    return re.sub(r"\$(\w+)", lambda m: chosen.get(m[1], ".*"), expr)


_LABEL_VALUES = re.compile(r"^label_values\((.*), (\w+)\)$")


def template_query(query: str) -> str:
    """Grafana's ``label_values(selector, label)`` as the PromQL that answers it."""
    match = _LABEL_VALUES.match(query)
    return f"count by ({match[2]}) ({match[1]})" if match else query


def rules(path: Path) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def named_exprs(values: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every expression of the mixin, ready to evaluate, by where it comes from (dashboard panel
    or variable, recording rule, alert); ``values`` as for :func:`evaluable`."""
    exprs: dict[str, str] = {}
    for path in DASHBOARD_FILES:
        for where, expr in dashboard_targets(path):
            exprs[f"{path.stem}: {where}"] = evaluable(expr, values)
        for v in dashboard_variables(path):
            if v["type"] == "query":
                exprs[f"{path.stem}: ${v['name']}"] = evaluable(
                    template_query(v["query"]["query"]), values
                )
    for path in RULE_FILES:
        for i, rule in enumerate(rules(path)):
            exprs[f"{path.stem}: {rule.get('record') or rule['alert']} #{i}"] = rule["expr"]
    return exprs


def all_exprs() -> list[str]:
    """Every expression of the mixin, ready to evaluate."""
    return list(named_exprs().values())


_NAME = re.compile(r"(?<![\w:])(streamwatch_\w+)")
_RECORDED = re.compile(r"[\w]+:(streamwatch_\w+?)(?:_bucket)?:\w+")


def metric_names(text: str) -> set[str]:
    """Raw metric names (``streamwatch_...``) referenced, excluding recorded-rule names."""
    text = _RECORDED.sub("", text)
    return set(_NAME.findall(text))
