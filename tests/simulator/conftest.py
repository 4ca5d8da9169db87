"""A simulator on an ephemeral 127.0.0.1 port, fast and healthy unless a test's headers say otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streamwatch.simulator.profile import Profile
from streamwatch.simulator.server import start_simulator

FAST = Profile(
    weights={"normal": 1.0}, seed=7, output_tokens=12, ttft_s=0.0, gap_mean_s=0.0, gap_jitter_s=0.0
)


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    runner, port = await start_simulator("127.0.0.1", 0, FAST)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
