"""The connection's state timer on a real event loop: the current deadline alone fires, once,
whether a re-arm moved it earlier or later than the wake-up already pending."""

from __future__ import annotations

import asyncio

import pytest

from streamwatch.proxy.timers import StateTimer

GENEROUS = 10.0  # seconds: a bound on waits that end at once when the code is right
SLACK = 0.01  # seconds: the loop may run a timer this much before its time (clock resolution)


class Fired:
    """The loop times at which the timer's callback ran, and an event set at the first."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.at: list[float] = []
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.at.append(self.loop.time())
        self.event.set()

    async def first(self) -> float:
        await asyncio.wait_for(self.event.wait(), GENEROUS)
        return self.at[0]


class TestStateTimer:
    """Only the last armed deadline fires, once; disarm and cancel leave nothing to fire."""

    async def test_later_deadline(self) -> None:
        """Re-armed for later while a wake-up is pending: fires at the later deadline only."""
        loop = asyncio.get_running_loop()
        fired = Fired(loop)
        timer = StateTimer(loop, fired)
        start = loop.time()
        timer.arm(0.05)
        timer.arm(0.3)
        assert await fired.first() >= start + 0.3 - SLACK
        await asyncio.sleep(0.1)  # a stray second call would come right after the first
        assert len(fired.at) == 1

    async def test_earlier_deadline(self) -> None:
        """Re-armed for sooner than the pending wake-up: fires at the earlier deadline."""
        loop = asyncio.get_running_loop()
        fired = Fired(loop)
        timer = StateTimer(loop, fired)
        start = loop.time()
        timer.arm(GENEROUS * 10)
        timer.arm(0.05)
        assert start + 0.05 - SLACK <= await fired.first() < start + GENEROUS * 10
        timer.cancel()

    @pytest.mark.parametrize("clear", ["disarm", "cancel"])
    async def test_cleared_then_armed_later(self, clear: str) -> None:
        """Disarmed (the wake-up stays pending) or cancelled (it goes), then armed for later than
        that wake-up: only the new deadline fires, the old one never does."""
        loop = asyncio.get_running_loop()
        fired = Fired(loop)
        timer = StateTimer(loop, fired)
        timer.arm(0.05)
        getattr(timer, clear)()
        rearmed = loop.time()
        timer.arm(0.3)
        assert await fired.first() >= rearmed + 0.3 - SLACK
        assert len(fired.at) == 1
