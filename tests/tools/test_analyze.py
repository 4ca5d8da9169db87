"""``streamwatch analyze``: the proxy's verdict for a stream on disk, through the CLI entry point."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamwatch.cli import main as cli_main
from streamwatch.core.analyzer import StreamAnalyzer
from streamwatch.core.capture import CaptureHeader, encode_end, encode_header, encode_read
from streamwatch.core.record import CloseCause
from streamwatch.export.logs import stream_fields
from streamwatch.tools.analyze import _UNTIMED
from tests.core.support import (
    FIXTURE_STREAMS,
    corpus_params,
    load_llm_streams,
    load_provider_streams,
)
from tests.core.test_corpus_streams import api_of
from tests.harness import simulator
from tests.reliability.harness.proxy import ProxyProcess


def run(tmp_path: Path, content: bytes, *args: str, name: str = "in.sse") -> tuple[int, str, str]:
    """``streamwatch analyze`` on ``content`` written to a file: (exit status, stdout, stderr)."""
    path = tmp_path / name
    path.write_bytes(content)
    out, err = io.StringIO(), io.StringIO()
    from streamwatch.tools.analyze import main

    status = main([str(path), *args], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def verdicts(tmp_path: Path, content: bytes, *args: str, name: str = "in.sse") -> list[Any]:
    status, out, err = run(tmp_path, content, "--json", *args, name=name)
    assert status == 0, err
    return list(json.loads(out)["streams"])


def _corpus(root: Path) -> list[tuple[str, bytes, dict[str, Any]]]:
    return [*load_llm_streams(root), *load_provider_streams(root)]


@pytest.mark.usefixtures("corpus_dir")
class TestCorpusVerdicts:
    """Every recorded corpus stream, every format, gets its API from its own bytes and the verdict
    the analyzer gives it (which tests/core checks against the stream's expectation file)."""

    @pytest.mark.parametrize("case", corpus_params(_corpus, lambda case: case[0]), ids=str)
    def test_stream(self, tmp_path: Path, case: tuple[str, bytes, dict[str, Any]]) -> None:
        _, raw, expected = case
        [doc] = verdicts(tmp_path, raw)
        verdict = doc["verdict"]
        api = api_of(expected)
        assert verdict["api"] == api.value  # sniffed: no path, no content type, no --api
        analyzer = StreamAnalyzer(api, 0)
        analyzer.feed(raw, 0)
        _, record = analyzer.close(0, CloseCause.UPSTREAM_EOF)
        direct = stream_fields(record)
        for name in _UNTIMED | {"ttfb_s", "duration_s"}:
            direct[name] = None  # a bare body has no timings: none are invented
        assert verdict == direct
        assert verdict["finish_reasons"] == expected["finish_reasons"]
        assert len(verdict["error_frames"]) == len(expected["error_frames"])
        assert doc["source"]["timing"] == "none"


class TestOwnFixtures:
    """Without the corpus, the project's own fixture streams are read with the right API."""

    @pytest.mark.parametrize(
        ("name", "api", "outcome"),
        [
            ("openai-chat-usage-tool-call.sse", "openai_chat", "completed"),
            ("openai-responses-text.sse", "openai_responses", "completed"),
            ("anthropic-thinking-tool-use.sse", "anthropic_messages", "completed"),
        ],
    )
    def test_fixture(self, tmp_path: Path, name: str, api: str, outcome: str) -> None:
        [doc] = verdicts(tmp_path, (FIXTURE_STREAMS / name).read_bytes())
        assert doc["verdict"]["api"] == api
        assert doc["verdict"]["outcome"] == outcome

    def test_path_overrides_sniffing(self, tmp_path: Path) -> None:
        raw = (FIXTURE_STREAMS / "openai-chat-usage-tool-call.sse").read_bytes()
        [doc] = verdicts(tmp_path, raw, "--api", "sse")
        assert doc["verdict"]["api"] == "sse"


class TestCaptureTimings:
    """A streamwatch capture carries every read's arrival: TTFT and the gap distribution."""

    def test_ttft_and_gaps(self, tmp_path: Path) -> None:
        raw = (FIXTURE_STREAMS / "openai-chat-usage-tool-call.sse").read_bytes()
        events = [e + b"\n\n" for e in raw.split(b"\n\n") if e.strip()]
        header = CaptureHeader("POST", "/v1/chat/completions", 200, "text/event-stream", "gpt")
        ms = 1_000_000
        lines = [encode_header(header)]
        lines += [encode_read(100 * ms + i * 50 * ms, e) for i, e in enumerate(events)]
        lines.append(encode_end(100 * ms + len(events) * 50 * ms, CloseCause.UPSTREAM_EOF))
        [doc] = verdicts(tmp_path, b"".join(lines), name="c.jsonl")
        verdict, gaps = doc["verdict"], doc["gaps"]
        assert doc["source"] == {
            "kind": "capture",
            "path": "/v1/chat/completions",
            "timing": "reads",
        }
        assert verdict["ttfb_s"] == pytest.approx(0.1)
        assert verdict["ttft_s"] == pytest.approx(0.1 + 0.05 * 1)  # the first event is the role
        assert gaps["count"] == verdict["output_events"] - 1
        assert gaps["p50_s"] == pytest.approx(0.05)
        assert verdict["request_model"] == "gpt"

    def test_reset_in_capture(self, tmp_path: Path) -> None:
        raw = (FIXTURE_STREAMS / "openai-chat-usage-tool-call.sse").read_bytes()
        header = CaptureHeader("POST", "/v1/chat/completions", 200, "text/event-stream")
        capture = encode_header(header) + encode_read(5, raw[:700])
        capture += encode_end(10, CloseCause.UPSTREAM_RESET)
        [doc] = verdicts(tmp_path, capture, name="c.jsonl")
        assert doc["verdict"]["outcome"] == "upstream_reset"


class TestBadInput:
    """A file that is no stream gets exit status 2 and one line saying what was expected."""

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"", "empty"),
            (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "no stream found"),
            (b'{"streamwatch_capture": 1, "method": "POST"}\n', "damaged streamwatch capture"),
            (
                b'{"streamwatch_capture": 1, "method": "POST", "path": "/v1/x", "status": 200}\n'
                b'{"t_ns": 1, "b64": "***"}\n',
                "line 2",
            ),
            (b'{"log": {"entries": []}}', "no response body that is an event stream"),
            (b'{"log": 3}', "log.entries"),
        ],
    )
    def test_refused(self, tmp_path: Path, content: bytes, message: str) -> None:
        status, out, err = run(tmp_path, content)
        assert status == 2
        assert out == ""
        assert message in err
        assert len(err.splitlines()) == 1

    def test_missing_file(self, tmp_path: Path) -> None:
        status = cli_main(["analyze", str(tmp_path / "nope.sse")])
        assert status == 2


