"""The Kubernetes kustomize base and overlays, rendered by ``kubectl kustomize`` (skipped with the
reason where kubectl is absent, failed in CI) and validated offline against the Kubernetes schemas:
a shutdown that fits the grace period, the admin port off the client Service, and every object
prometheus-operator selects carrying the labels it selects on."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamwatch.config import Settings, add_arguments, load_settings
from tests.conftest import REPO_ROOT, missing
from tests.dashboards.mixin import import_or_skip

K8S = REPO_ROOT / "deploy" / "kubernetes"
OVERLAYS = ("plain", "kube-prometheus-stack")
K8S_VERSION = "1.30"
OPERATOR_GROUP = "monitoring.coreos.com"


def render(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR``: the objects ``kubectl apply -k DIR`` would create."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run(
        [str(kubectl), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    name: str = request.param
    return name, render(K8S / "overlays" / name)


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [doc] = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    return doc


def sidecar(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "streamwatch"]
    return container


def sidecar_settings(docs: list[dict[str, Any]]) -> Settings:
    """What the sidecar runs with: its args and env through the real parser and loader."""
    container = sidecar(docs)
    assert container["args"][0] == "serve"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    environ = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return load_settings(parser.parse_args(container["args"][1:]), environ)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class TestRenderedOverlays:
    """Each overlay renders, passes the schemas, and keeps streams alive through a shutdown."""

    def test_builtin_kinds_validate(self, overlay: tuple[str, list[dict[str, Any]]]) -> None:
        """Every built-in object passes the Kubernetes schemas (strict: no unknown fields)."""
        kubernetes_validate = import_or_skip(
            "kubernetes_validate", "kubernetes-validate not installed (dev dependency)"
        )
        _, docs = overlay
        builtin = [d for d in docs if d["apiVersion"].split("/")[0] in {"apps", "v1"}]
        assert {d["kind"] for d in builtin} == {"Deployment", "Service"}
        for doc in builtin:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)

    def test_validator_rejects_a_bad_manifest(self) -> None:
        """The schema check can fail: resources of the wrong type are refused."""
        kubernetes_validate = import_or_skip(
            "kubernetes_validate", "kubernetes-validate not installed (dev dependency)"
        )
        bad = one(render(K8S / "overlays" / "plain"), "Deployment")
        bad["spec"]["template"]["spec"]["containers"][1]["resources"]["requests"] = "lots"
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSION, strict=True)

    def test_shutdown_fits_the_grace_period(
        self, overlay: tuple[str, list[dict[str, Any]]]
    ) -> None:
        """Shutdown delay + drain timeout < terminationGracePeriodSeconds, the delay is real
        (endpoints take seconds to go), and the gateway keeps serving through it."""
        _, docs = overlay
        settings = sidecar_settings(docs)
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        grace = pod["terminationGracePeriodSeconds"]
        assert settings.shutdown_delay >= 5
        assert settings.shutdown_delay + settings.drain_timeout < grace
        [gateway] = [c for c in pod["containers"] if c["name"] == "gateway"]
        sleep = gateway["lifecycle"]["preStop"]["exec"]["command"]
        assert sleep[0] == "sleep"
        assert float(sleep[1]) >= settings.shutdown_delay

    def test_read_only_root_with_a_writable_metrics_dir(
        self, overlay: tuple[str, list[dict[str, Any]]]
    ) -> None:
        """The sidecar's root is read-only and --metrics-dir is a mounted emptyDir."""
        _, docs = overlay
        container = sidecar(docs)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["runAsNonRoot"] is True
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {
            v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        }
        metrics_dir = sidecar_settings(docs).metrics_dir
        assert metrics_dir in mounts
        assert "emptyDir" in volumes[mounts[metrics_dir]]

    def test_admin_port_is_not_on_the_client_service(
        self, overlay: tuple[str, list[dict[str, Any]]]
    ) -> None:
        """The client Service exposes only the proxy port; the admin port is on a headless
        metrics Service of its own."""
        _, docs = overlay
        client = one(docs, "Service", "llm-gateway")
        assert [p["targetPort"] for p in client["spec"]["ports"]] == ["proxy"]
        admin_services = [
            d
            for d in docs
            if d["kind"] == "Service"
            and any(p["targetPort"] in ("admin", 9464) for p in d["spec"]["ports"])
        ]
        assert [d["metadata"]["name"] for d in admin_services] == [
            "llm-gateway-streamwatch-metrics"
        ]
        assert admin_services[0]["spec"]["clusterIP"] == "None"

    def test_probes_on_the_admin_port(self, overlay: tuple[str, list[dict[str, Any]]]) -> None:
        """Liveness probes /healthz and readiness /readyz, both on the admin port."""
        _, docs = overlay
        container = sidecar(docs)
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
        settings = sidecar_settings(docs)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"proxy": settings.listen[1], "admin": settings.admin_listen[1]}


