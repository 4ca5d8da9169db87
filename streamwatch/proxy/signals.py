"""What each signal means to ``streamwatch serve`` (one process or the ``--workers`` parent).

nginx's meanings are the reference. TERM, INT and QUIT (nginx: graceful shutdown) drain. HUP
(nginx: reload) and USR1 (nginx: reopen logs) have nothing to act on here -- configuration is read
once (restart to change it) and logs go to stderr -- so they are logged and ignored rather than left
at their default action, which kills the process and drops every open stream without a word.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

log = structlog.get_logger("streamwatch")

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
IGNORED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1)


def handle_signals(stopping: asyncio.Event) -> None:
    """Route the drain signals to ``stopping`` and log the ignored ones, each by name."""
    loop = asyncio.get_running_loop()

    def drain(sig: signal.Signals) -> None:
        log.info("signal.received", signal=sig.name, action="drain")
        stopping.set()

    def ignore(sig: signal.Signals) -> None:
        log.warning("signal.ignored", signal=sig.name, reason="no reload or log reopen: restart")

    for sig in DRAIN_SIGNALS:
        loop.add_signal_handler(sig, drain, sig)
    for sig in IGNORED_SIGNALS:
        loop.add_signal_handler(sig, ignore, sig)
