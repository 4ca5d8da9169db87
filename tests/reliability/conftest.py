"""Fixtures of the reliability suite: one H1 upstream per session, one default proxy per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.harness.proxy import ProxyProcess, proxy_args
from tests.reliability.harness.upstream import FakeUpstream

# Short timeouts so fault paths finish in seconds; each test states the one it depends on.
DEFAULT_OPTIONS = {
    "upstream_idle_timeout": 5,
    "connect_timeout": 2,
    "drain_timeout": 3,
}


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    """The scripted upstream (H1), shared: each test registers its own scenarios."""
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(upstream: FakeUpstream) -> Iterator[ProxyProcess]:
    """streamwatch in front of H1 with the suite's short timeouts."""
    with ProxyProcess(upstream.url, *proxy_args(**DEFAULT_OPTIONS)) as process:
        yield process
        assert not process.leaks(), process.leaks()
