"""Benchmark upstream: the streamwatch simulator, plus what the benchmark needs to check it.

* Every response to a request carrying ``x-bench-id`` is hashed as it is written (sha256 of the
  body bytes exactly as sent), so the client can prove the stream it received through a proxy is
  byte-identical. ``GET /bench/digests`` returns ``{id: hex}`` and forgets them.
* ``POST /bulk/chat/completions`` streams ``x-bulk-bytes`` bytes of large OpenAI chat chunks
  (16 KiB deltas, 64 KiB writes) for the slow-reader memory test: the simulator's word-sized deltas
  cannot produce a gigabyte in reasonable time.

Run: ``python benchmarks/upstream.py --port 0`` (prints ``port N``), uvloop when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
from typing import Any

import orjson
from aiohttp import web

from streamwatch.simulator.profile import Profile
from streamwatch.simulator.server import make_app

_DIGESTS = web.AppKey("digests", dict)
_DELTA = orjson.dumps(
    {
        "id": "chatcmpl-bulk",
        "object": "chat.completion.chunk",
        "model": "sim-model",
        "choices": [{"index": 0, "delta": {"content": "x" * 16384}, "finish_reason": None}],
    }
)
_EVENT = b"data: " + _DELTA + b"\n\n"
_WRITE = _EVENT * 4
_END = (
    b'data: {"id":"chatcmpl-bulk","object":"chat.completion.chunk","model":"sim-model",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


async def _record(request: web.Request, response: web.StreamResponse) -> None:
    """Wrap this response's ``write`` so every body byte sent is hashed under the bench id."""
    bench_id = request.headers.get("x-bench-id")
    if bench_id is None:
        return
    digest = request.app[_DIGESTS][bench_id] = hashlib.sha256()
    write = response.write

    async def hashed_write(data: Any) -> None:
        digest.update(data)
        await write(data)

    response.write = hashed_write  # type: ignore[method-assign]


async def _digests(request: web.Request) -> web.Response:
    digests = request.app[_DIGESTS]
    body = orjson.dumps({k: v.hexdigest() for k, v in digests.items()})
    digests.clear()
    return web.Response(body=body, content_type="application/json")


async def _bulk(request: web.Request) -> web.StreamResponse:
    await request.read()
    remaining = int(request.headers.get("x-bulk-bytes", "1048576"))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    while remaining > 0:
        await response.write(_WRITE)
        remaining -= len(_WRITE)
    await response.write(_END)
    await response.write_eof()
    return response


async def _serve(port: int) -> None:
    app = make_app(Profile(seed=7))
    app[_DIGESTS] = {}
    app.on_response_prepare.append(_record)
    app.router.add_get("/bench/digests", _digests)
    app.router.add_post("/bulk/chat/completions", _bulk)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    print(f"port {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args.port))
    else:
        uvloop.run(_serve(args.port))


if __name__ == "__main__":
    main()
