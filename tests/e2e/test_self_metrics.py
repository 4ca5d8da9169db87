"""streamwatch's own health on /metrics: event-loop lag, client connections, routes, process."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamwatch import metricspec as spec
from tests.harness import LOOPBACK, scrape, simulator, streamwatch, until

pytestmark = pytest.mark.e2e

LAG = spec.EVENT_LOOP_LAG


class TestSelfMetrics:
    """The watchdog measures the loop's lag; connections, routes and the process are exported."""

    async def test_a_blocked_loop_shows_as_lag(self) -> None:
        """Blocking the loop for 0.3 s makes one watchdog tick at least 0.2 s late."""
        async with simulator() as upstream, streamwatch(upstream, watchdog_interval=0.1) as sw:

            async def ticks() -> float:
                return (await scrape(sw.admin_port)).value(LAG.series("_count"))

            await until(ticks, 5, what="a watchdog tick")
            before = await scrape(sw.admin_port)
            late_before = before.value(LAG.series("_count")) - before.value(
                LAG.series("_bucket"), le="0.1"
            )
            time.sleep(0.3)  # noqa: ASYNC251 (the point: a handler that blocks the event loop)

            async def late() -> bool:
                now = await scrape(sw.admin_port)
                over = now.value(LAG.series("_count")) - now.value(LAG.series("_bucket"), le="0.1")
                return over > late_before

            await until(late, 5, what="a tick later than 0.1 s")

    async def test_connections_routes_and_process(self) -> None:
        """An open client connection is counted, the route and its upstream are described, and
        the process collector reports memory."""
        async with simulator() as upstream, streamwatch(upstream) as sw:
            _, writer = await asyncio.open_connection(LOOPBACK, sw.proxy_port)
            try:

                async def counted() -> bool:
                    return (await scrape(sw.admin_port)).value(spec.CLIENT_CONNECTIONS.name) >= 1

                await until(counted, 5, what="the open connection counted")
            finally:
                writer.close()
                await writer.wait_closed()

            async def released() -> bool:
                return (await scrape(sw.admin_port)).value(spec.CLIENT_CONNECTIONS.name) == 0

            await until(released, 5, what="the connection released")
            scraped = await scrape(sw.admin_port)
            assert scraped.value(spec.ROUTE_INFO.name, route="default", upstream=upstream) == 1
            assert scraped.value("process_resident_memory_bytes") > 0
