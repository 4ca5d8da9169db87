"""The simulator over real sockets: transport behaviours, x-sim overrides, routing and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import ollama
import openai
import pytest

from streamwatch.simulator.scenario import TIMESTAMP_FIELD
from streamwatch.simulator.server import SHUTDOWN_TIMEOUT_S, start_simulator

from .conftest import FAST

CHAT = "/v1/chat/completions"


async def _raw_exchange(base_url: str, headers: dict[str, str]) -> bytes:
    """POST a streaming chat request on a bare socket and read until the server ends or resets."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps({"model": "m", "stream": True}).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{head}\r\n".encode()
        + body
    )
    try:
        return await reader.read(-1)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()


async def _post(
    base_url: str, path: str, payload: dict[str, Any], headers: dict[str, str]
) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url + path, json=payload, headers=headers) as response,
    ):
        assert response.status == 200
        return await response.read()


def _sse_payloads(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.split(b"\n") if line.startswith(b"data: {")]


class TestTransport:
    """Truncation ends the chunked body cleanly; a reset is a TCP RST before the body ends."""

    async def test_truncation_ends_chunked_body(self, base_url: str) -> None:
        raw = await _raw_exchange(base_url, {"x-sim-scenario": "truncate"})
        assert raw.startswith(b"HTTP/1.1 200")
        assert raw.endswith(b"0\r\n\r\n")
        assert b"[DONE]" not in raw
        assert raw.count(b'"content":"') == 1 + 6  # role chunk, then half the 12 tokens

    async def test_reset_is_a_connection_reset(self, base_url: str) -> None:
        with pytest.raises(ConnectionResetError):
            await _raw_exchange(base_url, {"x-sim-scenario": "reset", "x-sim-reset-after": "3"})

    async def test_reset_seen_by_aiohttp(self, base_url: str) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                base_url + CHAT,
                json={"model": "m", "stream": True},
                headers={"x-sim-scenario": "reset"},
            ) as response,
        ):
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()

    async def test_non_streaming_reset_breaks_content_length(self, base_url: str) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                base_url + "/v1/messages",
                json={"model": "m"},
                headers={"x-sim-scenario": "truncate"},
            ) as response,
        ):
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()

    async def test_events_are_separate_writes(self, base_url: str) -> None:
        """Each token event is rendered and written on its own, at its own time.

        Read from the send times the server stamps into the events as it writes them, not from the
        client's reads, which a busy client may coalesce. (The server keeps to the scenario's
        timeline, so a late write is followed by a shorter wait: only the order is certain.)
        """
        headers = {
            "x-sim-tokens": "4",
            "x-sim-gap-ms": "20",
            "x-sim-jitter-ms": "0",
            "x-sim-ttft-ms": "20",
            "x-sim-timestamps": "1",
        }
        body = await _post(base_url, CHAT, {"model": "m", "stream": True}, headers)
        stamps = [p[TIMESTAMP_FIELD] for p in _sse_payloads(body) if TIMESTAMP_FIELD in p]
        assert len(stamps) == 4
        assert all(a < b for a, b in itertools.pairwise(stamps)), stamps

    async def test_client_disconnect_stops_generation(self) -> None:
        runner, port = await start_simulator("127.0.0.1", 0, FAST)
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"http://127.0.0.1:{port}{CHAT}",
                    json={"model": "m", "stream": True},
                    headers={"x-sim-tokens": "1000", "x-sim-gap-ms": "50"},
                ) as response,
            ):
                await response.content.readline()
        finally:
            started = time.monotonic()
            await runner.cleanup()
        # A handler still generating holds shutdown for the whole shutdown timeout; one that
        # stopped at the disconnect does not (the bound is that timeout, not a guess below it).
        assert time.monotonic() - started < SHUTDOWN_TIMEOUT_S


