"""A provider-side (egress) streamwatch: routes to https provider APIs through a real ``streamwatch
serve``, each route verifying its upstream's certificate against its own CA bundle (or the system
store), with SNI set to the route's host, and every series labelled with the route's ``side``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from streamwatch.config import ConfigError, add_arguments, load_settings
from streamwatch.simulator.server import start_simulator
from tests.harness import (
    CHAT,
    FAST,
    LOOPBACK,
    chat_stream,
    raw_exchange,
    request_bytes,
    run_cli,
    scrape,
    scripted,
    serve_process,
    until,
)

pytestmark = pytest.mark.e2e


class TlsProvider:
    """The simulator served over TLS with a certificate for ``localhost`` from its own CA,
    recording the SNI name of every handshake."""

    def __init__(self, directory: Path, name: str) -> None:
        self.ca = trustme.CA()
        self.ca_bundle = directory / f"{name}-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_bundle))
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("localhost").configure_cert(self.context)
        self.server_names: list[str | None] = []
        self.context.sni_callback = self._sni
        self.port = 0

    def _sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.server_names.append(name)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[TlsProvider]:
        runner, self.port = await start_simulator(LOOPBACK, 0, FAST, ssl_context=self.context)
        try:
            yield self
        finally:
            await runner.cleanup()


def _stream_request(prefix: str) -> bytes:
    return request_bytes(prefix + CHAT, {"model": "gpt-4o-mini", "stream": True})


class TestHttpsEgressRoutes:
    """Each https route trusts only its own CA bundle (else the system store), checks the host
    name and sends it as SNI; failures are 502 ``upstream_tls`` counted as ``kind="tls"``."""

    async def test_per_route_trust_sni_and_side(self, tmp_path: Path) -> None:
        """The route with the provider's CA streams over TLS (SNI ``localhost``); the same CA's
        server reached by IP fails the host name check; a private CA not in a route's bundle
        fails verification; every series and the log line carry ``side="provider"``."""
        own, private = TlsProvider(tmp_path, "own"), TlsProvider(tmp_path, "private")
        async with own.serving(), private.serving():
            config = tmp_path / "egress.yaml"
            config.write_text(
                "side: provider\n"
                "routes:\n"
                f"  - {{name: openai, prefix: /openai, strip_prefix: true,"
                f" upstream: 'https://localhost:{own.port}', ca_bundle: '{own.ca_bundle}'}}\n"
                f"  - {{name: by-ip, prefix: /by-ip, strip_prefix: true,"
                f" upstream: 'https://{LOOPBACK}:{own.port}', ca_bundle: '{own.ca_bundle}'}}\n"
                f"  - {{name: system, prefix: /system, strip_prefix: true,"
                f" upstream: 'https://localhost:{private.port}'}}\n"
            )
            async with serve_process("--config", str(config)) as serving:
                answers = {}
                for prefix in ("/openai", "/by-ip", "/system"):
                    got, _ = await raw_exchange(serving.proxy_port, _stream_request(prefix))
                    answers[prefix] = got

                async def recorded() -> bool:
                    m = await scrape(serving.admin_port)
                    return m.value("streamwatch_streams_total") == 1 and (
                        m.value("streamwatch_upstream_errors_total", kind="tls") == 2
                    )

                await until(recorded, what="the stream and both TLS failures counted")
                m = await scrape(serving.admin_port)
                lines = [e for e in serving.events() if e.get("event") == "stream.completed"]
        streamed = answers["/openai"]
        assert streamed.parsed[0] == 200
        assert bytes(streamed.body).rstrip().endswith(b"data: [DONE]")
        assert own.server_names[0] == "localhost"
        for prefix in ("/by-ip", "/system"):
            assert answers[prefix].parsed[0] == 502
            assert json.loads(bytes(answers[prefix].body))["error"]["code"] == "upstream_tls"
        assert m.values("streamwatch_upstream_errors_total", "route", kind="tls") == {
            "by-ip": 1.0,
            "system": 1.0,
        }
        assert m.values("streamwatch_streams_total", "side") == {"provider": 1.0}
        assert m.values("streamwatch_route_info", "side") == {"provider": 3.0}
        assert [(line["route"], line["side"]) for line in lines] == [("openai", "provider")]

    async def test_unreadable_ca_bundle_stops_start_up(self, tmp_path: Path) -> None:
        """A route's ca_bundle that is not PEM stops start-up (status 2) naming the route."""
        bundle = tmp_path / "not-a-ca.pem"
        bundle.write_text("not a certificate\n")
        config = tmp_path / "egress.yaml"
        config.write_text(
            "routes:\n"
            f"  - {{name: anthropic, prefix: /, upstream: 'https://localhost:9',"
            f" ca_bundle: '{bundle}'}}\n"
        )
        proc = await run_cli("serve", "--listen", f"{LOOPBACK}:0", "--config", str(config))
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 2
        assert "route 'anthropic': ca_bundle: cannot load CA bundle" in stderr.decode()

    def test_one_trust_per_origin(self, tmp_path: Path) -> None:
        """Two routes to one https origin with different bundles (the ``--upstream`` default
        route too) are refused: pooled connections are shared by origin."""
        provider = TlsProvider(tmp_path, "p")
        other = TlsProvider(tmp_path, "o")
        config = tmp_path / "egress.yaml"
        config.write_text(
            "routes:\n"
            f"  - {{name: a, prefix: /a, upstream: 'https://localhost:9',"
            f" ca_bundle: '{provider.ca_bundle}'}}\n"
            f"  - {{name: b, prefix: /b, upstream: 'https://localhost:9/v1',"
            f" ca_bundle: '{other.ca_bundle}'}}\n"
        )
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        with pytest.raises(ConfigError, match="routes 'a' and 'b' reach"):
            load_settings(parser.parse_args(["--config", str(config)]), {})
        config.write_text(
            "routes:\n"
            f"  - {{name: a, prefix: /a, upstream: 'https://localhost:9',"
            f" ca_bundle: '{provider.ca_bundle}'}}\n"
        )
        default = ["--config", str(config), "--upstream", "https://localhost:9"]
        with pytest.raises(ConfigError, match="routes 'a' and 'default' reach"):
            load_settings(parser.parse_args(default), {})


