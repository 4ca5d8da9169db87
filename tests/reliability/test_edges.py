"""Issue 10 edge findings through a real ``streamwatch serve``: routes as an allowlist, TRACE,
strings capped at the edge, signals, credentials in ``--upstream``, TLS upstream options."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.reliability.conftest import DEFAULT_OPTIONS
from tests.reliability.harness.checks import assert_clean_end, wait_until
from tests.reliability.harness.client import RawClient, build_request, exchange
from tests.reliability.harness.proxy import ProxyProcess, proxy_args
from tests.reliability.harness.upstream import FakeUpstream, sse_scenario

EVENTS = [b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n', b"data: [DONE]\n\n"]
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"tok"}}]}\n\n'

DOT_SEGMENTS = [
    "/openai/../admin/keys",
    "/openai/%2e%2e/admin/keys",
    "/openai/%2E%2E/admin/keys",
    "/openai/.%2e/admin/keys",
    "/openai/..;/admin/keys",
    "/openai/..%3B/admin/keys",
    "/openai/..%2Fadmin/keys",
    "/openai/..%5Cadmin/keys",
    "/openai/%252e%252e/admin/keys",
    "/openai/./v1/chat/completions",
]


def _start_exit(*args: str) -> tuple[int, str]:
    """Run ``streamwatch serve`` expecting start-up to fail: (status, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "streamwatch", "serve", "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.returncode, proc.stderr.decode()


class TestRouteAllowlist:
    """A path with a dot-segment, in any spelling an upstream may decode, is refused (400) and
    nothing reaches the upstream; ordinary paths still pass."""

    @pytest.mark.parametrize("path", DOT_SEGMENTS)
    def test_dot_segments_refused(
        self, proxy: ProxyProcess, upstream: FakeUpstream, path: str
    ) -> None:
        """400 ``bad_path`` with JSON, the path not echoed, nothing upstream."""
        key = upstream.add(sse_scenario(EVENTS))
        r = exchange(proxy.port, build_request("GET", path, [("x-h1-scenario", key)]))
        assert r.status == 400
        assert json.loads(bytes(r.body))["error"]["code"] == "bad_path"
        assert b"admin" not in bytes(r.raw)
        time.sleep(0.05)
        assert upstream.requests_for(key) == []

    @pytest.mark.parametrize("path", ["/v1/chat/completions", "/a/.../b", "/a/.b", "/m/org%2Fx"])
    def test_ordinary_paths_forwarded(
        self, proxy: ProxyProcess, upstream: FakeUpstream, path: str
    ) -> None:
        """Dots inside a segment and encoded slashes are not dot-segments: forwarded as sent."""
        key = upstream.add(sse_scenario(EVENTS))
        r = exchange(proxy.port, build_request("GET", path, [("x-h1-scenario", key)]))
        assert r.status == 200
        assert upstream.requests_for(key)[0].target == path


class TestTrace:
    """TRACE is answered 405 by streamwatch (as nginx does) and never forwarded."""

    def test_trace_405(self, proxy: ProxyProcess, upstream: FakeUpstream) -> None:
        """405 JSON, the Authorization value not reflected, nothing upstream, counted."""
        key = upstream.add(sse_scenario(EVENTS))
        secret = "Bearer sk-trace-" + uuid.uuid4().hex
        raw = build_request("TRACE", "/v1/x", [("x-h1-scenario", key), ("Authorization", secret)])
        r = exchange(proxy.port, raw)
        assert r.status == 405
        assert secret.encode() not in bytes(r.raw)
        time.sleep(0.05)
        assert upstream.requests_for(key) == []
        assert wait_until(lambda: proxy.total("streamwatch_requests_total", code="405") >= 1)


class TestStringCaps:
    """A huge model name from the client or the upstream is capped before any sink sees it."""

    def test_huge_models_capped(self, proxy: ProxyProcess, upstream: FakeUpstream) -> None:
        """5 MB request and response model names: log line, /debug/streams stay small."""
        huge = "m" * (5 << 20)
        event = b'data: {"model":"' + huge.encode() + b'","choices":[{"index":0,"delta":{}}]}\n\n'
        key = upstream.add(sse_scenario([event, *EVENTS], interval=0.3))
        rid = uuid.uuid4().hex
        body = json.dumps({"messages": [], "stream": True, "model": huge}).encode()
        headers = [("x-h1-scenario", key), ("x-request-id", rid)]
        client = RawClient(proxy.port)
        client.send(build_request(body=body, headers=headers))
        assert wait_until(lambda: bool(upstream.requests_for(key)), 5)
        time.sleep(0.4)
        status, debug = proxy.admin_get("/debug/streams")
        r = client.read(deadline=10)
        client.close()
        assert_clean_end(r)
        line = proxy.record(rid)
        assert len(json.dumps(line)) < 4096
        assert len(line["request_model"]) <= 256
        assert len(line.get("response_model") or "") <= 256
        assert status == 200
        assert len(debug) < 4096


class TestSignals:
    """SIGINT and SIGQUIT drain like SIGTERM; SIGHUP and SIGUSR1 are logged and change nothing."""

    @pytest.fixture
    def own_proxy(self, upstream: FakeUpstream) -> Iterator[ProxyProcess]:
        with ProxyProcess(upstream.url, *proxy_args(**DEFAULT_OPTIONS)) as process:
            yield process

    @pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1], ids=lambda s: s.name)
    def test_ignored_signal_keeps_streams(
        self, own_proxy: ProxyProcess, upstream: FakeUpstream, sig: signal.Signals
    ) -> None:
        """The open stream finishes cleanly after the signal; a log line names it."""
        key = upstream.add(sse_scenario([EVENT, EVENT, *EVENTS], interval=0.3))
        client = RawClient(own_proxy.port)
        client.send(build_request(body=b"{}", headers=[("x-h1-scenario", key)]))
        assert wait_until(lambda: bool(upstream.requests_for(key)), 5)
        assert own_proxy.proc is not None
        own_proxy.proc.send_signal(sig)
        assert own_proxy.wait_log(
            lambda e: e.get("event") == "signal.ignored" and e.get("signal") == sig.name
        )
        r = client.read(deadline=10)
        client.close()
        assert_clean_end(r)
        assert own_proxy.proc.poll() is None
        assert exchange(own_proxy.port, build_request("GET", "/x")).status == 200

    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=lambda s: s.name)
    def test_drain_signal(
        self, own_proxy: ProxyProcess, upstream: FakeUpstream, sig: signal.Signals
    ) -> None:
        """An open stream that ends within the drain timeout completes; exit status 0."""
        key = upstream.add(sse_scenario([EVENT, EVENT, *EVENTS], interval=0.3))
        client = RawClient(own_proxy.port)
        client.send(build_request(body=b"{}", headers=[("x-h1-scenario", key)]))
        assert wait_until(lambda: bool(upstream.requests_for(key)), 5)
        assert own_proxy.proc is not None
        own_proxy.proc.send_signal(sig)
        r = client.read(deadline=10)
        client.close()
        assert_clean_end(r)
        assert own_proxy.proc.wait(10) == 0
        assert own_proxy.wait_log(lambda e: e.get("event") == "streamwatch.stopped")


