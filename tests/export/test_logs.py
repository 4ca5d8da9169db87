"""One JSON log line per request from a real ``streamwatch serve``: ``stream.<outcome>`` for an
analyzed stream, ``request.completed`` otherwise, ``upstream.failed`` when the upstream failed; ids,
numbers and bounded names only, the completion only with content capture on.

Expectations come from what the client received and the simulator's scripts, never from streamwatch.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.harness import (
    CHAT,
    LOOPBACK,
    raw_exchange,
    refusing_port,
    request_bytes,
    serve_process,
    simulator,
    sse_data,
    until,
)
from tests.reliability.harness.proxy import ProxyProcess

# One event loop for the module, so one streamwatch serves every test that needs no options.
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

# The path carries a query (queries may carry keys); the headers a secret. Neither may be logged.
TARGET = CHAT + "?api-version=2024-10-21&key=QUERYCANARY"
SECRET = "sk-HEADERCANARY" + uuid.uuid4().hex
STREAM = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "PROMPTCANARY"}]}


def content_pieces(body: bytes) -> list[str]:
    """The content delta of each chat chunk the client received."""
    return [
        choice.get("delta", {}).get("content") or ""
        for data in sse_data(body)
        if data.startswith("{")
        for choice in json.loads(data).get("choices", [])
    ]


async def one_line(serving: ProxyProcess, request_id: str) -> dict[str, Any]:
    """The end-of-request line of ``request_id``, once it is there; exactly one."""
    await until(
        lambda: any(line.get("request_id") == request_id for line in serving.events()),
        what=f"the log line of {request_id}",
    )
    lines = [line for line in serving.events() if line.get("request_id") == request_id]
    assert len(lines) == 1, lines
    return lines[0]


async def send(
    serving: ProxyProcess, headers: dict[str, str], payload: dict[str, Any] = STREAM, **kw: Any
) -> tuple[dict[str, Any], int, bytes]:
    """One request with a fresh request id; its log line, the status and the body received."""
    rid = uuid.uuid4().hex
    all_headers = {"x-request-id": rid, "Authorization": f"Bearer {SECRET}", **headers}
    got, _ = await raw_exchange(
        serving.proxy_port, request_bytes(TARGET, payload, all_headers), **kw
    )
    status, body, _ = got.parsed
    return await one_line(serving, rid), status, body


def assert_common(line: dict[str, Any], status: int) -> None:
    """Fields every request line has; nothing from the query, the headers or the prompt."""
    assert line["route"] == "default"
    assert line["method"] == "POST"
    assert line["path"] == CHAT
    assert line["status"] == status
    text = json.dumps(line)
    for canary in ("QUERYCANARY", SECRET, "PROMPTCANARY", "Bearer"):
        assert canary not in text


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def serving() -> AsyncIterator[ProxyProcess]:
    """One ``streamwatch serve`` in front of the simulator, default options."""
    async with simulator() as sim, serve_process("--upstream", sim) as process:
        yield process


OUTCOMES = [
    pytest.param({}, "completed", id="completed"),
    pytest.param({"x-sim-scenario": "truncate"}, "truncated", id="truncated"),
    pytest.param({"x-sim-scenario": "error"}, "error_frame", id="error_frame"),
    pytest.param({"x-sim-scenario": "reset"}, "upstream_reset", id="upstream_reset"),
]


def first_output(wire: bytes) -> bool:
    """The client has received a non-empty content delta (the wire may end mid-event)."""
    return re.search(rb'"content":"[^"]', wire) is not None


class TestStreamLine:
    """Each analyzed stream ends in one ``stream.<outcome>`` line carrying its numbers."""

    @pytest.mark.parametrize(("headers", "outcome"), OUTCOMES)
    async def test_outcome(
        self, serving: ProxyProcess, headers: dict[str, str], outcome: str
    ) -> None:
        """The line is named for the outcome and counts what the client received."""
        line, status, body = await send(serving, headers)
        assert line["event"] == f"stream.{outcome}"
        assert line["level"] == "info"
        assert_common(line, status)
        assert (line["api"], line["outcome"]) == ("openai_chat", outcome)
        assert line["body_bytes"] == len(body)
        assert line["output_events"] == sum(1 for piece in content_pieces(body) if piece)
        assert "completion" not in line

    async def test_upstream_reported_durations(self, serving: ProxyProcess) -> None:
        """An Ollama stream's line carries the durations its final line reported, in seconds."""
        rid = uuid.uuid4().hex
        payload = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"x-request-id": rid, "x-sim-gap-ms": "5", "x-sim-ttft-ms": "20"}
        got, _ = await raw_exchange(
            serving.proxy_port, request_bytes("/api/chat", payload, headers)
        )
        _, body, _ = got.parsed
        final = json.loads(body.splitlines()[-1])
        line = await one_line(serving, rid)
        assert (line["api"], line["outcome"]) == ("ollama_chat", "completed")
        assert line["upstream_timings_s"] == {
            f"ollama_{name}": round(final[f"{name}_duration"] / 1e9, 6)  # ns to s, as logged
            for name in ("total", "load", "prompt_eval", "eval")
        }

    async def test_client_abort(self, serving: ProxyProcess) -> None:
        """A client that leaves after the first output event gives ``stream.client_abort``."""
        slow = {"x-sim-gap-ms": "200", "x-sim-tokens": "500"}  # 100 s: cannot end first
        line, status, _ = await send(serving, slow, stop_when=first_output)
        assert line["event"] == "stream.client_abort"
        assert_common(line, status)
        assert line["close_cause"] == "client_abort"

    async def test_capture_on(self) -> None:
        """With content capture on, the line carries the completion, capped at capture_limit."""
        async with (
            simulator() as sim,
            serve_process(
                "--upstream", sim, "--capture-content", "true", "--capture-limit", "7"
            ) as serving,
        ):
            line, _, body = await send(serving, {})
        assert line["completion"] == "".join(content_pieces(body))[:7]
        assert len("".join(content_pieces(body))) > 7


