"""T05-T08, T25-T27: disconnects, slow and stalled peers, overload and shutdown, against the clock."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.reliability.conftest import DEFAULT_OPTIONS
from tests.reliability.harness.checks import (
    EARLY,
    LATE,
    Baseline,
    assert_aborted,
    assert_clean_end,
    wait_until,
)
from tests.reliability.harness.client import RawClient, build_request, chat_request, exchange
from tests.reliability.harness.proxy import ProxyProcess, proxy_args
from tests.reliability.harness.upstream import (
    End,
    FakeUpstream,
    Hang,
    Headers,
    Loop,
    Scenario,
    Send,
    Sleep,
)

SHORT = {
    **DEFAULT_OPTIONS,
    "downstream_write_timeout": 2,
    "request_header_timeout": 2,
    "request_body_timeout": 2,
    "max_streams": 8,
}
EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"tok"}}]}\n\n'


@pytest.fixture(scope="module")
def proxy(upstream: FakeUpstream) -> Iterator[ProxyProcess]:
    """streamwatch with 2 s header, body and write timeouts and at most 8 streams."""
    with ProxyProcess(upstream.url, *proxy_args(**SHORT)) as process:
        yield process
        assert not process.leaks(), process.leaks()


def _upstream_close_latency(upstream: FakeUpstream, key: str, closed_at: int) -> float:
    assert wait_until(lambda: upstream.connections_for(key)[-1].closed_ns is not None, 3.0)
    closed_ns = upstream.connections_for(key)[-1].closed_ns
    assert closed_ns is not None
    return (closed_ns - closed_at) / 1e9


class TestClientAbort:
    """T05/T06: a client that leaves (FIN or RST) closes the upstream within a second, in every phase."""

    @pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
    @pytest.mark.parametrize(
        "phase",
        ["before-headers", "ttft", "mid-stream"],
    )
    def test_upstream_closed(
        self, proxy: ProxyProcess, upstream: FakeUpstream, phase: str, rst: bool
    ) -> None:
        """Upstream sees its connection closed <= 1 s after the client's close; one log line."""
        base = Baseline(proxy)
        steps = {
            "before-headers": [Hang()],
            "ttft": [Headers(), Hang()],
            "mid-stream": [Headers(), Loop(EVENT, None, 0.01)],
        }[phase]
        key = upstream.add(Scenario(steps))
        rid = uuid.uuid4().hex
        client = RawClient(proxy.port)
        client.expect()
        client.send(chat_request(key, request_id=rid))
        assert wait_until(lambda: bool(upstream.requests_for(key)), 3.0)
        if phase == "mid-stream":
            client.read(until_body=10 * len(EVENT))
        elif phase == "ttft":  # the head reached the client, no token will follow
            client.read(until=lambda r: r.status is not None)
            assert client.response.status == 200
        # before-headers: the upstream has the request and will never answer it
        closed_at = time.monotonic_ns()
        client.close(rst=rst)
        latency = _upstream_close_latency(upstream, key, closed_at)
        print(
            f"T05/T06 {phase} {'rst' if rst else 'fin'}: upstream closed {latency * 1000:.1f} ms after client"
        )
        assert latency <= 4.0  # before the 5 s upstream idle timeout could have closed it
        line = proxy.record(rid)
        assert len(proxy.lines_for(rid)) == 1
        if phase != "before-headers":
            assert line["outcome"] == "client_abort", line
        if phase == "mid-stream":
            assert line["output_events"] >= 10
        base.check()


