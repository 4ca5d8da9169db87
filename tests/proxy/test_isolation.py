"""The admin endpoints live only on the admin listener, which binds loopback by default; and a
failing analyzer or sink never touches the bytes (fail-open)."""

from __future__ import annotations

import argparse
import hashlib
import socket
from collections.abc import Sequence
from typing import Any

import psutil
import pytest
from structlog.testing import capture_logs

from streamwatch import serve
from streamwatch.config import Settings, add_arguments, load_settings
from streamwatch.core.analyzer import StreamAnalyzer
from streamwatch.sinks import Exchange, Hooks, Sink, SinkEvent, Sinks
from tests.harness import (
    CHAT,
    LOOPBACK,
    chat_stream,
    raw_exchange,
    recorder,
    request_bytes,
    scrape,
    scripted,
    serve_process,
    simulator,
    streamwatch,
    until,
)

pytestmark = pytest.mark.e2e

DEFAULT_ADMIN_PORT = 9464


def listening(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses a process listens on."""
    return {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


class TestAdminIsolation:
    """/metrics is never served on the proxy port, and the admin listener is loopback-only."""

    async def test_metrics_path_on_proxy_port_goes_upstream(self) -> None:
        async with (
            scripted(chat_stream(["not", "metrics"])) as upstream,
            streamwatch(upstream.url) as running,
        ):
            get = f"GET /metrics HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n"
            got, _ = await raw_exchange(running.proxy_port, get.encode())
            status, body, clean = got.parsed
        assert [line for line, _ in upstream.requests] == ["GET /metrics HTTP/1.1"]
        assert (status, clean) == (200, True)
        assert b"streamwatch_" not in body
        assert b"[DONE]" in body  # the upstream's answer, not an exposition

    def test_default_admin_address_is_loopback(self) -> None:
        """The dataclass default and the CLI path without --admin-listen both give 127.0.0.1."""
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(["--upstream", "http://127.0.0.1:1"])
        assert load_settings(args, {}).admin_listen == (LOOPBACK, DEFAULT_ADMIN_PORT)
        assert Settings(routes=()).admin_listen == (LOOPBACK, DEFAULT_ADMIN_PORT)

    async def test_serve_with_default_admin_listens_on_loopback_only(self) -> None:
        """The real process with ``--admin-listen`` omitted binds the admin port on 127.0.0.1."""
        if not port_free(DEFAULT_ADMIN_PORT):
            pytest.skip(f"default admin port {DEFAULT_ADMIN_PORT} is in use on this host")
        async with (
            simulator() as sim,
            serve_process(
                "--upstream", sim, "--listen", f"{LOOPBACK}:0", ephemeral=False
            ) as serving,
        ):
            assert serving.admin_port == DEFAULT_ADMIN_PORT
            assert listening(serving.proc.pid) == {
                (LOOPBACK, serving.proxy_port),
                (LOOPBACK, DEFAULT_ADMIN_PORT),
            }

    async def test_serve_binds_where_told(self) -> None:
        """With ephemeral ports the process listens on exactly its two loopback sockets."""
        async with simulator() as sim, serve_process("--upstream", sim) as serving:
            assert listening(serving.proc.pid) == {
                (LOOPBACK, serving.proxy_port),
                (LOOPBACK, serving.admin_port),
            }


class TestFailOpen:
    """An analyzer that raises stops analysis, is counted once, and the bytes still flow intact."""

    async def test_analyzer_fault_keeps_bytes_identical(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Same bytes, clean end; analysis stops at the fault, counted and logged once; every byte
        still counted on the stream's line."""

        calls = []

        def broken(self: StreamAnalyzer, chunk: bytes, at_ns: int) -> object:
            calls.append(len(chunk))
            raise RuntimeError("injected analyzer fault")

        # Fault injection at the analyzer seam: the one place a test may replace real code.
        monkeypatch.setattr(StreamAnalyzer, "feed", broken)
        async with simulator() as sim, recorder(sim) as relay, streamwatch(relay.url) as running:
            request = request_bytes(CHAT, {"model": "m", "stream": True}, {"x-sim-gap-ms": "5"})
            with capture_logs() as logs:
                got, _ = await raw_exchange(running.proxy_port, request)

                async def closed() -> bool:
                    m = await scrape(running.admin_port)
                    return sum(m.values("streamwatch_streams_total", "outcome").values()) == 1

                await until(closed, what="the stream to be recorded")
            m = await scrape(running.admin_port)
        status, body, clean = got.parsed
        [sent] = relay.bodies()
        assert (status, clean) == (200, True)
        assert hashlib.sha256(body).digest() == hashlib.sha256(sent).digest()
        assert len(calls) == 1  # analysis stopped at the fault; later reads were not analyzed
        assert m.values("streamwatch_analysis_errors_total", "stage") == {"analyzer": 1.0}
        assert [line["stage"] for line in logs if line["event"] == "analysis.failed"] == [
            "analyzer"
        ]
        [line] = [line for line in logs if str(line["event"]).startswith("stream.")]
        assert line["analysis_failed"] is True
        assert line["body_bytes"] == len(sent)

    async def test_analyzer_that_cannot_start_keeps_bytes_identical(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An analyzer that raises as the response head arrives (inside the upstream parser's
        callback) neither cuts the stream nor fails the exchange: same bytes, clean end, logged."""

        def broken(self: StreamAnalyzer, *args: object, **kwargs: object) -> None:
            raise RuntimeError("injected analyzer fault")

        monkeypatch.setattr(StreamAnalyzer, "__init__", broken)
        async with simulator() as sim, recorder(sim) as relay, streamwatch(relay.url) as running:
            request = request_bytes(CHAT, {"model": "m", "stream": True}, {"x-request-id": "f1"})
            with capture_logs() as logs:
                got, _ = await raw_exchange(running.proxy_port, request)
                await until(
                    lambda: any(line.get("request_id") == "f1" for line in logs),
                    what="the request's line",
                )
        status, body, clean = got.parsed
        [sent] = relay.bodies()
        assert (status, clean, body) == (200, True, sent)
        assert [line["stage"] for line in logs if line["event"] == "telemetry.failed"] == [
            "response"
        ]
        assert not [line for line in logs if line["event"] == "upstream.invalid_response"]
        [line] = [line for line in logs if line.get("request_id") == "f1"]
        assert (line["event"], line["status"]) == ("request.completed", 200)


class _Calls:
    """A sink that records the hooks it got per request, raising in ``event`` on one request."""

    def __init__(self, fail_on_request: int | None) -> None:
        self.fail_on_request = fail_on_request
        self.calls: list[list[str]] = []

    def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks:
        calls: list[str] = []
        self.calls.append(calls)
        fail = len(self.calls) == self.fail_on_request

        def events(events: Sequence[SinkEvent]) -> None:
            calls.append("event")
            if fail:
                raise RuntimeError("injected sink fault")

        return Hooks(
            upstream_request=lambda headers: calls.append("upstream_request"),
            response=lambda status, api: calls.append("response"),
            events=events,
            finish=lambda record, error_kind: calls.append("finish"),
        )


def _with_sinks(monkeypatch: pytest.MonkeyPatch, *extra: Sink) -> None:
    """Add ``extra`` sinks before the built-in ones, at the composition root (the sink seam)."""
    real = serve.build_sinks

    def build(*args: Any) -> tuple[Sinks, list[Any]]:
        sinks, closers = real(*args)
        return Sinks(sinks=(*extra, *sinks.sinks), tracer=sinks.tracer), closers

    monkeypatch.setattr(serve, "build_sinks", build)


class TestFaultySink:
    """A sink hook that raises is dropped for that request only and logged; bytes and the other
    sinks are unaffected."""

    async def test_dropped_for_that_request_only(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """After its fault the sink hears nothing more of request 1; request 2 reaches it whole."""
        faulty, healthy = _Calls(fail_on_request=1), _Calls(fail_on_request=None)
        _with_sinks(monkeypatch, faulty, healthy)
        async with (
            simulator() as sim,
            recorder(sim) as relay,
            streamwatch(relay.url) as running,
        ):
            request = request_bytes(CHAT, {"model": "m", "stream": True})
            with capture_logs() as logs:
                first, _ = await raw_exchange(running.proxy_port, request)
                second, _ = await raw_exchange(running.proxy_port, request)

                async def recorded() -> bool:
                    m = await scrape(running.admin_port)
                    return sum(m.values("streamwatch_streams_total", "outcome").values()) == 2

                await until(recorded, what="both streams to be recorded")
            outcomes = (await scrape(running.admin_port)).values(
                "streamwatch_streams_total", "outcome"
            )
        for got, sent in zip((first, second), relay.bodies(), strict=True):
            status, body, clean = got.parsed
            assert (status, clean, body) == (200, True, sent)
        assert faulty.calls[0] == ["upstream_request", "response", "event"]
        assert faulty.calls[1] == healthy.calls[0] == healthy.calls[1]
        assert healthy.calls[0][:2] == ["upstream_request", "response"]
        assert healthy.calls[0][-1] == "finish"
        assert "event" in healthy.calls[0]
        assert outcomes == {"completed": 2.0}
        failures = [line for line in logs if line["event"] == "sink.failed"]
        assert len(failures) == 1
        assert (failures[0]["stage"], failures[0]["sink"]) == ("event", "_Calls")
        assert failures[0]["log_level"] == "warning"


class _CannotWatch:
    """A sink whose ``watch`` raises on every request."""

    def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks:
        raise RuntimeError("injected: cannot watch")


class TestTelemetryThatCannotStart:
    """Telemetry that cannot be set up for a request never fails it: the bytes flow, the fault is
    logged, and the proxy's next request is telemetered as usual."""

    async def test_a_sink_that_cannot_watch_is_left_out(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Same bytes, clean end; logged once as ``sink.failed`` at ``open``; the metrics and the
        log line still record the stream."""
        _with_sinks(monkeypatch, _CannotWatch())
        async with simulator() as sim, recorder(sim) as relay, streamwatch(relay.url) as running:
            request = request_bytes(CHAT, {"model": "m", "stream": True}, {"x-request-id": "w1"})
            with capture_logs() as logs:
                got, _ = await raw_exchange(running.proxy_port, request)
                await until(
                    lambda: any(line.get("request_id") == "w1" for line in logs),
                    what="the stream's line",
                )
            outcomes = (await scrape(running.admin_port)).values(
                "streamwatch_streams_total", "outcome"
            )
        status, body, clean = got.parsed
        [sent] = relay.bodies()
        assert (status, clean, body) == (200, True, sent)
        assert outcomes == {"completed": 1.0}
        failures = [line for line in logs if line["event"] == "sink.failed"]
        assert [(f["stage"], f["sink"]) for f in failures] == [("open", "_CannotWatch")]
        [line] = [line for line in logs if line.get("request_id") == "w1"]
        assert line["event"] == "stream.completed"

    async def test_sinks_that_cannot_open_leave_one_request_untelemetered(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Opening the sinks raising (at the port seam, for the first request only): that
        request's bytes still arrive whole with a clean end, it is logged as ``telemetry.failed``
        at ``start`` and nothing else records it; no error escapes to the event loop; the next
        request is counted and logged, and no exchange is left open."""
        real_open = Sinks.open
        opened: list[str] = []

        def open_once_broken(self: Sinks, exchange: Exchange) -> Any:
            opened.append(exchange.request_id)
            if len(opened) == 1:
                raise RuntimeError("injected: the sinks cannot open")
            return real_open(self, exchange)

        monkeypatch.setattr(Sinks, "open", open_once_broken)
        async with simulator() as sim, recorder(sim) as relay, streamwatch(relay.url) as running:
            stream = {"model": "m", "stream": True}
            with capture_logs() as logs:
                first, _ = await raw_exchange(
                    running.proxy_port, request_bytes(CHAT, stream, {"x-request-id": "s1"})
                )
                second, _ = await raw_exchange(
                    running.proxy_port, request_bytes(CHAT, stream, {"x-request-id": "s2"})
                )
                await until(
                    lambda: any(line.get("request_id") == "s2" for line in logs),
                    what="the second stream's line",
                )
            outcomes = (await scrape(running.admin_port)).values(
                "streamwatch_streams_total", "outcome"
            )
            assert not running.proxy.exchanges
            assert running.proxy.inflight == 0
        for got, sent in zip((first, second), relay.bodies(), strict=True):
            status, body, clean = got.parsed
            assert (status, clean, body) == (200, True, sent)
        assert opened == ["s1", "s2"]
        failed = [line for line in logs if line["event"] == "telemetry.failed"]
        assert [(f["stage"], f["request_id"]) for f in failed] == [("start", "s1")]
        assert [line["event"] for line in logs if line.get("request_id") == "s1"] == [
            "telemetry.failed"
        ]
        assert outcomes == {"completed": 1.0}
        assert "injected" not in caplog.text  # never reached the event loop's exception handler