class TestOtherLines:
    """A request that is not an analyzed stream logs ``request.completed``; a failed upstream
    ``upstream.failed`` with its kind."""

    async def test_not_a_stream(self, serving: ProxyProcess) -> None:
        """A non-streaming answer: ``request.completed`` with its status and duration."""
        line, status, _ = await send(serving, {}, {**STREAM, "stream": False})
        assert line["event"] == "request.completed"
        assert_common(line, status)
        assert line["duration_s"] >= 0

    async def test_upstream_refused(self) -> None:
        """Nothing listens upstream: ``upstream.failed`` at warning level, the kind named."""
        with refusing_port() as port:
            upstream = f"http://{LOOPBACK}:{port}"
            async with serve_process("--upstream", upstream) as serving:
                line, status, _ = await send(serving, {})
        assert line["event"] == "upstream.failed"
        assert line["level"] == "warning"
        assert_common(line, status)
        assert line["kind"] == "connect"


class TestRequestId:
    """A request without an ``X-Request-Id`` is logged under a generated id, as ``uuid4().hex``."""

    async def test_generated_ids(self, serving: ProxyProcess) -> None:
        """Two streams sent without an id get two different version-4 UUIDs, 32 hex digits each."""
        model = "rid-" + uuid.uuid4().hex  # finds this test's lines: the request carries no id
        for _ in range(2):
            await raw_exchange(
                serving.proxy_port, request_bytes(TARGET, {**STREAM, "model": model})
            )

        def lines() -> list[dict[str, Any]]:
            return [line for line in serving.events() if line.get("request_model") == model]

        await until(lambda: len(lines()) == 2, what="both stream lines")
        ids = [line["request_id"] for line in lines()]
        assert ids[0] != ids[1]
        for rid in ids:
            parsed = uuid.UUID(hex=rid)
            assert (rid, parsed.version, parsed.variant) == (parsed.hex, 4, uuid.RFC_4122)