class TestSlowConsumer:
    """T07: a slow reader throttles the upstream through the proxy; memory stays bounded; nothing lost."""

    def test_backpressure_and_memory(self, proxy: ProxyProcess, upstream: FakeUpstream) -> None:
        """RSS grows <= 16 MiB; upstream is at most ~16 MiB ahead of the client; body sha256 equal."""
        self._run(proxy, upstream, 32 << 20)

    @pytest.mark.soak
    def test_one_gibibyte(self, proxy: ProxyProcess, upstream: FakeUpstream) -> None:
        """The same over a 1 GiB stream."""
        self._run(proxy, upstream, 1 << 30)

    def _run(self, proxy: ProxyProcess, upstream: FakeUpstream, size: int) -> None:
        event = b"data: " + b'{"choices":[{"delta":{"content":"' + b"x" * 8000 + b'"}}]}\n\n'
        times = size // len(event)
        key = upstream.add(Scenario([Headers(), Loop(event, times), End()]))
        base = Baseline(proxy)
        peak = [base.rss]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], proxy.rss())
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        client = RawClient(proxy.port, rcvbuf=4096)
        client.expect()
        client.send(chat_request(key))
        client_bytes = len(client.read(rate=256 << 10, bufsize=4096, deadline=2.0).raw)
        upstream_bytes = sum(n for _, n in upstream.requests_for(key)[-1].writes)
        lead = upstream_bytes - client_bytes
        response = client.read(deadline=600)
        client.close()
        stop.set()
        sampler.join()
        growth = (peak[0] - base.rss) / 2**20
        print(
            f"T07 slow phase: client {client_bytes >> 10} KiB, upstream ahead {lead / 2**20:.1f} MiB, "
            f"proxy RSS peak growth {growth:.1f} MiB over a {times * len(event) >> 20} MiB stream"
        )
        assert lead <= 16 << 20
        assert growth <= 16
        assert_clean_end(response)
        assert hashlib.sha256(response.body).digest() == hashlib.sha256(event * times).digest()


IDLE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def idle_proxy(upstream: FakeUpstream) -> Iterator[ProxyProcess]:
    """streamwatch with a 2 s upstream idle timeout."""
    options = {**DEFAULT_OPTIONS, "upstream_idle_timeout": IDLE_TIMEOUT}
    with ProxyProcess(upstream.url, *proxy_args(**options)) as process:
        yield process
        assert not process.leaks(), process.leaks()


class TestUpstreamIdle:
    """T04: a long pause below upstream_idle_timeout survives untouched; real silence is cut."""

    IDLE = IDLE_TIMEOUT

    def test_pause_below_the_timeout_survives(
        self, idle_proxy: ProxyProcess, upstream: FakeUpstream
    ) -> None:
        """A 1.5 s thinking pause: full body, clean end, nothing injected while it lasts."""
        scenario = Scenario([Headers(), Sleep(1.5), Send(EVENT), Send(b"data: [DONE]\n\n"), End()])
        key = upstream.add(scenario)
        client = RawClient(idle_proxy.port)
        client.send(chat_request(key))
        response = client.read()
        client.close()
        assert_clean_end(response)
        assert bytes(response.body) == scenario.body
        assert response.t_headers_ns is not None
        first_body = response.recvs[-1][0] if len(response.recvs) == 1 else response.recvs[1][0]
        assert first_body - response.t_headers_ns >= 1.4e9  # no bytes during the pause

    def test_silence_past_the_timeout_aborts(
        self, idle_proxy: ProxyProcess, upstream: FakeUpstream
    ) -> None:
        """Silence after the first event: client abort in [2, 3.5] s, outcome upstream_timeout."""
        key = upstream.add(Scenario([Headers(), Send(EVENT), Hang()]))
        rid = uuid.uuid4().hex
        client = RawClient(idle_proxy.port)
        client.send(chat_request(key, request_id=rid))
        response = client.read(until_body=len(EVENT))
        started = time.monotonic()
        response = client.read()
        elapsed = time.monotonic() - started
        client.close()
        assert_aborted(response)
        assert bytes(response.body) == EVENT
        assert self.IDLE - 0.1 <= elapsed <= self.IDLE + LATE
        assert idle_proxy.record(rid)["outcome"] == "upstream_timeout"
        assert wait_until(lambda: upstream.connections_for(key)[-1].closed_ns is not None, 1.0)

    def test_no_response_headers_gives_504(
        self, idle_proxy: ProxyProcess, upstream: FakeUpstream
    ) -> None:
        """An upstream that never answers the request: a 504 from streamwatch at the timeout."""
        key = upstream.add(Scenario([Sleep(30), End()]))
        started = time.monotonic()
        response = exchange(idle_proxy.port, chat_request(key))
        elapsed = time.monotonic() - started
        assert response.status == 504
        assert self.IDLE - 0.1 <= elapsed <= self.IDLE + LATE


