"""``serve --capture-dir``: captures written by a real ``streamwatch serve``, read back by a real
``streamwatch analyze``; opt-in, kept by outcome, capped, secret-free, and never the stream's end."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from streamwatch import metricspec as spec
from tests.harness import CHAT, run_cli, serve_process, simulator
from tests.reliability.harness.proxy import ProxyProcess

CANARY = "sk-CANARY-7f3a91"  # a fake credential the capture files must not hold
PROMPT = "PROMPT-CANARY-what-is-the-capital"
FIELDS = (
    "api",
    "model",
    "outcome",
    "finish_reasons",
    "terminal_frame",
    "output_events",
    "output_tokens",
    "tool_calls",
    "error_frames",
    "ttfb_s",
    "ttft_s",
    "duration_s",
)


async def stream(
    proxy: ProxyProcess, request_id: str, scenario: str = "normal", **sim: str
) -> bytes:
    """One streamed chat request carrying canary credentials; returns the body the client got."""
    url = f"http://127.0.0.1:{proxy.port}{CHAT}?key={CANARY}"
    headers = {
        "authorization": f"Bearer {CANARY}",
        "x-api-key": CANARY,
        "cookie": f"session={CANARY}",
        "x-request-id": request_id,
        "x-sim-scenario": scenario,
        **{f"x-sim-{name.replace('_', '-')}": value for name, value in sim.items()},
    }
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream_options": {"include_usage": True},
    }
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", url, json=body, headers=headers) as response,
    ):
        return b"".join([chunk async for chunk in response.aiter_raw()])


async def stream_line(proxy: ProxyProcess, request_id: str) -> dict[str, Any]:
    """The stream's own log line (``stream.<outcome>``)."""
    line = await asyncio.to_thread(
        proxy.wait_log,
        lambda e: e.get("request_id") == request_id and str(e["event"]).startswith("stream."),
    )
    assert line is not None, f"no stream line for {request_id}"
    return line


async def capture_line(proxy: ProxyProcess, request_id: str, event: str) -> dict[str, Any]:
    line = await asyncio.to_thread(
        proxy.wait_log, lambda e: e.get("event") == event and e.get("request") == request_id
    )
    assert line is not None, f"no {event} line for {request_id}:\n" + "".join(proxy.lines[-20:])
    return line


