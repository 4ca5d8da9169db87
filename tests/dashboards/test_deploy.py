"""The compose and Prometheus deployment files parse and agree with the CLI and ports (Kubernetes:
tests/deploy/test_kubernetes.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from streamwatch.config import Settings, add_arguments, load_settings
from streamwatch.simulator.__main__ import build_parser as simulator_parser
from tests.dashboards.mixin import REPO

DEPLOY = REPO / "deploy"


class TestCompose:
    """The compose demo wires simulator -> streamwatch -> Prometheus -> Grafana."""

    def test_services_and_commands(self) -> None:
        """streamwatch proxies the simulator and exposes proxy and admin ports."""
        compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
        services = compose["services"]
        assert set(services) == {"simulator", "streamwatch", "prometheus", "grafana"}
        assert services["simulator"]["command"] == [
            "simulate",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
        ]
        cmd = services["streamwatch"]["command"]
        assert cmd[cmd.index("--upstream") + 1] == "http://simulator:9000"
        assert cmd[cmd.index("--admin-listen") + 1] == "0.0.0.0:9464"
        assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]

    def test_stop_grace_period_outlasts_the_drain(self) -> None:
        """docker stop waits longer than the shutdown delay plus the drain, so a draining stream is
        not SIGKILLed at docker's default 10 s."""
        sw = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["streamwatch"]
        grace = float(str(sw["stop_grace_period"]).removesuffix("s"))
        settings = serve_settings(sw["command"], sw.get("environment", {}))
        assert settings.shutdown_delay + settings.drain_timeout < grace

    def test_admin_port_is_not_published(self) -> None:
        """Only the proxy port is published to the host; the admin port stays on the network."""
        sw = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["streamwatch"]
        assert [str(p) for p in sw["ports"]] == ["8080:8080"]

    def test_mounted_paths_exist(self) -> None:
        """Every bind-mounted host path exists in the repository."""
        compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
        for service in compose["services"].values():
            for volume in service.get("volumes", []):
                assert (DEPLOY / volume.split(":")[0]).exists(), volume

    def test_prometheus_scrapes_the_admin_port_with_the_rules(self) -> None:
        """The scrape job is named streamwatch and loads both rule files."""
        config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
        [job] = config["scrape_configs"]
        assert job["job_name"] == "streamwatch"
        assert job["static_configs"][0]["targets"] == ["streamwatch:9464"]
        assert {Path(r).name for r in config["rule_files"]} == {"recording_rules.yml", "alerts.yml"}


def serve_settings(argv: list[str], environ: dict[str, str]) -> Settings:
    """What ``streamwatch <argv>`` would run with: the real flag parser and settings loader."""
    assert argv[0] == "serve"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load_settings(parser.parse_args(argv[1:]), environ)


class TestCommandsParse:
    """Every streamwatch command line in deploy/ is accepted by the real CLI parsers."""

    def test_compose_commands(self) -> None:
        """The compose simulator and serve commands parse and listen where the ports say."""
        services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
        simulate = services["simulator"]["command"]
        assert simulate[0] == "simulate"
        args = simulator_parser().parse_args(simulate[1:])
        assert (args.host, args.port) == ("0.0.0.0", 9000)
        settings = serve_settings(services["streamwatch"]["command"], {})
        assert settings.listen == ("0.0.0.0", 8080)
        assert settings.admin_listen == ("0.0.0.0", 9464)