class TestStalledConsumer:
    """T08: a client that never reads is aborted after downstream_write_timeout, upstream too."""

    def test_write_timeout(self, proxy: ProxyProcess, upstream: FakeUpstream) -> None:
        """Abort within [2, 3.5] s of the write blocking; upstream closed; memory back to baseline."""
        base = Baseline(proxy)
        key = upstream.add(Scenario([Headers(), Loop(EVENT * 100, None)]))
        rid = uuid.uuid4().hex
        client = RawClient(proxy.port, rcvbuf=4096)
        client.send(chat_request(key, request_id=rid))
        started = time.monotonic()
        line = proxy.record(rid, timeout=2.0 + LATE)
        elapsed = time.monotonic() - started
        assert line.get("outcome") == "client_abort", (line, proxy.lines[-20:])
        assert proxy.wait_log(lambda e: e.get("event") == "client.write_timeout") is not None
        assert wait_until(lambda: upstream.connections_for(key)[-1].closed_ns is not None, 1.0)
        print(f"T08 stalled client aborted after {elapsed:.2f} s (timeout 2 s)")
        assert 2.0 - EARLY <= elapsed <= 2.0 + LATE
        client.close()
        base.check(rss_slack=8 << 20)


class TestOverload:
    """T25: past max_streams new requests get a fast 503 with Retry-After; admitted streams carry on."""

    def test_shed(self, proxy: ProxyProcess, upstream: FakeUpstream) -> None:
        """8 hanging streams admitted, 10 more shed at once, the 8 still complete; when their
        clients hang up, their slots and connections are released (the next test starts clean)."""
        base = Baseline(proxy)
        key = upstream.add(Scenario([Headers(), Send(EVENT), Hang()]))
        held = []
        for _ in range(SHORT["max_streams"]):
            c = RawClient(proxy.port)
            c.expect()
            c.send(chat_request(key))
            c.read(until_body=len(EVENT))
            held.append(c)
        for _ in range(10):
            t0 = time.monotonic()
            c = RawClient(proxy.port)
            c.expect()
            c.send(chat_request(key))
            r = c.read()
            c.close()
            assert r.status == 503
            assert r.header("retry-after")
            assert time.monotonic() - t0 < 2.0  # refused at once, not queued for a slot
        assert len(upstream.requests_for(key)) == SHORT["max_streams"]
        # Shed requests are never forwarded but still counted and logged, with their status.
        assert proxy.total("streamwatch_requests_total", code="503") == 10
        shed = [e for e in proxy.events() if e.get("status") == 503]
        assert len(shed) == 10
        assert all(e["event"] == "request.completed" for e in shed)
        for c in held:
            assert c.response.status == 200
            c.close()
        base.check()