def analyze(path: Path) -> dict[str, Any]:
    """``python -m streamwatch analyze --json`` on a capture: its one stream's document."""
    done = subprocess.run(
        [sys.executable, "-m", "streamwatch", "analyze", "--json", str(path)],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    [doc] = json.loads(done.stdout)["streams"]
    return dict(doc)


def entries(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir()]


def captures(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith("capture-"))


def captured(proxy: ProxyProcess, result: str) -> float:
    return proxy.total(spec.CAPTURES.name, result=result)


class TestCaptureAndAnalyze:
    """A failed stream is captured, and ``analyze`` on the file gives the live log line's verdict."""

    async def test_truncated_stream(self, tmp_path: Path) -> None:
        directory = tmp_path / "captures"
        request_id = "ticket/../../etc/passwd 42"  # client-supplied: never a path as given
        async with (
            simulator() as upstream,
            serve_process("--upstream", upstream, "--capture-dir", str(directory)) as proxy,
        ):
            received = await stream(proxy, request_id, "truncate", gap_ms="15", ttft_ms="40")
            live = await stream_line(proxy, request_id)
            saved = await capture_line(proxy, request_id, "capture.saved")
            assert captured(proxy, spec.CAPTURE_SAVED) == 1
        [path] = captures(directory)
        assert path.name == saved["file"]
        assert re.fullmatch(
            r"capture-\d{8}T\d{6}\.\d{6}Z-truncated-\d+-\d+-ticket_etc_passwd_42\.jsonl", path.name
        )
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        doc = analyze(path)
        assert doc["source"] == {"kind": "capture", "path": CHAT, "timing": "reads"}
        assert live["outcome"] == "truncated"
        for field in FIELDS:
            assert doc["verdict"][field] == live[field], field
        assert doc["gaps"] is not None
        raw = path.read_bytes()
        assert CANARY.encode() not in raw
        assert PROMPT.encode() not in raw
        # every byte the client received is in the capture, in order
        reads = [json.loads(line) for line in raw.splitlines()[1:] if b'"t_ns"' in line]
        assert b"".join(base64.b64decode(r["b64"]) for r in reads) == received


class TestWhichStreams:
    """By default only problem streams are kept; ``--capture-keep all`` keeps completed ones too."""

    async def test_completed_stream_is_not_kept_by_default(self, tmp_path: Path) -> None:
        async with (
            simulator() as upstream,
            serve_process("--upstream", upstream, "--capture-dir", str(tmp_path)) as proxy,
        ):
            await stream(proxy, "ok-1")
            assert (await stream_line(proxy, "ok-1"))["outcome"] == "completed"
            await asyncio.to_thread(
                proxy.wait_log, lambda _: captured(proxy, spec.CAPTURE_SKIPPED) == 1
            )
            assert captured(proxy, spec.CAPTURE_SKIPPED) == 1
            assert captured(proxy, spec.CAPTURE_SAVED) == 0
        assert entries(tmp_path) == []  # no capture, no partial file left

    async def test_keep_all(self, tmp_path: Path) -> None:
        async with (
            simulator() as upstream,
            serve_process(
                "--upstream", upstream, "--capture-dir", str(tmp_path), "--capture-keep", "all"
            ) as proxy,
        ):
            await stream(proxy, "ok-2")
            live = await stream_line(proxy, "ok-2")
            await capture_line(proxy, "ok-2", "capture.saved")
        [path] = captures(tmp_path)
        assert analyze(path)["verdict"]["outcome"] == live["outcome"] == "completed"

    async def test_off_by_default(self, tmp_path: Path) -> None:
        async with simulator() as upstream, serve_process("--upstream", upstream) as proxy:
            await stream(proxy, "err-0", "error")
            await stream_line(proxy, "err-0")
            assert spec.CAPTURES.name + "{" not in proxy.metrics_text()  # no series at all
            assert not proxy.events("capture.saved")


class TestCaps:
    """A stream past the per-stream cap is not captured; past the total cap the oldest go."""

    async def test_per_stream_cap(self, tmp_path: Path) -> None:
        args = ("--capture-dir", str(tmp_path), "--capture-max-stream-bytes", "600")
        async with simulator() as upstream, serve_process("--upstream", upstream, *args) as proxy:
            received = await stream(proxy, "big-1", "truncate", tokens="80")
            assert (await stream_line(proxy, "big-1"))["outcome"] == "truncated"
            line = await capture_line(proxy, "big-1", "capture.abandoned")
            assert line["reason"] == spec.CAPTURE_TOO_LARGE
            assert captured(proxy, spec.CAPTURE_TOO_LARGE) == 1
        assert received.count(b"data: ") > 40  # the stream itself was relayed whole
        assert entries(tmp_path) == []

    async def test_total_cap_deletes_the_oldest(self, tmp_path: Path) -> None:
        async with simulator() as upstream:
            args = ("--capture-dir", str(tmp_path), "--capture-keep", "all")
            async with serve_process("--upstream", upstream, *args) as proxy:
                await stream(proxy, "size-probe")
                await capture_line(proxy, "size-probe", "capture.saved")
            [first] = captures(tmp_path)
            size = first.stat().st_size
            budget = str(int(size * 2.5))  # room for two captures of this size
            args = (*args, "--capture-max-bytes", budget)
            async with serve_process("--upstream", upstream, *args) as proxy:
                for n in range(4):
                    await stream(proxy, f"rot-{n}")
                    await capture_line(proxy, f"rot-{n}", "capture.saved")
                rotated = [e["file"] for e in proxy.events("capture.rotated")]
        kept = captures(tmp_path)
        assert [p.name.rsplit("-", 1)[1] for p in kept] == ["2.jsonl", "3.jsonl"]
        assert sum(p.stat().st_size for p in kept) <= int(budget)
        assert (
            first.name in rotated
        )  # the capture already there at start-up counted, and went first


class TestDiskFailures:
    """A directory that cannot be written fails start-up naming the option; one that fails later
    ends only the capture."""

    async def test_bad_dir_at_start(self, tmp_path: Path) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        proc = await run_cli(
            "serve", "--upstream", "http://127.0.0.1:9", "--capture-dir", str(blocker / "sub")
        )
        _, err = await proc.communicate()
        assert proc.returncode == 2
        assert b"--capture-dir (STREAMWATCH_CAPTURE_DIR)" in err

    async def test_env_and_bad_keep(self, tmp_path: Path) -> None:
        proc = await run_cli(
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            env={"STREAMWATCH_CAPTURE_DIR": str(tmp_path), "STREAMWATCH_CAPTURE_KEEP": "some"},
        )
        _, err = await proc.communicate()
        assert proc.returncode == 2
        assert b"--capture-keep (STREAMWATCH_CAPTURE_KEEP)" in err

    async def test_directory_gone_while_serving(self, tmp_path: Path) -> None:
        directory = tmp_path / "captures"
        async with (
            simulator() as upstream,
            serve_process("--upstream", upstream, "--capture-dir", str(directory)) as proxy,
        ):
            shutil.rmtree(directory)  # an unmounted volume; works as root too, unlike chmod
            received = await stream(proxy, "gone-1", "truncate")
            assert (await stream_line(proxy, "gone-1"))["outcome"] == "truncated"
            line = await capture_line(proxy, "gone-1", "capture.failed")
            assert line["error"] == "No such file or directory"
            assert captured(proxy, spec.CAPTURE_FAILED) == 1
            again = await stream(proxy, "gone-2")  # the process and the next stream carry on
            assert (await stream_line(proxy, "gone-2"))["outcome"] == "completed"
            assert proxy.leaks() == []
        assert received.startswith(b"data: ")
        assert again.rstrip().endswith(b"data: [DONE]")
