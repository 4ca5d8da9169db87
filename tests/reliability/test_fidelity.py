"""T01-T03, T09-T12: bytes, framing and timing survive the proxy; faults keep their meaning."""

from __future__ import annotations

import json
import random
import threading
import uuid
from pathlib import Path

import pytest

from streamwatch.core.api import Api
from streamwatch.proxy.headers import HOP_BY_HOP
from tests.core.support import chat_chunk
from tests.reliability.harness.checks import (
    Baseline,
    assert_aborted,
    assert_accounting,
    assert_bytes_equal,
    assert_clean_end,
)
from tests.reliability.harness.client import RawClient, build_request, exchange
from tests.reliability.harness.proxy import ProxyProcess
from tests.reliability.harness.upstream import (
    End,
    FakeUpstream,
    Gate,
    HalfClose,
    Headers,
    Raw,
    Rst,
    Scenario,
    Send,
    Sleep,
    Step,
    sse_scenario,
)
from tests.reliability.streams import (
    Body,
    corpus_bodies,
    edge_bodies,
    expected_summary,
    fixture_bodies,
    summary_of_log,
)

BODIES = fixture_bodies() + edge_bodies() + corpus_bodies()
FRAMING_HEADERS = HOP_BY_HOP | {"content-length", "date", "server"}


def _send(
    proxy: ProxyProcess, upstream: FakeUpstream, body: Body, scenario: Scenario, **read: object
) -> tuple[str, object]:
    key = upstream.add(scenario)
    rid = uuid.uuid4().hex
    request = build_request(
        target=body.path,
        headers=[
            ("Content-Type", "application/json"),
            ("x-h1-scenario", key),
            ("x-request-id", rid),
        ],
        body=b'{"model":"gpt-4o","stream":true}',
    )
    return rid, exchange(proxy.port, request, **read)


def _end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers if k.lower() not in FRAMING_HEADERS)


class TestGoldenPassthrough:
    """T01: every stream reaches the client byte for byte, ends cleanly and is analyzed as in-process."""

    def test_corpus_is_replayed(self, corpus_dir: Path) -> None:
        """Every stream of the corpus index is among the replayed bodies (a failure in CI if absent)."""
        index = json.loads((corpus_dir / "llm-streams" / "index.json").read_text("utf-8"))
        listed = {row["file"].removeprefix("llm-streams/") for row in index}
        assert listed
        assert listed <= {body.name for body in BODIES}

    @pytest.mark.parametrize("framing", ["chunked", "close"])
    @pytest.mark.parametrize("body", BODIES, ids=lambda b: b.name)
    def test_passthrough(
        self, proxy: ProxyProcess, upstream: FakeUpstream, body: Body, framing: str
    ) -> None:
        """Body bytes, clean end, end-to-end headers and the analysis all match the upstream."""
        headers = (
            ("Content-Type", "text/event-stream"),
            ("X-Upstream-Id", "u1"),
            ("Cache-Control", "no-cache"),
        )
        scenario = sse_scenario(body.events, framing=framing, headers=headers)  # type: ignore[arg-type]
        rid, response = _send(proxy, upstream, body, scenario)
        assert_bytes_equal(response.body, body.raw)  # type: ignore[attr-defined]
        assert_clean_end(response)  # type: ignore[arg-type]
        assert _end_to_end(response.headers) == _end_to_end(list(headers))  # type: ignore[attr-defined]
        assert summary_of_log(proxy.record(rid)) == expected_summary(body)

    def test_accounting_balances(self, proxy: ProxyProcess) -> None:
        """L3 after the corpus: streams_total by api equals the stream log lines."""
        assert_accounting(proxy)


SMALL = [b for b in BODIES if len(b.raw) < 16_384][:12]


class TestChunkBoundaryInvariance:
    """T02: slicing upstream writes into 1-7 byte pieces, or coalescing them, changes nothing."""

    @pytest.mark.parametrize("body", SMALL, ids=lambda b: b.name)
    def test_sliced_and_coalesced(
        self, proxy: ProxyProcess, upstream: FakeUpstream, body: Body
    ) -> None:
        """Bytes and analysis are identical for per-event, 1-7 byte and single-write upstreams."""
        rng = random.Random(body.name)
        pieces, i = [], 0
        while i < len(body.raw):
            n = rng.randint(1, 7)
            pieces.append(body.raw[i : i + n])
            i += n
        variants = {
            "sliced": sse_scenario(pieces),
            "coalesced": sse_scenario([body.raw]),
        }
        reference = expected_summary(body)
        for name, scenario in variants.items():
            rid, response = _send(proxy, upstream, body, scenario)
            assert_bytes_equal(response.body, body.raw)  # type: ignore[attr-defined]
            assert_clean_end(response)  # type: ignore[arg-type]
            assert summary_of_log(proxy.record(rid)) == reference, name


