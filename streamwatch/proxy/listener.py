"""The proxy port's accept loop, owned here rather than by ``loop.create_server``.

The reason is what happens when ``accept()`` fails for lack of file descriptors (EMFILE, ENFILE):
under uvloop, libuv accepts and closes the waiting connections (a silent reset for each client)
and uvloop then closes the listening socket for good; asyncio's own loop logs a generic error.
Here a failed accept is one ``accept.failed`` log line per episode and a count per attempt
(``streamwatch_connections_refused_total{reason="out_of_file_descriptors"}``); accepting pauses
for :data:`BACKOFF_S` while the clients wait in the kernel's backlog, and resumes by itself.
Accepted sockets are handed to the loop (``connect_accepted_socket``) with ``TCP_NODELAY`` on.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable

import structlog

from streamwatch.metricspec import REFUSED_NO_DESCRIPTORS
from streamwatch.sinks import Sinks

log = structlog.get_logger("streamwatch.proxy")

BACKOFF_S = 0.1
BACKLOG = 1024
_BATCH = 64  # accepts per readiness event, so a connection burst cannot starve open streams
_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_TRANSIENT = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR})


def bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """The listening socket (``SO_REUSEPORT`` for ``--workers``); raises ``OSError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG, reuse_port=reuse_port)
    sock.setblocking(False)
    return sock


class Listener:
    """Accepts client connections on ``sock`` and gives each one a protocol from ``factory``."""

    def __init__(
        self, sock: socket.socket, factory: Callable[[], asyncio.Protocol], sinks: Sinks
    ) -> None:
        self.sock = sock
        self._factory = factory
        self._sinks = sinks
        self._loop = asyncio.get_running_loop()
        self._starved = False  # inside an out-of-descriptors episode (logged once)
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        self._loop.add_reader(self.sock.fileno(), self._ready)

    def close(self) -> None:
        """Stop accepting: new connections are refused by the kernel."""
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def _ready(self) -> None:
        for _ in range(_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _TRANSIENT:
                    continue
                self._refused(exc)
                return
            if self._starved:
                self._starved = False
                log.info("accept.resumed")
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._hand_over(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _hand_over(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()  # the client left before its transport was ready

    def _refused(self, exc: OSError) -> None:
        """``accept()`` failed: count it, log the episode once, back off while clients wait."""
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        if exc.errno in _OUT_OF_FILES:
            self._sinks.connection_refused(REFUSED_NO_DESCRIPTORS)
        if not self._starved:
            self._starved = True
            log.error("accept.failed", error=name, reason=exc.strerror or name,
                      retry_in_s=BACKOFF_S)  # fmt: skip
        self._loop.remove_reader(self.sock.fileno())
        self._loop.call_later(BACKOFF_S, self._resume)

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self.sock.fileno(), self._ready)
