"""``streamwatch top`` in a real terminal (tmux) against a running ``streamwatch serve``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from streamwatch.tools.top import SCHEMA_VERSION, View
from tests.conftest import missing
from tests.harness import simulator
from tests.reliability.harness.proxy import ProxyProcess

pytest.importorskip("textual", reason="streamwatch top needs the [top] extra (Textual)")

CHAT = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def _row(request_id: str, *, silence: float, stalled: bool, model: str = "m") -> dict[str, object]:
    return {
        "request_id": request_id,
        "route": "default",
        "api": "openai_chat",
        "model": model,
        "age_s": 1.0,
        "ttft_s": 0.1,
        "output_events": 3,
        "silence_s": silence,
        "stalled": stalled,
    }


def _metrics(**outcomes: int) -> str:
    lines = ["# TYPE streamwatch_streams_total counter"]
    lines += [
        f'streamwatch_streams_total{{route="default",api="openai_chat",model="m",outcome="{k}"}} {v}'
        for k, v in outcomes.items()
    ]
    return "\n".join(lines) + "\n"


class TestView:
    """The data behind the screen: sorting, filtering and the last minute's outcomes."""

    def test_sorted_by_silence_then_filtered(self) -> None:
        view = View()
        doc = {
            "version": SCHEMA_VERSION,
            "streams": [
                _row("a", silence=0.1, stalled=False, model="gpt"),
                _row("b", silence=9.0, stalled=True, model="claude"),
            ],
        }
        view.update(doc, None, 0.0)
        assert [r.request_id for r in view.visible()] == ["b", "a"]
        view.stalled_only = True
        assert [r.request_id for r in view.visible()] == ["b"]
        view.stalled_only, view.text_filter = False, "GPT"
        assert [r.request_id for r in view.visible()] == ["a"]

    def test_outcomes_over_the_last_minute(self) -> None:
        view = View()
        doc = {"version": SCHEMA_VERSION, "streams": []}
        view.update(doc, _metrics(completed=10), 0.0)
        view.update(doc, _metrics(completed=12, client_abort=1), 30.0)
        view.update(doc, _metrics(completed=15, client_abort=1), 61.0)
        assert view.last_minute() == {"client_abort": 1, "completed": 5}
        view.update(doc, _metrics(completed=20, client_abort=1), 95.0)
        assert view.last_minute() == {"completed": 8}  # the abort left the window

    def test_unknown_schema_is_an_error_not_a_guess(self) -> None:
        view = View()
        view.update({"version": 99, "streams": [_row("a", silence=1, stalled=False)]}, None, 0.0)
        assert view.rows == []
        assert view.error is not None
        assert "99" in view.error


def _tmux() -> list[str]:
    """tmux on a private server socket with no user config: nothing else can resize our window."""
    tmux = shutil.which("tmux")
    if tmux is None:
        missing("tmux not installed (apt package tmux)")
    assert tmux is not None
    return [tmux, "-L", f"streamwatch-top-{os.getpid()}", "-f", "/dev/null"]


async def _run(tmux: list[str], *args: str, check: bool = True) -> str:
    """One tmux command, off the event loop that serves the streams."""
    done = await asyncio.to_thread(subprocess.run, [*tmux, *args], capture_output=True, check=check)
    return done.stdout.decode("utf-8", "replace")


async def _screen(tmux: list[str], session: str) -> str:
    return await _run(tmux, "capture-pane", "-p", "-t", session)


async def _until_screen(
    tmux: list[str], session: str, predicate: object, within: float = 20.0
) -> str:
    deadline = time.monotonic() + within
    screen = ""
    while time.monotonic() < deadline:
        screen = await _screen(tmux, session)
        if predicate(screen):  # type: ignore[operator]
            return screen
        await asyncio.sleep(0.1)
    raise AssertionError(f"screen never matched within {within} s:\n{screen}")


@contextlib.asynccontextmanager
async def _stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> AsyncIterator[None]:
    async def read() -> None:
        async with client.stream("POST", url, json=CHAT, headers=headers) as response:
            async for _ in response.aiter_raw():
                pass

    task = asyncio.create_task(read(), name=f"stream-{headers['x-request-id']}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await task


class TestTopInTmux:
    """The screen lists a stalled and an active stream, stalled first, and its keys filter."""

    async def test_live_screen(self) -> None:
        tmux = _tmux()
        session = f"swtop-{id(self)}"
        async with simulator() as upstream:
            proxy = await asyncio.to_thread(
                ProxyProcess(upstream, "--stall-threshold", "0.5", "--log-level", "info").start
            )
            url = f"http://127.0.0.1:{proxy.port}/v1/chat/completions"
            stalled = {
                "x-request-id": "stalled-one",
                "x-sim-scenario": "stall",
                "x-sim-tokens": "6",
                "x-sim-stall-after": "1",
                "x-sim-stall-ms": "60000",
            }
            active = {"x-request-id": "active-one", "x-sim-tokens": "2000", "x-sim-gap-ms": "20"}
            command = (  # the terminal's size, not one inherited from the test run, sizes the UI
                f"env -u COLUMNS -u LINES {sys.executable} -m streamwatch top --interval 0.5 "
                f"--admin http://127.0.0.1:{proxy.admin_port}"
            )
            try:
                async with (
                    httpx.AsyncClient(timeout=httpx.Timeout(120)) as client,
                    _stream(client, url, stalled),
                    _stream(client, url, active),
                ):
                    await _run(
                        tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "30", command
                    )
                    screen = await _until_screen(
                        tmux,
                        session,
                        lambda s: "stalled-one" in s and "active-one" in s and "STALLED" in s,
                    )
                    lines = screen.splitlines()
                    first = next(i for i, line in enumerate(lines) if "stalled-one" in line)
                    second = next(i for i, line in enumerate(lines) if "active-one" in line)
                    assert first < second  # sorted by silence, worst first
                    assert "STALLED" in lines[first]
                    assert "STALLED" not in lines[second]
                    await _run(tmux, "send-keys", "-t", session, "t")
                    await _until_screen(
                        tmux, session, lambda s: "stalled only" in s and "active-one" not in s
                    )
                    await _run(tmux, "send-keys", "-t", session, "t")
                    await _until_screen(tmux, session, lambda s: "active-one" in s)
                    await _run(tmux, "send-keys", "-t", session, "/")
                    await _until_screen(tmux, session, lambda s: "Enter to apply" in s)
                    await _run(tmux, "send-keys", "-t", session, "nomatch", "Enter")
                    await _until_screen(
                        tmux,
                        session,
                        lambda s: "filter nomatch" in s and "stalled-one" not in s,
                    )
                    await _run(tmux, "send-keys", "-t", session, "q")
            finally:
                await _run(tmux, "kill-session", "-t", session, check=False)
                await asyncio.to_thread(proxy.stop)
