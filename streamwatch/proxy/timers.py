"""The one timer a connection owns, re-armed by its state machine at each state change.

A client connection is always in exactly one state and each state has at most one deadline:
waiting for a header block (``request_header_timeout``), reading a body (``request_body_timeout``
of silence, within ``request_body_deadline`` in total), idle between requests
(``client_idle_timeout``). The response phase has none here: upstream silence and a client that
stopped reading are the watchdog's (see :mod:`streamwatch.proxy.state`). Because arming replaces
the previous deadline, no timer can outlive the state it belongs to -- the bug where body bytes
re-armed the header timer and cut long streams cannot be written with it.

The body's idle deadline is checked lazily: it fires at the earliest possible expiry and, if bytes
arrived meanwhile, re-arms for the remainder, so a body costs one timer per idle period rather than
one per read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class StateTimer:
    """At most one deadline; ``arm`` replaces it, ``disarm`` and ``cancel`` clear it.

    Lazily, as the body's idle deadline: the event loop timer is replaced only when a deadline
    comes earlier than the wake-up already pending; a later one is reached by re-arming from that
    wake-up. A keep-alive request moves through four states (three deadlines) and so costs one
    loop timer instead of three, each cancelled and created anew (about 9k instructions a time).
    """

    __slots__ = ("_callback", "_deadline", "_due", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._deadline: float | None = None  # the state's deadline (loop time)
        self._due = 0.0  # when the pending wake-up fires (loop time)
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, seconds: float) -> None:
        """Fire ``callback`` after ``seconds`` unless re-armed, disarmed or cancelled first."""
        deadline = self._deadline = self._loop.time() + seconds
        if self._handle is None or self._due > deadline:
            if self._handle is not None:
                self._handle.cancel()
            self._due = deadline
            self._handle = self._loop.call_at(deadline, self._fire)

    def disarm(self) -> None:
        """No deadline (a state without one); a pending wake-up stays for the next ``arm``."""
        self._deadline = None

    def cancel(self) -> None:
        """No deadline and no pending wake-up: the connection is going away."""
        self._deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        deadline = self._deadline
        if deadline is None:
            return
        if deadline > self._due:  # re-armed for later since this wake-up was set
            self._due = deadline
            self._handle = self._loop.call_at(deadline, self._fire)
            return
        self._deadline = None
        self._callback()
