"""The ``/metrics`` endpoint: rendered so that a scrape never stalls a stream the loop relays.

prometheus-client's aiohttp handler renders on the event loop, so at saturation every stream stalls
for the whole render (90-190 ms) on every scrape; in a worker thread the render's CPU still holds
the GIL and stalls the loop in 5 ms turns. Here our own families are rendered by
:mod:`streamwatch.export.exposition` (cached label strings, a few milliseconds at a time on the
loop); other collectors, the ``?name[]=`` filter and rare formats go to prometheus-client's
encoder in a worker thread. The response is compressed by aiohttp, off the loop for large bodies.
"""

from __future__ import annotations

import asyncio

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from streamwatch.export.exposition import Exposition, render


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """An aiohttp handler serving ``registry`` in the format the scraper asks for (OpenMetrics with
    exemplars, or the text format), optionally restricted with ``?name[]=...``."""
    exposition = Exposition(registry)

    async def handle(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(",".join(request.headers.getall(hdrs.ACCEPT, [])))
        names = request.query.getall("name[]", [])
        if names:
            body = await asyncio.to_thread(encoder, registry.restricted_registry(names))
        elif Exposition.fast(content_type):
            body = await render(exposition, content_type)
        else:
            body = await asyncio.to_thread(encoder, registry)
        response = web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})
        response.enable_compression()
        return response

    return handle
