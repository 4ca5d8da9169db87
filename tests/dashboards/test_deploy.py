"""Deployment files parse, agree with the CLI and ports, and the Kubernetes manifests are schema-valid."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamwatch.config import Settings, add_arguments, load_settings
from streamwatch.simulator.__main__ import build_parser as simulator_parser
from tests.dashboards.mixin import REPO, import_or_skip

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
K8S_VERSION = "1.30"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in load_all(p)]


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

    def test_kubernetes_sidecar_command(self) -> None:
        """The sidecar's args and env give a valid configuration pointing at the gateway."""
        [deployment] = [d for _, d in manifests() if d["kind"] == "Deployment"]
        containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
        sidecar = containers["streamwatch"]
        environ = {e["name"]: e["value"] for e in sidecar["env"] if "value" in e}
        settings = serve_settings(sidecar["args"], environ)
        assert str(settings.routes[0].upstream) == environ["STREAMWATCH_UPSTREAM"]


class TestKubernetes:
    """The sidecar manifests are consistent and pass the Kubernetes OpenAPI schemas."""

    def test_sidecar_probes_and_ports(self) -> None:
        """The streamwatch container probes /healthz and /readyz on the admin port."""
        [deployment] = [d for _, d in manifests() if d["kind"] == "Deployment"]
        containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
        sw = containers["streamwatch"]
        assert {p["name"]: p["containerPort"] for p in sw["ports"]} == {
            "proxy": 8080,
            "admin": 9464,
        }
        assert sw["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
        assert sw["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
        env = {e["name"]: e["value"] for e in sw["env"]}
        assert env["STREAMWATCH_UPSTREAM"].startswith("http://127.0.0.1:")
        assert sw["resources"]["requests"]

    def test_service_monitor_targets_the_service_port(self) -> None:
        """The ServiceMonitor scrapes the Service's metrics port and sets job=streamwatch."""
        docs = {d["kind"]: d for _, d in manifests()}
        port_names = {p["name"] for p in docs["Service"]["spec"]["ports"]}
        [endpoint] = docs["ServiceMonitor"]["spec"]["endpoints"]
        assert endpoint["port"] in port_names
        assert {
            "action": "replace",
            "targetLabel": "job",
            "replacement": "streamwatch",
        } in endpoint["relabelings"]

    def test_kustomization_lists_every_manifest(self) -> None:
        """kustomization.yaml names every other manifest in the directory."""
        listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
        assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}

    @pytest.mark.parametrize(
        ("name", "doc"),
        [(n, d) for n, d in manifests() if d["apiVersion"].split("/")[0] in {"apps", "v1"}],
        ids=lambda v: v if isinstance(v, str) else v["kind"],
    )
    def test_builtin_kinds_validate(self, name: str, doc: dict[str, Any]) -> None:
        """Deployment and Service pass the Kubernetes schemas (strict: no unknown fields)."""
        kubernetes_validate = import_or_skip(
            "kubernetes_validate", "kubernetes-validate not installed (dev dependency)"
        )
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)

    def test_validator_rejects_a_bad_manifest(self) -> None:
        """The schema check can fail: a probe port of the wrong type is refused."""
        kubernetes_validate = import_or_skip(
            "kubernetes_validate", "kubernetes-validate not installed (dev dependency)"
        )
        [deployment] = [d for _, d in manifests() if d["kind"] == "Deployment"]
        bad = yaml.safe_load(yaml.safe_dump(deployment))
        bad["spec"]["template"]["spec"]["containers"][1]["resources"]["requests"] = "lots"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
