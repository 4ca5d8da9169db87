"""``streamwatch demo``: the simulated upstream, the proxy in front of it, and traffic through both.

Everything runs in one process on loopback so a newcomer sees every metric move with nothing else
installed: normal streams, tool calls, reasoning, ``max_tokens`` cuts, mid-stream error frames,
truncations, upstream resets, stalls and client aborts, in every format streamwatch reads (OpenAI
chat, Responses and completions, Anthropic, Gemini SSE and JSON array, Bedrock Converse and invoke,
Ollama chat and generate, Cohere v2).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from typing import TextIO

import aiohttp
import orjson
from yarl import URL

from streamwatch import metricspec as spec
from streamwatch.config import ConfigError, ListenError, Route, Settings, parse_listen
from streamwatch.export.logs import configure_logging
from streamwatch.serve import Running, start, stop
from streamwatch.simulator.profile import Profile
from streamwatch.simulator.server import start_simulator

_STORY = "Tell me a story."
_MESSAGES = [{"role": "user", "content": _STORY}]
_GEMINI = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
# (path, query, body): every format the simulator speaks, as its clients call it.
_REQUESTS: tuple[tuple[str, dict[str, str], dict[str, object]], ...] = (
    (
        "/v1/chat/completions",
        {},
        {
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": _MESSAGES,
            "stream_options": {"include_usage": True},
        },
    ),
    ("/v1/responses", {}, {"model": "gpt-4.1-nano", "stream": True, "input": _STORY}),
    (
        "/v1/messages",
        {},
        {"model": "claude-sonnet-4-5", "stream": True, "messages": _MESSAGES, "max_tokens": 512},
    ),
    (
        "/v1/completions",
        {},
        {"model": "gpt-3.5-turbo-instruct", "stream": True, "prompt": _STORY},
    ),
    (_GEMINI, {"alt": "sse"}, {"contents": [{"role": "user", "parts": [{"text": _STORY}]}]}),
    (_GEMINI, {}, {"contents": [{"role": "user", "parts": [{"text": _STORY}]}]}),
    (
        "/model/amazon.nova-micro-v1:0/converse-stream",
        {},
        {"messages": [{"role": "user", "content": [{"text": _STORY}]}]},
    ),
    (
        "/model/anthropic.claude-3-5-haiku-20241022-v1:0/invoke-with-response-stream",
        {},
        {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 512, "messages": _MESSAGES},
    ),
    ("/api/chat", {}, {"model": "llama3.2", "messages": _MESSAGES}),
    ("/api/generate", {}, {"model": "gemma3:1b", "prompt": _STORY}),
    ("/v2/chat", {}, {"model": "command-a-03-2025", "stream": True, "messages": _MESSAGES}),
)
CLIENT_ABORT_SHARE = 0.03  # a few clients hang up mid-stream, as real users do
FINISH_S = 5.0  # beyond the longest stall: how long the end waits for streams in flight


async def _finish(
    clients: list[asyncio.Task[None]],
    stopping: asyncio.Event,
    within: float,
    say: Callable[[str], None],
) -> None:
    """Let every client finish its stream in flight (up to ``within`` s, or a second Ctrl-C), so
    the summary counts the demo's traffic, not its own shutdown as client aborts."""
    if all(task.done() for task in clients):
        return
    say(f"finishing the streams in flight (up to {within:.0f}s; Ctrl-C again to cut them)")
    stopping.clear()
    done: asyncio.Future[object] = asyncio.ensure_future(
        asyncio.gather(*clients, return_exceptions=True)
    )
    again: asyncio.Future[object] = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({done, again}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    again.cancel()
    for task in clients:
        task.cancel()  # only streams past the bound, or cut by a second Ctrl-C
    await done


async def _client(
    session: aiohttp.ClientSession,
    base: URL,
    rng: random.Random,
    stop_at: float,
    *,
    ending: asyncio.Event,
    hung_up: Counter[str],
) -> None:
    """Stream requests until the demo's time is up; the stream in flight is always finished, so the
    demo's own end is never counted as a client abort (only the planned hang-ups are)."""
    while time.monotonic() < stop_at and not ending.is_set():
        path, query, body = rng.choice(_REQUESTS)
        abort_after = rng.randint(2, 10) if rng.random() < CLIENT_ABORT_SHARE else None
        try:
            async with session.post(
                base.with_path(path).with_query(query),
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json", "Authorization": "Bearer sk-demo"},
            ) as resp:
                reads = 0
                async for _ in resp.content.iter_any():
                    reads += 1
                    if abort_after is not None and reads >= abort_after:
                        resp.close()  # hang up mid-stream
                        hung_up["planned"] += 1
                        break
        except (aiohttp.ClientError, TimeoutError):
            pass  # resets and truncations are part of the mix
        await asyncio.sleep(rng.uniform(0.05, 0.3))


def _summary(running: Running) -> tuple[Counter[str], dict[str, float]]:
    outcomes: Counter[str] = Counter()
    gauges = {"active": 0.0, "stalled": 0.0, "stalls": 0.0, "ttft_sum": 0.0, "ttft_count": 0.0}
    for family in running.registry.collect():
        for sample in family.samples:
            if sample.name == spec.STREAMS.name:
                outcomes[sample.labels["outcome"]] += int(sample.value)
            elif sample.name == spec.STREAMS_ACTIVE.name:
                gauges["active"] += sample.value
            elif sample.name == spec.STREAMS_STALLED.name:
                gauges["stalled"] += sample.value
            elif sample.name == spec.STALLS.name:
                gauges["stalls"] += sample.value
            elif sample.name == spec.TTFT.series("_sum"):
                gauges["ttft_sum"] += sample.value
            elif sample.name == spec.TTFT.series("_count"):
                gauges["ttft_count"] += sample.value
    return outcomes, gauges


def _line(running: Running, elapsed: float) -> str:
    outcomes, g = _summary(running)
    mean_ttft = g["ttft_sum"] / g["ttft_count"] if g["ttft_count"] else 0.0
    mix = " ".join(f"{k}={v}" for k, v in sorted(outcomes.items()) if v)
    return (
        f"[{elapsed:5.0f}s] streams: {sum(outcomes.values())} ({mix or 'none yet'}) | "
        f"open {g['active']:.0f} stalled {g['stalled']:.0f} | stalls {g['stalls']:.0f} | "
        f"mean TTFT {mean_ttft * 1000:.0f} ms"
    )


async def _run(args: argparse.Namespace, out: TextIO) -> int:
    listen = parse_listen("listen", args.listen)
    admin = parse_listen("admin_listen", args.admin_listen)
    profile = Profile(seed=args.seed)
    sim_runner, sim_port = await start_simulator("127.0.0.1", 0, profile)
    settings = Settings(
        routes=(Route("default", URL(f"http://127.0.0.1:{sim_port}")),),
        listen=listen,
        admin_listen=admin,
        drain_timeout=2.0,
    )
    try:
        running = await start(settings)
    except BaseException:
        await sim_runner.cleanup()
        raise
    proxy = URL(f"http://{listen[0]}:{running.proxy_port}")
    metrics = f"http://{admin[0]}:{running.admin_port}/metrics"
    stopping = asyncio.Event()
    reader_gone = False

    def say(text: str) -> None:
        """Print a line; a reader that went away (``demo | head``) stops the demo quietly."""
        nonlocal reader_gone
        if reader_gone:
            return
        try:
            print(text, file=out, flush=True)
        except BrokenPipeError:
            # Point stdout at /dev/null so the interpreter's own final flush cannot fail too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            os.close(devnull)
            reader_gone = True
            stopping.set()

    say(
        f"simulated upstream: http://127.0.0.1:{sim_port}\n"
        f"streamwatch proxy:  {proxy}   (point an SDK's base URL here)\n"
        f"metrics:            {metrics}\n"
        f"open streams:       http://{admin[0]}:{running.admin_port}/debug/streams\n"
        f"driving {args.concurrency} concurrent clients for {args.duration:.0f}s (Ctrl-C stops)"
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    rng = random.Random(args.seed)  # noqa: S311 (traffic mix, not crypto)
    started = time.monotonic()
    stop_at = started + args.duration
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    hung_up: Counter[str] = Counter()
    ending = asyncio.Event()  # clients start no new stream once it is set
    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [
            loop.create_task(
                _client(
                    session,
                    proxy,
                    random.Random(rng.random()),  # noqa: S311
                    stop_at,
                    ending=ending,
                    hung_up=hung_up,
                ),
                name=f"demo-client-{i}",
            )
            for i in range(args.concurrency)
        ]
        while not stopping.is_set() and time.monotonic() < stop_at:
            with suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1.0)
            say(_line(running, time.monotonic() - started))
        ending.set()
        await _finish(clients, stopping, FINISH_S + profile.stall_s, say)
    say(
        "final: "
        + _line(running, time.monotonic() - started)
        + f" | hung up on purpose {hung_up['planned']}"
    )
    await stop(running, settings.drain_timeout)
    await sim_runner.cleanup()
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Entry point of ``streamwatch demo``; per-stream log lines only with ``--log``."""
    configure_logging("auto", "info" if args.log else "warning")
    try:
        return asyncio.run(_run(args, sys.stdout))
    except ConfigError as exc:  # the demo takes flags only: name the flag, not STREAMWATCH_*
        flag = "--" + exc.option.replace("_", "-")
        print(f"streamwatch demo: {flag}: {exc.problem}", file=sys.stderr)
        return 1 if isinstance(exc, ListenError) else 2