class TestUpstreamOptions:
    """Credentials in ``--upstream`` and unusable TLS files stop start-up, naming the option."""

    def test_credentials_refused(self) -> None:
        """Status 2, the option named, the password never printed."""
        status, err = _start_exit("--upstream", "http://user:s3cr3t-pw@127.0.0.1:9")
        assert status == 2, err
        assert "--upstream (STREAMWATCH_UPSTREAM)" in err
        assert "s3cr3t-pw" not in err

    @pytest.mark.parametrize(
        "option", ["--upstream-ca-bundle", "--upstream-client-cert", "--upstream-client-key"]
    )
    def test_missing_tls_file(self, option: str) -> None:
        """A TLS file that does not exist: status 2 naming the option."""
        status, err = _start_exit("--upstream", "https://127.0.0.1:9", option, "/nonexistent.pem")
        assert status == 2, err
        assert option in err

    def test_bad_ca_bundle(self, tmp_path: Path) -> None:
        """A file that is not PEM: status 2 naming --upstream-ca-bundle."""
        bad = tmp_path / "ca.pem"
        bad.write_text("not a certificate\n")
        status, err = _start_exit(
            "--upstream", "https://127.0.0.1:9", "--upstream-ca-bundle", str(bad)
        )
        assert status == 2, err
        assert "--upstream-ca-bundle" in err


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A test CA, a server certificate for 127.0.0.1 (client certificates required) and a client
    certificate, as files streamwatch reads and a server context the upstream uses."""
    ca = trustme.CA()
    d = tmp_path_factory.mktemp("pki")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    ca.issue_cert("streamwatch-client").private_key_and_cert_chain_pem.write_to_path(
        str(d / "client.pem")
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    return d, context


class TestTlsUpstream:
    """An https upstream: trusted through ``--upstream-ca-bundle`` (with a client certificate),
    an untrusted certificate is a 502 counted as ``kind="tls"``."""

    def test_ca_bundle_and_client_cert(self, pki: tuple[Path, ssl.SSLContext]) -> None:
        """With the CA and a client certificate the stream passes; without the CA it is a 502 tls."""
        d, server_context = pki
        tls_up = FakeUpstream(tls=server_context).start()
        try:
            key = tls_up.add(sse_scenario(EVENTS))
            trusted = proxy_args(
                upstream_ca_bundle=d / "ca.pem", upstream_client_cert=d / "client.pem"
            )
            with ProxyProcess(tls_up.url, *proxy_args(**DEFAULT_OPTIONS), *trusted) as proxy:
                r = exchange(
                    proxy.port, build_request(body=b"{}", headers=[("x-h1-scenario", key)])
                )
                assert r.status == 200
                assert_clean_end(r)
            with ProxyProcess(tls_up.url, *proxy_args(**DEFAULT_OPTIONS)) as proxy:
                r = exchange(
                    proxy.port, build_request(body=b"{}", headers=[("x-h1-scenario", key)])
                )
                assert r.status == 502
                assert json.loads(bytes(r.body))["error"]["code"] == "upstream_tls"
                assert wait_until(
                    lambda: proxy.total("streamwatch_upstream_errors_total", kind="tls") == 1
                )
        finally:
            tls_up.stop()
