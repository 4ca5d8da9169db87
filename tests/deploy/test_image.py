"""The container image built from deploy/Dockerfile, run for real by a Docker daemon: streamwatch
(``--workers 2``) and the simulator as containers with a read-only root and the image's non-root
user, an OpenAI SDK stream through them, a scrape, the image's HEALTHCHECK, and ``docker stop``
during a long stream, which must finish inside the grace period.

The image is built beforehand (``.ci/run`` does it, on a base image made locally by
``deploy/base-image.sh``) and named by ``STREAMWATCH_IMAGE``. Containers use the host's network
namespace and bind 127.0.0.1 only, on ports the kernel picked free, so no traffic leaves loopback.
Without a daemon or an image the tests skip with the reason (fail in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import missing
from tests.harness import Scrape

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

GRACE_S = 30  # docker stop's grace before SIGKILL, as the compose file's stop_grace_period
DRAIN_S = 20
DELAY_S = 1
LONG = {"x-sim-tokens": "24", "x-sim-gap-ms": "250", "x-sim-jitter-ms": "0"}  # ~6 s


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


@pytest.fixture(scope="module")
def image() -> str:
    """The image under test: ``$STREAMWATCH_IMAGE`` on a running daemon, else skip with why."""
    if shutil.which("docker") is None:
        missing("no docker client on PATH (Debian: apt-get install docker.io)")
    info = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
    if info.returncode != 0:
        missing(f"no Docker daemon: {info.stderr.strip()[:300]}")
    name = os.environ.get("STREAMWATCH_IMAGE")
    if not name:
        missing("STREAMWATCH_IMAGE is not set: build deploy/Dockerfile and name the image")
    if docker("image", "inspect", name, check=False).returncode != 0:
        missing(f"image {name} not found on the daemon")
    return name


def free_port() -> int:
    """A port the kernel just handed out as free (containers cannot report an ephemeral one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(0.1)


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback URL)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback URL)
        return json.loads(response.read())


class Container:
    """One ``docker run -d`` container on the host network, removed on exit."""

    def __init__(self, image: str, *args: str, options: tuple[str, ...] = ()) -> None:
        self.name = f"streamwatch-test-{uuid.uuid4().hex[:10]}"
        docker(
            "run", "-d", "--name", self.name, "--network", "host",
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--health-interval", "1s", "--health-start-period", "30s",
            *options, image, *args,
        )  # fmt: skip

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(
            docker("inspect", "--format", "{{json .State}}", self.name).stdout
        )
        return state

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def healthy(self) -> bool:
        return bool(self.state().get("Health", {}).get("Status") == "healthy")

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


@pytest.fixture
def stack(image: str) -> Iterator[dict[str, Any]]:
    """The simulator and streamwatch (two workers) as containers; their loopback ports."""
    sim_port, proxy_port, admin_port = free_port(), free_port(), free_port()
    sim = Container(
        image, "simulate", "--host", "127.0.0.1", "--port", str(sim_port), "--seed", "1"
    )
    sw: Container | None = None
    try:
        sw = Container(
            image, "serve", "--workers", "2",
            options=(
                "--tmpfs", "/tmp:size=16m",  # noqa: S108 (a container tmpfs) the workers' metric files; the root is read-only
                "-e", f"STREAMWATCH_UPSTREAM=http://127.0.0.1:{sim_port}",
                "-e", f"STREAMWATCH_LISTEN=127.0.0.1:{proxy_port}",
                "-e", f"STREAMWATCH_ADMIN_LISTEN=127.0.0.1:{admin_port}",
                "-e", f"STREAMWATCH_DRAIN_TIMEOUT={DRAIN_S}",
                "-e", f"STREAMWATCH_SHUTDOWN_DELAY={DELAY_S}",
                "-e", "STREAMWATCH_LOG_FORMAT=json",
            ),
        )  # fmt: skip
        admin = f"http://127.0.0.1:{admin_port}"
        try:
            wait_for(lambda: http_status(f"{admin}/readyz") == 200, 60, "streamwatch /readyz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{sw.logs()}\n{sim.logs()}") from None
        yield {"sim": sim, "sw": sw, "proxy": proxy_port, "admin": admin}
    finally:
        if sw is not None:
            sw.remove()
        sim.remove()


def chat(proxy_port: int, headers: dict[str, str] | None = None) -> tuple[str, str | None]:
    """One streamed chat completion through the proxy with the OpenAI SDK: text, finish reason."""
    import openai

    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{proxy_port}/v1", api_key="sk-test", max_retries=0
    )
    text, finish = "", None
    with client:
        stream = client.chat.completions.create(
            model="sim-model",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"x-sim-scenario": "normal", **(headers or {})},
        )
        for chunk in stream:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
    return text, finish


