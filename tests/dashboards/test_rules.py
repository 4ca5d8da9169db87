"""The monitoring mixin: promtool-valid rules, passing rule tests, fresh generated output, real names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamwatch import metricspec as spec
from streamwatch.metricspec import BY_NAME
from streamwatch.mixin.output import TABLE_END, TABLE_START, with_metric_table
from streamwatch.mixin.promql import UnknownLabelError, dashboard_selector, sum_rate
from tests.dashboards.mixin import (
    DASHBOARD_FILES,
    DASHBOARDS,
    MIXIN_CONFIG,
    REPO,
    RULE_FILES,
    dashboard_exprs,
    dashboard_variables,
    metric_names,
    rules,
    skip_unless,
)

PROMTOOL = shutil.which("promtool")
GENERATE = DASHBOARDS / "generate.py"
PROMETHEUS_RULE = (
    REPO / "deploy" / "kubernetes" / "components" / "prometheus-operator" / "prometheusrule.yaml"
)


#: What ``streamwatch serve`` and ``streamwatch probe`` export.
EXPORTED = {**BY_NAME, **{f.name: f for f in spec.PROBE_FAMILIES}}


def exported(name: str) -> str | None:
    """The exported metric a referenced series name belongs to, or None."""
    if name in EXPORTED:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in EXPORTED and EXPORTED[base].kind == "histogram":
            return base
    return None


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


class TestPromtool:
    """promtool accepts every rule file and the promtool unit tests pass."""

    @pytest.fixture(autouse=True)
    def _promtool(self) -> None:
        skip_unless(PROMTOOL is not None, "promtool not on PATH (apt package prometheus)")

    def test_check_rules(self) -> None:
        """`promtool check rules` passes on the recording and alert rules."""
        result = run(str(PROMTOOL), "check", "rules", *map(str, RULE_FILES))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_prometheus_rule_spec_is_valid(self, tmp_path: Path) -> None:
        """The Kubernetes PrometheusRule's groups pass `promtool check rules` too."""
        spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
        path = tmp_path / "rules.yml"
        path.write_text(yaml.safe_dump(spec))
        result = run(str(PROMTOOL), "check", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr

    def test_rule_unit_tests(self) -> None:
        """`promtool test rules` passes for every dashboards/tests/*.yml."""
        tests = sorted((DASHBOARDS / "tests").glob("*.yml"))
        assert tests
        result = run(str(PROMTOOL), "test", "rules", *map(str, tests), cwd=DASHBOARDS / "tests")
        assert result.returncode == 0, result.stdout + result.stderr

    def test_every_alert_is_unit_tested_firing_and_silent(self) -> None:
        """Each alert appears in a promtool test both with expected alerts and with none."""
        fired: set[str] = set()
        silent: set[str] = set()
        for path in (DASHBOARDS / "tests").glob("*.yml"):
            for test in yaml.safe_load(path.read_text())["tests"]:
                for case in test.get("alert_rule_test", []):
                    (fired if case["exp_alerts"] else silent).add(case["alertname"])
        alerts = {r["alert"] for r in rules(RULE_FILES[1])}
        assert alerts <= fired
        assert alerts <= silent


class TestGenerator:
    """The committed output is what the generator produces, and the check notices drift."""

    def test_check_mode_passes(self) -> None:
        """`generate.py --check` exits 0 on the committed tree."""
        result = run(sys.executable, str(GENERATE), "--check")
        assert result.returncode == 0, result.stdout + result.stderr

    def test_check_mode_notices_a_changed_threshold(self, tmp_path: Path) -> None:
        """A config change makes --check fail with a diff naming the alerts file."""
        config = yaml.safe_load(MIXIN_CONFIG.read_text())
        config["alerts"]["truncation_ratio"]["threshold"] = 0.5
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        result = run(sys.executable, str(GENERATE), "--check", "--config", str(path))
        assert result.returncode == 1
        assert "dashboards/prometheus/alerts.yml" in result.stdout

    def test_slo_threshold_must_be_a_bucket_bound(self, tmp_path: Path) -> None:
        """A TTFT objective between buckets is refused (the SLI reads one bucket)."""
        config = yaml.safe_load(MIXIN_CONFIG.read_text())
        config["ttft_slo"]["threshold_seconds"] = 11
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        result = run(sys.executable, str(GENERATE), "--check", "--config", str(path))
        assert result.returncode != 0
        assert "not a TTFT bucket bound" in result.stderr

    def test_prometheus_rule_matches_the_rule_files(self) -> None:
        """The Kubernetes PrometheusRule carries exactly the recording and alert groups."""
        spec = yaml.safe_load(PROMETHEUS_RULE.read_text())["spec"]
        groups = [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
        assert spec["groups"] == groups


class TestMetricNames:
    """Dashboards and rules use only exported names, and every exported metric is on a dashboard."""

    def test_every_referenced_name_is_exported(self) -> None:
        """No dashboard or rule references a streamwatch_* series the Metrics module lacks."""
        texts = [p.read_text() for p in (*DASHBOARD_FILES, *RULE_FILES)]
        names = set().union(*(metric_names(t) for t in texts))
        assert names
        unknown = {n for n in names if exported(n) is None}
        assert not unknown

    def test_every_exported_metric_is_on_the_overview(self) -> None:
        """Each metric of the contract is queried by some overview panel."""
        overview = DASHBOARDS / "grafana" / "streamwatch-overview.json"
        used = {exported(n) for e in dashboard_exprs(overview) for n in metric_names(e)}
        assert set(EXPORTED) - used == set()

    def test_latency_panels_have_exemplars(self) -> None:
        """Every histogram query of a graph or heatmap panel asks Grafana for exemplars."""
        for path in DASHBOARD_FILES:
            for panel in json.loads(path.read_text())["panels"]:
                if panel["type"] not in {"timeseries", "heatmap"}:
                    continue  # stat panels cannot show exemplars
                for target in panel.get("targets", []):
                    if "_bucket{" in target["expr"]:
                        assert target["exemplar"], (path.name, panel["title"])

    def test_dashboards_have_the_template_variables(self) -> None:
        """Both dashboards offer datasource, job, instance, route, side, api and model."""
        for path in DASHBOARD_FILES:
            names = [v["name"] for v in json.loads(path.read_text())["templating"]["list"]]
            assert names == ["datasource", "job", "instance", "route", "side", "api", "model"]


class TestRunbook:
    """Every alert links to a runbook section that exists."""

    def test_runbook_has_a_section_per_alert(self) -> None:
        """Each runbook_url anchor is a heading in dashboards/runbook.md."""
        headings = {
            m.group(1).lower()
            for m in re.finditer(r"^## (\S+)$", (DASHBOARDS / "runbook.md").read_text(), re.M)
        }
        for rule in rules(RULE_FILES[1]):
            anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
            assert anchor in headings, rule["alert"]
            assert rule["annotations"]["dashboard_url"].startswith("http")
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["for"]


class TestSpecDrivenQueries:
    """The mixin's PromQL is built from the metric spec and refuses what the spec does not have."""

    def test_a_label_the_family_lacks_is_refused(self) -> None:
        """Grouping the TTFB histogram by a label it does not carry fails at generation time."""
        with pytest.raises(UnknownLabelError, match="no label outcome"):
            sum_rate(spec.TTFB, "", spec.OUTCOME)

    def test_a_value_outside_the_label_set_is_refused(self) -> None:
        """An outcome matcher with a value the core never produces fails at generation time."""
        with pytest.raises(UnknownLabelError, match="timed_out"):
            dashboard_selector(spec.STREAMS, outcome="timed_out")

    def test_real_traffic_never_reads_canary_streams(self) -> None:
        """Every selector of a proxy family outside the probe row and alerts excludes source="probe"."""
        probe_alerts = {"StreamwatchProbeFailing", "StreamwatchProbeTTFTHigh"}
        exprs = [e for path in DASHBOARD_FILES for e in dashboard_exprs(path)]
        exprs += [
            r["expr"]
            for path in RULE_FILES
            for r in rules(path)
            if r.get("alert") not in probe_alerts
        ]
        exprs += [v["query"]["query"] for v in dashboard_variables(DASHBOARD_FILES[0])[1:]]
        selectors = [
            (name, matchers)
            for expr in exprs
            for name, matchers in re.findall(r"(streamwatch_\w+)\{([^}]*)\}", expr)
            if exported(name) in BY_NAME and exported(name) != spec.BUILD_INFO.name
        ]
        assert len(selectors) > 50
        leaks = [
            (name, matchers)
            for name, matchers in selectors
            if not re.search(r'source(!="probe"|="(probe|reported|estimated)")', matchers)
        ]
        assert not leaks
        assert sum('source="probe"' in m for _, m in selectors) == 2  # the probe row's TTFT

    def test_the_dashboard_selector_has_only_the_family_labels(self) -> None:
        """A (route, api) gauge is not filtered by $model, a stream family is."""
        assert "$model" not in dashboard_selector(spec.STREAMS_ACTIVE)
        assert 'model=~"$model"' in dashboard_selector(spec.STREAMS)


class TestReadmeTable:
    """The README's metric table is the spec's, and a stale one is rewritten."""

    def test_the_committed_table_is_generated(self) -> None:
        """README.md holds exactly the table the spec renders."""
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        assert TABLE_START + spec.markdown_table() + TABLE_END in readme

    def test_a_stale_table_is_replaced(self) -> None:
        """Text between the markers is replaced, text around them kept."""
        text = f"before\n{TABLE_START}| stale |\n{TABLE_END}after\n"
        assert with_metric_table(text) == (
            f"before\n{TABLE_START}{spec.markdown_table()}{TABLE_END}after\n"
        )

    def test_missing_markers_are_an_error(self) -> None:
        """A README without the markers is not silently left stale."""
        with pytest.raises(ValueError, match="markers"):
            with_metric_table("no table here\n")