class TestOperatorSelection:
    """kube-prometheus-stack selects what it scrapes and loads by labels; they all match."""

    def test_plain_overlay_has_no_operator_objects(self) -> None:
        """The plain overlay applies on a cluster without the prometheus-operator CRDs."""
        docs = render(K8S / "overlays" / "plain")
        assert not [d for d in docs if d["apiVersion"].startswith(OPERATOR_GROUP)]

    def test_every_selected_object_carries_the_labels(self) -> None:
        """ServiceMonitor and PrometheusRule carry release=<settings>; the ServiceMonitor selects
        exactly the metrics Service, by a port name it has, and sets job=streamwatch."""
        overlay = K8S / "overlays" / "kube-prometheus-stack"
        release = yaml.safe_load((overlay / "settings.yaml").read_text())["data"]["release"]
        docs = render(overlay)
        operator_objects = [d for d in docs if d["apiVersion"].startswith(OPERATOR_GROUP)]
        assert {d["kind"] for d in operator_objects} == {"ServiceMonitor", "PrometheusRule"}
        for doc in operator_objects:
            assert doc["metadata"]["labels"]["release"] == release, doc["kind"]
        monitor = one(docs, "ServiceMonitor")
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [
            d for d in docs if d["kind"] == "Service" and matches(selector, d["metadata"]["labels"])
        ]
        assert [d["metadata"]["name"] for d in selected] == ["llm-gateway-streamwatch-metrics"]
        [endpoint] = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
        assert {
            "action": "replace",
            "targetLabel": "job",
            "replacement": "streamwatch",
        } in endpoint["relabelings"]
        assert not [d for d in docs if d["kind"] == "ConfigMap"]  # settings stay local

    def test_settings_change_labels_and_alert_links(self, tmp_path: Path) -> None:
        """Editing settings.yaml alone changes the release label and every alert's Grafana and
        runbook links, without regenerating anything from the source tree."""
        copy = tmp_path / "kubernetes"
        shutil.copytree(K8S, copy)
        settings_path = copy / "overlays" / "kube-prometheus-stack" / "settings.yaml"
        settings = yaml.safe_load(settings_path.read_text())
        settings["data"] = {
            "release": "prom",
            "grafana_url": "https://grafana.test.internal",
            "runbook_url": "https://wiki.test.internal/streamwatch",
        }
        settings_path.write_text(yaml.safe_dump(settings))
        docs = render(copy / "overlays" / "kube-prometheus-stack")
        rule = one(docs, "PrometheusRule")
        assert rule["metadata"]["labels"]["release"] == "prom"
        assert one(docs, "ServiceMonitor")["metadata"]["labels"]["release"] == "prom"
        alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
        assert alerts
        for alert in alerts:
            annotations = alert["annotations"]
            assert annotations["runbook_url"] == (
                f"https://wiki.test.internal/streamwatch#{alert['alert'].lower()}"
            )
            assert annotations["dashboard_url"].startswith(
                "https://grafana.test.internal/d/streamwatch-overview/"
            )