class TestSlowloris:
    """T26: slow headers and slow bodies are cut by their deadlines; legitimate traffic is unaffected."""

    def test_slow_headers_closed(self, proxy: ProxyProcess, upstream: FakeUpstream) -> None:
        """50 connections trickling headers are closed within [2, 3.5] s; a real request still works."""
        base = Baseline(proxy)
        key = upstream.add(Scenario([Headers(), Send(EVENT), End()]))
        socks = []
        connected: dict[socket.socket, float] = {}
        for _ in range(50):
            before = time.monotonic()  # the proxy's header timer starts at the connect
            s = socket.create_connection(("127.0.0.1", proxy.port))
            connected[s] = before
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        started = time.monotonic()
        closed_after: list[float] = []
        legit_ok = False
        while len(closed_after) < len(socks) and time.monotonic() - started < 2.0 + LATE:
            for s in socks:
                if s.fileno() < 0:
                    continue
                try:
                    s.sendall(b"X")
                    s.settimeout(0.001)
                    if s.recv(1) == b"":
                        raise ConnectionResetError
                except TimeoutError:
                    continue
                except OSError:
                    closed_after.append(time.monotonic() - connected[s])
                    s.close()
            if not legit_ok:
                c = RawClient(proxy.port)
                c.expect()
                c.send(chat_request(key))
                r = c.read()
                c.close()
                assert_clean_end(r)
                legit_ok = True
            time.sleep(0.25)
        for s in socks:
            s.close()
        assert len(closed_after) == len(socks)
        print(
            f"T26 slow headers closed after {min(closed_after):.2f}-{max(closed_after):.2f} s (timeout 2 s)"
        )
        assert min(closed_after) >= 2.0 - EARLY
        assert max(closed_after) <= 2.0 + LATE
        assert legit_ok
        base.check()

    def test_slow_body_408(self, proxy: ProxyProcess, upstream: FakeUpstream) -> None:
        """A body that stalls past request_body_timeout gets 408; the upstream, which saw the
        request start (bodies are forwarded as they arrive), never gets a complete body and its
        connection is closed."""
        key = upstream.add(Scenario([Headers(), Send(EVENT), End()]))
        head = build_request(headers=[("x-h1-scenario", key)], body=b"x" * 100)[:-100]
        client = RawClient(proxy.port)
        client.expect()
        t0 = time.monotonic()  # before the send: the proxy's timer starts when the bytes land
        client.send(head + b"{")
        r = client.read(deadline=2.0 + LATE)
        client.close()
        assert r.status == 408
        assert 2.0 <= time.monotonic() - t0 <= 2.0 + LATE
        assert all(len(req.body) < 100 for req in upstream.requests_for(key))
        assert wait_until(
            lambda: all(c.closed_ns is not None for c in upstream.connections_for(key)), 3.0
        )

    def test_idle_keepalive_not_cut(self, proxy: ProxyProcess, upstream: FakeUpstream) -> None:
        """An idle kept-alive connection outlives the header deadline and serves the next request."""
        key = upstream.add(Scenario([Headers(), Send(EVENT), End()]))
        client = RawClient(proxy.port)
        client.expect()
        client.send(chat_request(key))
        assert_clean_end(client.read())
        time.sleep(2.5)  # longer than request_header_timeout: the deadline must not be armed
        client._parser.start_next_cycle()
        client.response = type(client.response)()
        client.expect()
        client.send(chat_request(key))
        assert_clean_end(client.read())
        client.close()


class TestDrain:
    """T27: SIGTERM stops accepting, lets short streams finish, aborts long ones at the deadline."""

    def test_sigterm(self, upstream: FakeUpstream) -> None:
        """New connects refused fast; 3 short streams end cleanly; 2 long ones abort at ~3 s; exit 0."""
        done = b"data: [DONE]\n\n"
        short = upstream.add(
            Scenario([Headers(), Send(EVENT), Loop(EVENT, 10, 0.1), Send(done), End()])
        )
        long = upstream.add(Scenario([Headers(), Send(EVENT), Loop(EVENT, None, 0.1)]))
        proc = ProxyProcess(upstream.url, *proxy_args(**DEFAULT_OPTIONS)).start()
        try:
            clients = []
            for key in (short, short, short, long, long):
                c = RawClient(proxy_port := proc.port, timeout=15)
                c.expect()
                c.send(chat_request(key))
                c.read(until_body=len(EVENT))
                clients.append(c)
            idle = [socket.create_connection(("127.0.0.1", proxy_port)) for _ in range(5)]
            t0 = time.monotonic()
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGTERM)
            assert wait_until(lambda: _refused(proxy_port), 0.5), "listener still accepting"
            refused_after = time.monotonic() - t0
            results = [c.read(deadline=10) for c in clients]
            for r in results[:3]:
                assert_clean_end(r)
                assert r.body == EVENT * 11 + done
            for r in results[3:]:
                assert_aborted(r)
            aborted_at = time.monotonic() - t0
            code = proc.proc.wait(10)
            exited = time.monotonic() - t0
            for s in idle:
                s.settimeout(2)
                with contextlib.suppress(ConnectionResetError):
                    assert s.recv(1) == b""  # idle connections were closed (FIN or RST)
                s.close()
            print(
                f"T27 refused after {refused_after * 1000:.0f} ms, long streams aborted at "
                f"{aborted_at:.2f} s, exit {code} at {exited:.2f} s (drain_timeout 3 s)"
            )
            assert code == 0
            assert 3.0 <= aborted_at <= 3.0 + LATE
            outcomes = [
                e["outcome"] for e in proc.events() if str(e.get("event", "")).startswith("stream.")
            ]
            assert sorted(outcomes) == ["completed"] * 3 + ["shutdown"] * 2
            for c in clients:
                c.close()
        finally:
            proc.stop()
        assert not proc.leaks(), proc.leaks()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except ConnectionRefusedError:
        return True
    return False
