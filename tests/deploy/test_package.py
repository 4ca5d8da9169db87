"""The package a user ``pip install``s: the wheel carries the monitoring mixin and its licence, and
``streamwatch dashboards export`` writes the dashboards and rules from it, with thresholds and
links as options."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from streamwatch.mixin.output import CHECKOUT_PATHS
from tests.conftest import REPO_ROOT


def export(directory: Path, *options: str, pythonpath: Path | None = None) -> str:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run(
        [sys.executable, "-m", "streamwatch", "dashboards", "export", str(directory), *options],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=directory.parent,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def alerts(directory: Path) -> dict[str, dict[str, object]]:
    doc = yaml.safe_load((directory / "prometheus" / "alerts.yml").read_text())
    return {rule["alert"]: rule for group in doc["groups"] for rule in group["rules"]}


class TestDashboardsExport:
    """``streamwatch dashboards export DIR`` writes the same files the repository commits."""

    def test_default_export_equals_the_committed_files(self, tmp_path: Path) -> None:
        """Every exported file is byte-identical to its committed twin in the checkout."""
        out = tmp_path / "mixin"
        export(out)
        for name, committed in CHECKOUT_PATHS.items():
            assert (out / name).read_text() == (REPO_ROOT / committed).read_text(), name

    def test_options_set_thresholds_and_links(self, tmp_path: Path) -> None:
        """--alert, --grafana-url and --runbook-url change the rules and every alert's links."""
        out = tmp_path / "mixin"
        export(
            out,
            "--alert", "stall_ratio=0.2",
            "--grafana-url", "https://grafana.test.internal/",
            "--runbook-url", "https://wiki.test.internal/streamwatch",
        )  # fmt: skip
        rules = alerts(out)
        stall_expr = str(rules["StreamwatchStallRateHigh"]["expr"])
        assert "route:streamwatch_stalls_per_stream:ratio_rate5m > 0.2" in stall_expr
        for name, rule in rules.items():
            annotations = rule["annotations"]
            assert isinstance(annotations, dict)
            assert (
                annotations["runbook_url"]
                == f"https://wiki.test.internal/streamwatch#{name.lower()}"
            )
            assert annotations["dashboard_url"].startswith("https://grafana.test.internal/d/")

    @pytest.mark.parametrize(
        ("options", "named"),
        [
            (["--alert", "nosuch=1"], "unknown alert 'nosuch'"),
            (["--alert", "stall_ratio"], "expected NAME=NUMBER"),
            (["--ttft-threshold", "7"], "not a TTFT bucket bound"),
        ],
    )
    def test_bad_options_exit_2(self, tmp_path: Path, options: list[str], named: str) -> None:
        """A bad option stops the export with status 2 and says which, writing nothing."""
        out = tmp_path / "mixin"
        result = subprocess.run(
            [sys.executable, "-m", "streamwatch", "dashboards", "export", str(out), *options],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert named in result.stderr
        assert not out.exists()


class TestWheel:
    """The built wheel ships the mixin, its configuration and the licence, and exports alone."""

    def test_wheel_contents_and_export_from_it(self, tmp_path: Path) -> None:
        build = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
             str(REPO_ROOT)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert build.returncode == 0, build.stderr
        [wheel] = tmp_path.glob("streamwatch-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
            meta = archive.read(metadata).decode()
            archive.extractall(tmp_path / "unpacked")
        assert {
            "streamwatch/mixin/export.py",
            "streamwatch/mixin/config.yaml",
            "streamwatch/cli.py",
        } <= names
        assert any(
            n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names
        )
        assert "Apache-2.0" in meta
        # The wheel's files first on the path (the dependencies come from this environment).
        unpacked = tmp_path / "unpacked"
        where = subprocess.run(
            [sys.executable, "-c", "import streamwatch.mixin.export as m; print(m.__file__)"],
            capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(unpacked)},
        )  # fmt: skip
        assert where.stdout.strip().startswith(str(unpacked))
        out = tmp_path / "from-wheel"
        export(out, pythonpath=unpacked)
        assert (out / "grafana" / "streamwatch-overview.json").is_file()
        assert (out / "kubernetes" / "prometheusrule.yaml").is_file()
