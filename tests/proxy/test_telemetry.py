"""The relay's seam into the sinks: the request id each request gets, and the upstream request
headers, which leave byte for byte whether or not a sink adds its own (trace context)."""

from __future__ import annotations

import uuid

import pytest
from multidict import CIMultiDict

from streamwatch.core.side import Side
from streamwatch.proxy.headers import Headers
from streamwatch.proxy.telemetry import Telemetry, new_request_id
from streamwatch.sinks import Exchange, Hooks, Sinks, Trace

# Duplicates, mixed case and bytes 0x80-0xff (legal obs-text, not UTF-8): all must survive.
HEADERS: Headers = [
    (b"Host", b"127.0.0.1"),
    (b"X-Tag", b"one"),
    (b"x-tag", b"two"),
    (b"X-Latin", b"caf\xe9 \xff\xfe end"),
    (b"Content-Length", b"2"),
]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Propagating:
    """A tracer as the OTel one behaves: reads the request's headers, adds trace context."""

    def __init__(self) -> None:
        self.seen: list[list[tuple[str, str]]] = []

    def trace(self, exchange: Exchange) -> Trace:
        self.seen.append(list(exchange.headers.items()))

        def upstream_request(headers: CIMultiDict[str]) -> None:
            headers["traceparent"] = TRACEPARENT

        return Trace(Hooks(upstream_request=upstream_request), None)


class Finishing:
    """A sink with a ``finish`` hook only, as the log line."""

    def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks:
        return Hooks(finish=lambda record, error_kind: None)


def telemetry(sinks: Sinks, headers: Headers = HEADERS) -> Telemetry:
    return Telemetry(
        sinks, method="POST", path="/v1/chat/completions", route="default", side=Side.CLIENT,
        headers=headers, t_request_ns=0, server=("127.0.0.1", 1),
    )  # fmt: skip


class TestUpstreamHeaders:
    """What ``inject`` returns is what goes upstream."""

    def test_unchanged_without_a_sink_that_adds_headers(self) -> None:
        """Tracing off: the headers go as they came, duplicates, case and non-UTF-8 bytes kept."""
        sent = telemetry(Sinks(sinks=(Finishing(),))).inject(list(HEADERS))
        assert sent == HEADERS

    def test_trace_context_appended_byte_for_byte(self) -> None:
        """Tracing on: every header byte for byte, in order, then the tracer's traceparent."""
        sent = telemetry(Sinks(sinks=(Finishing(),), tracer=Propagating())).inject(list(HEADERS))
        assert sent == [*HEADERS, (b"traceparent", TRACEPARENT.encode())]

    def test_the_tracer_reads_the_request_headers(self) -> None:
        """The tracer sees every incoming header (as latin-1 text) to extract trace context."""
        tracer = Propagating()
        telemetry(Sinks(tracer=tracer))
        assert tracer.seen == [[(k.decode("latin-1"), v.decode("latin-1")) for k, v in HEADERS]]


class TestRequestId:
    """A request keeps the client's ``X-Request-Id`` when usable, else gets a random UUID."""

    def test_generated_ids_are_uuid4_hex(self) -> None:
        """Generated ids are written as ``uuid.uuid4().hex``: 32 lowercase hex digits, version 4,
        RFC 9562 variant."""
        for _ in range(1000):
            rid = new_request_id()
            parsed = uuid.UUID(hex=rid)
            assert rid == parsed.hex
            assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)

    def test_generated_ids_are_unique(self) -> None:
        """No two of 100,000 generated ids are equal, and their random bits vary everywhere."""
        ids = [new_request_id() for _ in range(100_000)]
        assert len(set(ids)) == len(ids)
        for position in range(32):
            assert len({rid[position] for rid in ids}) > 1 or position == 12  # the version digit

    def test_a_request_without_one_gets_a_new_id(self) -> None:
        """Two requests without ``X-Request-Id`` get two different generated ids."""
        first, second = (telemetry(Sinks()).exchange.request_id for _ in range(2))
        assert first != second
        assert uuid.UUID(hex=first).version == 4

    def test_the_clients_id_is_kept(self) -> None:
        """A printable ASCII ``X-Request-Id`` (any case of the name) is the request's id."""
        given = telemetry(Sinks(), [*HEADERS, (b"X-REQUEST-ID", b"gw-42/a b")])
        assert given.exchange.request_id == "gw-42/a b"

    @pytest.mark.parametrize(
        "value", [b"", b"x" * 129, b"caf\xe9", b"a\tb"], ids=["empty", "long", "latin", "control"]
    )
    def test_an_unusable_id_is_replaced(self, value: bytes) -> None:
        """An empty, over-long, non-ASCII or non-printable ``X-Request-Id`` is replaced."""
        replaced = telemetry(Sinks(), [(b"x-request-id", value)]).exchange.request_id
        assert uuid.UUID(hex=replaced).version == 4
