"""Issue 10 decisions through a real ``streamwatch serve`` that ``test_safety.py`` leaves open:
dot-segment paths are refused (400 ``bad_path``), not normalised; unusable TLS files stop start-up;
an upstream that requires a client certificate accepts ``--upstream-client-cert``."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from tests.reliability.conftest import DEFAULT_OPTIONS
from tests.reliability.harness.checks import assert_clean_end, wait_until
from tests.reliability.harness.client import build_request, exchange
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
        """400 ``bad_path`` with JSON, the path not echoed, nothing upstream (checked after a later
        request made the whole round trip: anything forwarded before it would have arrived)."""
        key = upstream.add(sse_scenario(EVENTS))
        r = exchange(proxy.port, build_request("GET", path, [("x-h1-scenario", key)]))
        assert r.status == 400
        assert json.loads(bytes(r.body))["error"]["code"] == "bad_path"
        assert b"admin" not in bytes(r.raw)
        later = upstream.add(sse_scenario(EVENTS))
        after = exchange(proxy.port, build_request("GET", "/x", [("x-h1-scenario", later)]))
        assert_clean_end(after)
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


class TestUpstreamOptions:
    """Unusable TLS files stop start-up, naming the option."""

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
