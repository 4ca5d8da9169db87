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
    """At most one pending deadline; ``arm`` replaces it, ``cancel`` clears it."""

    __slots__ = ("_callback", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, seconds: float) -> None:
        """Fire ``callback`` after ``seconds`` unless re-armed or cancelled first."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_later(seconds, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._callback()