class TestImageMetadata:
    """The image runs as a fixed non-root uid and its root filesystem can be read-only."""

    def test_non_root_user(self, image: str) -> None:
        """The configured user is 10001:10001 and the process really runs as that uid."""
        user = docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
        assert user == "10001:10001"
        ran = docker("run", "--rm", "--read-only", "--network", "none", image, "--version")
        assert ran.stdout.startswith("streamwatch ")

    def test_read_only_root_without_a_writable_dir_names_the_option(self, image: str) -> None:
        """``--workers 2`` on a read-only root with no tmpfs stops with status 2 naming
        --metrics-dir, instead of crash-looping on a traceback."""
        ran = docker(
            "run", "--rm", "--read-only", "--network", "none",
            "-e", "STREAMWATCH_UPSTREAM=http://127.0.0.1:9",
            "-e", "STREAMWATCH_LISTEN=127.0.0.1:0", "-e", "STREAMWATCH_ADMIN_LISTEN=127.0.0.1:0",
            image, "serve", "--workers", "2",
            check=False,
        )  # fmt: skip
        assert ran.returncode == 2, ran.stderr
        assert "--metrics-dir (STREAMWATCH_METRICS_DIR)" in ran.stderr
        assert "Traceback" not in ran.stderr

    def test_the_core_is_compiled(self, image: str) -> None:
        """The image runs the mypyc-compiled core (``COMPILE_CORE``'s default), not its source."""
        ran = docker(
            "run", "--rm", "--read-only", "--network", "none",
            "--entrypoint", "/opt/streamwatch/bin/python", image,
            "-c", "import streamwatch.core as core; print(core.compiled())",
        )  # fmt: skip
        assert ran.stdout.strip() == "True"

    def test_admin_port_not_exposed(self, image: str) -> None:
        """Only the proxy port is EXPOSEd, so ``docker run -P`` never publishes the admin port."""
        exposed = docker("image", "inspect", "--format", "{{json .Config.ExposedPorts}}", image)
        assert set(json.loads(exposed.stdout)) == {"8080/tcp"}


class TestContainers:
    """streamwatch and the simulator as containers: streams, metrics, health, docker stop."""

    def test_stream_scrape_health(self, stack: dict[str, Any]) -> None:
        """An SDK stream completes through two workers, /metrics counts it, both are healthy."""
        text, finish = chat(stack["proxy"])
        assert text
        assert finish == "stop"
        scraped: list[Scrape] = []

        def counted() -> bool:
            # The worker records a stream after writing its last bytes, on another core than the
            # client that read them: the count can come a moment after the SDK returned.
            with urllib.request.urlopen(f"{stack['admin']}/metrics", timeout=5) as response:  # noqa: S310
                scraped[:] = [Scrape(response.read().decode())]
            return scraped[0].value("streamwatch_streams_total", outcome="completed") >= 1

        wait_for(counted, 30, "the stream counted on /metrics")
        assert scraped[0].value("streamwatch_build_info") >= 1
        wait_for(stack["sw"].healthy, 30, "streamwatch container healthy")
        wait_for(stack["sim"].healthy, 30, "simulate container healthy (not marked unhealthy)")

    def test_docker_stop_lets_a_long_stream_finish(self, stack: dict[str, Any]) -> None:
        """``docker stop`` mid-stream: the stream ends with its finish reason, the container
        exits 0 by itself, well inside the grace period (never SIGKILLed)."""
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["answer"] = chat(stack["proxy"], LONG)
            except Exception as exc:  # reported by the assertion below
                result["error"] = exc

        client = threading.Thread(target=run)
        client.start()
        wait_for(
            lambda: len(http_json(f"{stack['admin']}/debug/streams")["streams"]) == 1,
            15,
            "the long stream open",
        )
        started = time.monotonic()
        docker("stop", "-t", str(GRACE_S), stack["sw"].name, timeout=GRACE_S + 30)
        stopped_after = time.monotonic() - started
        client.join(timeout=30)
        assert "error" not in result, f"{result.get('error')!r}\n{stack['sw'].logs()}"
        text, finish = result["answer"]
        assert finish == "stop"
        assert len(text) > 0
        state = stack["sw"].state()
        assert state["ExitCode"] == 0, stack["sw"].logs()
        assert not state["OOMKilled"]
        assert stopped_after < GRACE_S
        assert stopped_after >= DELAY_S  # the shutdown delay ran before the drain