class TestEntryPoint:
    """``python -m streamwatch analyze`` prints the human verdict."""

    def test_subprocess(self, tmp_path: Path) -> None:
        path = tmp_path / "s.sse"
        path.write_bytes((FIXTURE_STREAMS / "anthropic-thinking-tool-use.sse").read_bytes())
        done = subprocess.run(
            [sys.executable, "-m", "streamwatch", "analyze", str(path)],
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        text = done.stdout.decode()
        assert "anthropic_messages" in text
        assert "outcome completed" in text
        assert "timings: none in this file" in text


def _har(url: str, body: bytes, wait_ms: float, receive_ms: float) -> dict[str, Any]:
    """A HAR 1.2 document as browser dev tools export one streamed request."""
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "test", "version": "1"},
            "entries": [
                {
                    "startedDateTime": "2026-12-01T00:00:00.000Z",
                    "time": wait_ms + receive_ms,
                    "request": {
                        "method": "POST",
                        "url": url,
                        "headers": [],
                        "httpVersion": "HTTP/1.1",
                    },
                    "response": {
                        "status": 200,
                        "headers": [],
                        "content": {
                            "size": len(body),
                            "mimeType": "text/event-stream",
                            "text": body.decode("utf-8"),
                        },
                    },
                    "timings": {
                        "blocked": -1,
                        "dns": -1,
                        "connect": -1,
                        "send": 0,
                        "wait": wait_ms,
                        "receive": receive_ms,
                    },
                }
            ],
        }
    }


class TestHarFromRealStream:
    """A HAR recorded from a real stream through ``streamwatch serve`` gets the proxy's verdict."""

    async def test_same_verdict_as_the_proxy(self, tmp_path: Path) -> None:
        async with simulator() as upstream:
            proxy = await asyncio.to_thread(ProxyProcess(upstream).start)
            try:
                url = f"http://127.0.0.1:{proxy.port}/v1/chat/completions?api-key=secret"
                body = {
                    "model": "gpt-4o-mini",
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream_options": {"include_usage": True},
                }
                headers = {
                    "x-request-id": "har-1",
                    "x-sim-scenario": "tool_call",
                    "x-sim-gap-ms": "20",
                    "x-sim-ttft-ms": "50",
                }
                started = time.monotonic()
                chunks: list[bytes] = []
                first = None
                async with (
                    httpx.AsyncClient() as client,
                    client.stream("POST", url, json=body, headers=headers) as response,
                ):
                    async for chunk in response.aiter_raw():
                        first = first or time.monotonic()
                        chunks.append(chunk)
                ended = time.monotonic()
                logged = await asyncio.to_thread(proxy.record, "har-1")
            finally:
                await asyncio.to_thread(proxy.stop)
        assert first is not None
        wait_ms, receive_ms = (first - started) * 1000, (ended - first) * 1000
        har = json.dumps(_har(url, b"".join(chunks), wait_ms, receive_ms)).encode()
        [doc] = verdicts(tmp_path, har, name="s.har")
        verdict = doc["verdict"]
        assert doc["source"] == {"kind": "har", "path": "/v1/chat/completions", "timing": "ttfb"}
        for field in (
            "api",
            "outcome",
            "finish_reasons",
            "output_events",
            "output_tokens",
            "tool_calls",
            "terminal_frame",
            "model",
            "error_frames",
        ):
            assert verdict[field] == logged[field], field
        assert verdict["ttfb_s"] == pytest.approx(wait_ms / 1000, abs=1e-3)
        assert verdict["ttft_s"] is None  # a HAR has no per-chunk times: TTFT is not invented
