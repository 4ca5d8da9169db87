"""The relay's seam into the sinks: the request id each request gets, and the upstream request
headers, which leave byte for byte whether or not a sink adds its own (trace context)."""

from __future__ import annotations

import uuid

import pytest

from streamwatch.core.side import Side
from streamwatch.proxy.headers import Headers
from streamwatch.proxy.telemetry import Telemetry, new_request_id
from streamwatch.sinks import Sinks

# Duplicates, mixed case and bytes 0x80-0xff (legal obs-text, not UTF-8): all must survive.
HEADERS: Headers = [
    (b"Host", b"127.0.0.1"),
    (b"X-Tag", b"one"),
    (b"x-tag", b"two"),
    (b"X-Latin", b"caf\xe9 \xff\xfe end"),
    (b"Content-Length", b"2"),
]


def telemetry(sinks: Sinks, headers: Headers = HEADERS) -> Telemetry:
    return Telemetry(
        sinks, method="POST", path="/v1/chat/completions", route="default", side=Side.CLIENT,
        headers=headers, t_request_ns=0, server=("127.0.0.1", 1),
    )  # fmt: skip


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
