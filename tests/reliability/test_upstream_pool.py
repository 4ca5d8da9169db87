"""The upstream keep-alive pool: the stale-connection race and idle connections the upstream closes.

Each test runs its own ``streamwatch serve`` (its own pool) between the scripted raw-socket
upstream (H1) and a raw client. A first request opens an upstream connection and leaves it in the
pool; the second request of the same scenario reuses it, and the :class:`Stale` step closes it
(FIN or RST) without answering, as an upstream whose keep-alive timer fires as the request arrives.
nginx (``proxy_next_upstream error`` on a cached connection, idempotent requests only) and Go's
``http.Transport`` send such a request again on a new connection; RFC 9112 section 9.3.1 forbids a
proxy to retry anything else.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.reliability.conftest import DEFAULT_OPTIONS
from tests.reliability.harness.checks import assert_clean_end
from tests.reliability.harness.client import RawClient, Response, build_request
from tests.reliability.harness.proxy import ProxyProcess, proxy_args
from tests.reliability.harness.upstream import (
    FakeUpstream,
    HalfClose,
    Headers,
    Scenario,
    Send,
    Stale,
)

RETRIES_TOTAL = "streamwatch_upstream_retries_total"
UPSTREAM_ERRORS_TOTAL = "streamwatch_upstream_errors_total"
REPLAY_LIMIT = 64 << 10  # streamwatch.proxy.relay.REPLAY_LIMIT
JSON = [("Content-Type", "application/json")]


@contextlib.contextmanager
def serving(upstream: FakeUpstream, **options: str) -> Iterator[ProxyProcess]:
    """A streamwatch of this test's own, so its pool holds only this test's connections."""
    args = proxy_args(**{**DEFAULT_OPTIONS, **options})
    with ProxyProcess(upstream.url, *args) as process:
        yield process
        assert not process.leaks(), process.leaks()


@pytest.fixture
def proxy(upstream: FakeUpstream) -> Iterator[ProxyProcess]:
    """A streamwatch of this test's own, with the defaults."""
    with serving(upstream) as process:
        yield process


def answered(body: bytes, *steps: Any) -> Scenario:
    """``steps`` (before the answer), then a Content-Length JSON answer whose body is ``body``."""
    return Scenario([*steps, Headers(200, JSON, "cl"), Send(body)])


def request(key: str, method: str, *, prompt: int = 0, idempotency_key: bool = False) -> bytes:
    headers = [("Content-Type", "application/json"), ("x-h1-scenario", key)]
    headers.append(("x-request-id", uuid.uuid4().hex))
    if idempotency_key:
        headers.append(("Idempotency-Key", uuid.uuid4().hex))
    if method == "GET":
        return build_request("GET", "/v1/models", headers)
    body = json.dumps({"messages": [{"role": "user", "content": "x" * prompt}], "model": "m"})
    return build_request("POST", "/v1/chat/completions", headers, body.encode())


def send(client: RawClient, data: bytes, method: str) -> Response:
    """``data`` on the client's connection; the whole response, as h11 read it."""
    client.expect(method)
    client.send(data)
    response = client.read(deadline=10)
    client._parser.start_next_cycle()
    client.response = Response()
    return response


def request_id(data: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith("x-r"))


class TestStaleConnectionRetried:
    """A replayable request on a reused connection closed before any response byte is sent again."""

    @pytest.mark.parametrize(
        ("method", "idempotency_key", "close", "options"),
        [
            pytest.param("POST", True, "fin", {}, id="idempotency-key-fin"),
            pytest.param("POST", True, "rst", {}, id="idempotency-key-rst"),
            pytest.param("GET", False, "rst", {}, id="get-rst"),
            pytest.param(
                "POST",
                False,
                "fin",
                {"upstream_retry_non_idempotent": "true"},
                id="post-with-upstream-retry-non-idempotent",
            ),
        ],
    )
    def test_retried_once_on_a_new_connection(
        self,
        upstream: FakeUpstream,
        *,
        method: str,
        idempotency_key: bool,
        close: str,
        options: dict[str, str],
    ) -> None:
        """The client gets the upstream's answer; the upstream saw the request twice, identical."""
        body = f"answer-{method}-{close}".encode()
        key = upstream.add(answered(body, Stale(rst=close == "rst")))
        with serving(upstream, **options) as proxy:
            client = RawClient(proxy.port)
            try:
                first = send(client, request(key, method, idempotency_key=idempotency_key), method)
                assert_clean_end(first)
                second_request = request(key, method, idempotency_key=idempotency_key)
                second = send(client, second_request, method)
            finally:
                client.close()
            assert_clean_end(second)
            assert (second.status, bytes(second.body)) == (200, body)
            reused, fresh = upstream.connections_for(key)
            assert len(reused.requests) == 2, (
                "the second request was not sent on the pooled connection"
            )
            assert len(fresh.requests) == 1
            stale, again = reused.requests[1], fresh.requests[0]
            assert (again.method, again.target, again.headers, again.body) == (
                stale.method,
                stale.target,
                stale.headers,
                stale.body,
            )
            assert proxy.total(RETRIES_TOTAL) == 1
            assert proxy.total(UPSTREAM_ERRORS_TOTAL) == 0
            rid = request_id(second_request)
            line = proxy.wait_log(
                lambda e: e.get("request_id") == rid and e.get("event") == "request.completed"
            )
            assert line is not None, proxy.lines_for(rid)
            assert line["upstream_retried"] is True
            assert line["status"] == 200


