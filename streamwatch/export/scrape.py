"""The ``/metrics`` endpoint: the exposition is rendered in a worker thread, never on the loop.

Rendering a saturated registry (thousands of series) takes tens to hundreds of milliseconds of
CPU. prometheus-client's aiohttp handler renders on the event loop, so every stream the loop relays
stalls for that long on every scrape. Here the render runs in the default executor; the loop keeps
relaying while it runs (the render still takes the GIL in turns, a few milliseconds at a time).
Label children are safe to read from another thread: prometheus-client guards each value with a
lock. The response is compressed by aiohttp, which also does that off the loop for large bodies.
"""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """An aiohttp handler serving ``registry`` in the format the scraper asks for (OpenMetrics with
    exemplars, or the text format), optionally restricted with ``?name[]=...``."""

    async def handle(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        names = request.query.getall("name[]", [])
        source: Collector = registry.restricted_registry(names) if names else registry
        body = await asyncio.to_thread(encoder, source)
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

    return handle