ANNOUNCING = (
    b"openai-processing-ms: 120\r\n"
    b"X-Envoy-Upstream-Service-Time: 35\r\n"
    b"x-litellm-overhead-duration-ms: -3\r\n"  # not a duration: dropped
    b"x-litellm-response-duration-ms: 1e3\r\n"  # exponent: dropped
    b"x-upstream-time-ms: 5\r\n"  # not a known header: ignored
)


class TestAnnouncedTimings:
    """Durations an upstream announces in known response headers are recorded under fixed names
    (span attributes: tests/export/test_otel.py); doubtful values and unknown headers are not."""

    async def test_headers_to_histogram_and_log_line(self) -> None:
        """Two valid known headers reach the histogram and the log line; the rest do not."""
        async with (
            scripted(chat_stream(["a", "b"]), head=ANNOUNCING) as upstream,
            serve_process("--upstream", upstream.url) as serving,
        ):
            request = request_bytes(CHAT, {"model": "m", "stream": True})
            got, _ = await raw_exchange(serving.proxy_port, request)
            assert got.status == 200

            async def recorded() -> bool:
                m = await scrape(serving.admin_port)
                return m.value("streamwatch_streams_total") == 1

            await until(recorded, what="the stream recorded")
            m = await scrape(serving.admin_port)
            (line,) = [e for e in serving.events() if e.get("event") == "stream.completed"]
        reported = "streamwatch_upstream_reported_seconds"
        assert m.values(reported + "_count", "timing") == {
            "openai_processing": 1.0,
            "envoy_upstream_service": 1.0,
        }
        assert m.value(reported + "_sum", timing="openai_processing") == pytest.approx(0.12)
        assert line["upstream_timings_s"] == {
            "openai_processing": 0.12,
            "envoy_upstream_service": 0.035,
        }