class TestStaleConnectionNotRetried:
    """A request that may not be sent twice fails cleanly with a 502 and reaches the upstream once."""

    @pytest.mark.parametrize(
        ("case", "prefix", "prompt", "idempotency_key"),
        [
            pytest.param(case, prefix, prompt, key, id=case)
            for case, prefix, prompt, key in (
                ("post-without-idempotency-key", b"", 0, False),
                ("body-beyond-what-is-held", b"", REPLAY_LIMIT, True),
                ("after-a-response-byte", b"HTTP/1.1 200 OK\r\n", 0, True),
            )
        ],
    )
    def test_fails_cleanly(
        self,
        proxy: ProxyProcess,
        upstream: FakeUpstream,
        *,
        case: str,
        prefix: bytes,
        prompt: int,
        idempotency_key: bool,
    ) -> None:
        """A 502 with the JSON body, kind="protocol" (reason closed), no retry, one attempt seen."""
        key = upstream.add(answered(case.encode(), Stale(prefix=prefix)))
        client = RawClient(proxy.port)
        try:
            data = request(key, "POST", prompt=prompt, idempotency_key=idempotency_key)
            assert_clean_end(send(client, data, "POST"))
            data = request(key, "POST", prompt=prompt, idempotency_key=idempotency_key)
            second = send(client, data, "POST")
        finally:
            client.close()
        rid = request_id(data)
        line = proxy.wait_log(
            lambda e: e.get("request_id") == rid and e.get("event") == "upstream.failed"
        )
        assert line is not None, proxy.lines_for(rid)
        assert (line["kind"], line["reason"]) == ("protocol", "closed")
        assert_clean_end(second)
        assert second.status == 502, (second.status, bytes(second.body))
        assert json.loads(bytes(second.body))["error"]["type"]
        [reused] = upstream.connections_for(key)
        assert len(upstream.requests_for(key)) == 2
        assert reused.requests[1].body == reused.requests[0].body
        assert proxy.total(RETRIES_TOTAL) == 0
        assert proxy.total(UPSTREAM_ERRORS_TOTAL, kind="protocol") == 1


class TestIdlePooledConnectionClosed:
    """An idle pooled connection the upstream closes (FIN) is closed and dropped at once."""

    def test_fin_while_idle(self, proxy: ProxyProcess, upstream: FakeUpstream) -> None:
        """The proxy closes its end within half the pool's idle time; the next request is fresh."""
        key = upstream.add(Scenario([Headers(200, JSON, "cl"), Send(b"first"), HalfClose()]))
        client = RawClient(proxy.port)
        try:
            first = send(client, request(key, "POST"), "POST")
            assert_clean_end(first)
            assert bytes(first.body) == b"first"
            [idle] = upstream.connections_for(key)
            # IDLE_SECONDS is 10: a proxy that kept the connection would close it only then.
            assert upstream.wait(lambda: idle.closed_ns is not None, 5.0), "still pooled"
            assert idle.closed_ns is not None
            last_write_ns = idle.requests[0].writes[-1][0]  # the FIN follows this write
            print(
                f"idle FIN -> streamwatch closed: {(idle.closed_ns - last_write_ns) / 1e6:.2f} ms"
            )
            nxt = upstream.add(answered(b"second"))
            second = send(client, request(nxt, "POST"), "POST")
        finally:
            client.close()
        assert_clean_end(second)
        assert bytes(second.body) == b"second"
        assert idle not in upstream.connections_for(nxt)
        assert len(idle.requests) == 1
        assert proxy.total(RETRIES_TOTAL) == 0