class TestOverrides:
    """x-sim-* headers script timing, size, seed and send timestamps; bad values are a 400."""

    async def test_tokens_and_model(self, base_url: str) -> None:
        body = await _post(
            base_url, CHAT, {"model": "my-model", "stream": True}, {"x-sim-tokens": "3"}
        )
        payloads = _sse_payloads(body)
        assert {p["model"] for p in payloads} == {"my-model"}
        assert sum(1 for p in payloads if p["choices"][0]["delta"].get("content")) == 3

    async def test_ttft(self, base_url: str) -> None:
        started = time.monotonic()
        await _post(base_url, CHAT, {"model": "m", "stream": True}, {"x-sim-ttft-ms": "300"})
        assert time.monotonic() - started >= 0.3

    async def test_stall(self, base_url: str) -> None:
        started = time.monotonic()
        await _post(
            base_url,
            "/v1/responses",
            {"model": "m", "stream": True},
            {"x-sim-scenario": "stall", "x-sim-stall-ms": "300"},
        )
        assert time.monotonic() - started >= 0.3

    async def test_same_seed_same_stream(self, base_url: str) -> None:
        def normalise(body: bytes) -> bytes:
            return re.sub(rb'"created(_at)?":\d+', b'"created":0', body)

        headers = {"x-sim-seed": "42", "x-sim-gap-ms": "1", "x-sim-jitter-ms": "1"}
        payload = {"model": "m", "stream": True}
        first = await _post(base_url, "/v1/responses", payload, headers)
        second = await _post(base_url, "/v1/responses", payload, headers)
        assert normalise(first) == normalise(second)

    async def test_timestamps(self, base_url: str) -> None:
        before = time.monotonic_ns()
        body = await _post(
            base_url, "/v1/messages", {"model": "m", "stream": True}, {"x-sim-timestamps": "1"}
        )
        after = time.monotonic_ns()
        stamps = [p[TIMESTAMP_FIELD] for p in _sse_payloads(body) if TIMESTAMP_FIELD in p]
        assert len(stamps) == 12
        assert stamps == sorted(stamps)
        assert before <= stamps[0] <= stamps[-1] <= after

    @pytest.mark.parametrize(
        "headers",
        [{"x-sim-tokens": "many"}, {"x-sim-scenario": "bogus"}, {"x-sim-status": "200"}],
    )
    async def test_invalid_header(self, base_url: str, headers: dict[str, str]) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(base_url + CHAT, json={"model": "m"}, headers=headers) as response,
        ):
            assert response.status == 400
            error = (await response.json())["error"]
            assert error["type"] == "invalid_request_error"

    async def test_invalid_json(self, base_url: str) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(base_url + "/v1/messages", data=b"{nope") as response,
        ):
            assert response.status == 400
            assert (await response.json())["type"] == "error"


class TestRouting:
    """Any prefix before /v1 is accepted and /v1/models lists models."""

    async def test_prefix(self, base_url: str) -> None:
        body = await _post(base_url, "/gateway/openai/v1/chat/completions", {"model": "m"}, {})
        assert json.loads(body)["object"] == "chat.completion"

    async def test_models(self, base_url: str) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(base_url + "/v1/models") as response,
        ):
            listing = await response.json()
        assert listing["object"] == "list"
        assert all(m["object"] == "model" for m in listing["data"])

    async def test_non_streaming_has_content_length(self, base_url: str) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(base_url + "/v1/responses", json={"model": "m"}) as response,
        ):
            body = await response.read()
            assert response.headers["Content-Length"] == str(len(body))
        assert json.loads(body)["status"] == "completed"


@pytest.mark.e2e
class TestCli:
    """`python -m streamwatch.simulator --port 0` prints the bound port and exits 0 on SIGTERM."""

    def test_start_and_stop(self) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamwatch.simulator", "--port", "0", "--seed", "1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            assert match, line
            asyncio.run(_get_models(int(match.group(1))))
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()


async def _get_models(port: int) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/v1/models") as response,
    ):
        assert response.status == 200


class TestNonStreamingFormats:
    """Legacy completions, Ollama and Cohere v2 answer a non-streaming request with one JSON body,
    read by the official clients where one is installed."""

    async def test_legacy_completions_with_the_openai_sdk(self, base_url: str) -> None:
        """``/v1/completions`` without ``stream``: a text_completion with text and usage."""
        async with openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="sk-sim") as client:
            completion = await client.completions.create(model="m", prompt="Say hi.", stream=False)
        assert completion.object == "text_completion"
        assert completion.choices[0].text
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.completion_tokens > 0

    @pytest.mark.parametrize("api", ["chat", "generate"])
    async def test_ollama_with_its_client(self, base_url: str, api: str) -> None:
        """``"stream": false``: one final object with the whole answer and the counts."""
        async with ollama.AsyncClient(host=base_url) as client:
            if api == "chat":
                answer: Any = await client.chat(
                    model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=False
                )
                text = answer.message.content
            else:
                answer = await client.generate(model="llama3.2", prompt="hi", stream=False)
                text = answer.response
        assert text
        assert (answer.done, answer.done_reason) == (True, "stop")
        assert answer.eval_count
        assert answer.eval_duration is not None  # the FAST profile's gaps are 0

    async def test_cohere_v2_chat(self, base_url: str) -> None:
        """``/v2/chat`` without ``stream``: a ChatResponse with text and usage."""
        body = await _post(base_url, "/v2/chat", {"model": "command-r", "messages": []}, {})
        answer = json.loads(body)
        assert answer["finish_reason"] == "COMPLETE"
        assert answer["message"]["content"][-1]["type"] == "text"
        assert answer["message"]["content"][-1]["text"]
        assert answer["usage"]["tokens"]["output_tokens"] > 0