class TestNoBuffering:
    """T03: each upstream write is forwarded before the next exists; headers go out before any event.

    The upstream writes in lockstep with the client: it sends the headers, then waits until the client
    has them before the first event, and so on. A proxy that held back any part of the response
    (headers until the first body bytes, an event until more arrive or a buffer fills) deadlocks the
    lockstep and fails the bounded read. Added latency is measured by ``benchmarks/run.py``.
    """

    EVENTS = 40

    def test_lockstep(self, proxy: ProxyProcess, upstream: FakeUpstream) -> None:
        """The client receives the head, then every event alone, each while the upstream waits."""
        events = [
            b'data: {"choices":[{"delta":{"content":"%d"}}]}\n\n' % i for i in range(self.EVENTS)
        ]
        gates = [threading.Event() for _ in range(self.EVENTS + 1)]
        steps: list[Step] = [Headers(), Gate(gates[0])]
        for event, gate in zip(events, gates[1:], strict=True):
            steps += [Send(event), Gate(gate)]
        key = upstream.add(Scenario([*steps, End()]))
        client = RawClient(proxy.port)
        try:
            client.expect()
            client.send(build_request(headers=[("x-h1-scenario", key)], body=b"{}"))
            response = client.read(until=lambda r: r.status is not None, deadline=10)
            assert response.status == 200, "no response head while the upstream waits"
            assert not response.body
            gates[0].set()
            for k, gate in enumerate(gates[1:], start=1):
                expected = b"".join(events[:k])
                response = client.read(until_body=len(expected), deadline=10)
                assert bytes(response.body) == expected, f"event {k} held back"
                gate.set()
            assert_clean_end(client.read())
        finally:
            for gate in gates:
                gate.set()
            client.close()


class TestUpstreamAbort:
    """T09: an upstream that dies mid-body reaches the client as an abort, never as a clean end."""

    HEAD = [b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'] * 37

    @pytest.mark.parametrize(
        "scenario",
        [
            pytest.param(
                Scenario([Headers(), *map(Send, HEAD), Sleep(0.2), Rst()]), id="chunked-rst"
            ),
            pytest.param(
                Scenario([Headers(), *map(Send, HEAD), HalfClose()]), id="chunked-fin-no-terminator"
            ),
            pytest.param(
                Scenario([Headers(), *map(Send, HEAD), Raw(b"40\r\nshort"), HalfClose()]),
                id="fin-mid-chunk",
            ),
            pytest.param(
                Scenario(
                    [
                        Headers(
                            headers=[
                                ("Content-Type", "text/event-stream"),
                                ("Content-Length", "100000"),
                            ],
                            framing="close",
                        ),
                        *map(Send, HEAD),
                        HalfClose(),
                    ]
                ),
                id="content-length-short",
            ),
            pytest.param(
                Scenario([Headers(framing="close"), *map(Send, HEAD), Sleep(0.2), Rst()]),
                id="close-delimited-rst",
            ),
        ],
    )
    def test_abort_propagates(
        self, proxy: ProxyProcess, upstream: FakeUpstream, scenario: Scenario
    ) -> None:
        """Partial bytes are forwarded, the client sees an abort, the outcome is upstream_reset."""
        base = Baseline(proxy)
        body = Body("abort", Api.OPENAI_CHAT, b"")
        rid, response = _send(proxy, upstream, body, scenario)
        assert_aborted(response)  # type: ignore[arg-type]
        sent = b"".join(self.HEAD)
        assert_bytes_equal(response.body[: len(sent)], sent)  # type: ignore[attr-defined]
        assert len(response.body) <= len(sent) + 5  # type: ignore[attr-defined]
        line = proxy.record(rid)
        assert line["outcome"] == "upstream_reset", line
        assert line["terminal_frame"] is None
        base.check()


def _anthropic(kind: str, payload: str) -> bytes:
    return f'event: {kind}\ndata: {{"type":"{kind}",{payload}}}\n\n'.encode()


DONE = b"data: [DONE]\n\n"
TEXT = {"content": "a"}


class TestTruncationLabels:
    """T10: a clean HTTP end without the protocol's terminal frame is labelled truncated, only then."""

    @pytest.mark.parametrize(
        ("events", "outcome"),
        [
            pytest.param([chat_chunk(TEXT)], "truncated", id="chat-no-finish-no-done"),
            pytest.param(
                [chat_chunk(TEXT, "stop"), DONE], "completed", id="chat-merged-finish-reason"
            ),
            pytest.param(
                [
                    chat_chunk(TEXT),
                    chat_chunk({}, "stop"),
                    chat_chunk(usage={"prompt_tokens": 3, "completion_tokens": 1}),
                    DONE,
                ],
                "completed",
                id="chat-usage-only-last-chunk",
            ),
            pytest.param(
                [
                    _anthropic(
                        "message_start", '"message":{"model":"c","usage":{"input_tokens":1}}'
                    ),
                    _anthropic(
                        "content_block_delta", '"index":0,"delta":{"type":"text_delta","text":"a"}'
                    ),
                ],
                "truncated",
                id="anthropic-no-message-stop",
            ),
        ],
    )
    def test_label(
        self, proxy: ProxyProcess, upstream: FakeUpstream, events: list[bytes], outcome: str
    ) -> None:
        """Forwarded verbatim with a clean end; the outcome label is the expected one."""
        api = Api.OPENAI_CHAT if b"choices" in events[0] else Api.ANTHROPIC_MESSAGES
        body = Body("t10", api, b"".join(events))
        rid, response = _send(proxy, upstream, body, sse_scenario(events))
        assert_bytes_equal(response.body, body.raw)  # type: ignore[attr-defined]
        assert_clean_end(response)  # type: ignore[arg-type]
        assert proxy.record(rid)["outcome"] == outcome


ERROR_BODIES = [b for b in BODIES if "error" in b.name or "failed" in b.name]


class TestErrorFrames:
    """T11: in-band error frames on a 200 are forwarded byte-exact and counted with a bounded type."""

    @pytest.mark.parametrize("body", ERROR_BODIES, ids=lambda b: b.name)
    def test_error_frame(self, proxy: ProxyProcess, upstream: FakeUpstream, body: Body) -> None:
        """The bytes pass, the outcome is error_frame and the metric label is from the fixed set."""
        from streamwatch.metricspec import ERROR_TYPES, OTHER

        rid, response = _send(proxy, upstream, body, sse_scenario(body.events))
        assert_bytes_equal(response.body, body.raw)  # type: ignore[attr-defined]
        line = proxy.record(rid)
        if not line["error_frames"]:
            pytest.skip(f"{body.name} carries no error frame the analyzer recognises")
        assert line["outcome"] == "error_frame"
        labels = {
            lab["error_type"]
            for n, lab, v in proxy.samples()
            if n == "streamwatch_error_frames_total" and v > 0
        }
        assert labels
        assert labels <= ERROR_TYPES | {OTHER}


class TestPreStreamErrors:
    """T12: upstream error responses pass through verbatim, once, and are not counted as streams."""

    @pytest.mark.parametrize("status", [400, 401, 429, 500, 503, 200])
    def test_passthrough(self, proxy: ProxyProcess, upstream: FakeUpstream, status: int) -> None:
        """Status, Content-Length, Retry-After and body bytes are the upstream's; one upstream request."""
        payload = (
            b'{"error":{"type":"rate_limit_error","message":"slow down"}}'
            if status != 200
            else b'{"id":"x"}'
        )
        headers = [("Content-Type", "application/json")]
        if status == 429:
            headers.append(("Retry-After", "7"))
        key = upstream.add(Scenario([Headers(status, headers, "cl"), Send(payload), End()]))
        streams_before = proxy.total("streamwatch_streams_total")
        rid = uuid.uuid4().hex
        response = exchange(
            proxy.port,
            build_request(
                headers=[("x-h1-scenario", key), ("x-request-id", rid)], body=b'{"stream":true}'
            ),
        )
        assert response.status == status
        assert response.body == payload
        assert response.header("content-length") == [str(len(payload))]
        assert response.header("transfer-encoding") == []
        if status == 429:
            assert response.header("retry-after") == ["7"]
        assert len(upstream.requests_for(key)) == 1
        assert proxy.record(rid)["event"] == "request.completed"
        assert proxy.total("streamwatch_streams_total") == streams_before
