"""H1 over TLS: a TLS terminator in front of the plain scripted upstream, on blocking ``ssl`` sockets.

A failed handshake here sends its TLS alert, as nginx, Envoy or ``openssl s_server`` do: OpenSSL
writes the alert to the socket itself. asyncio's server-side TLS (``start_server(ssl=...)``) drops
it -- ``SSLProtocol`` closes on a handshake error without flushing the alert its ``SSLObject``
produced -- so behind it a TLS 1.3 server rejecting the client certificate (which the client learns
only after its own handshake completed) would look like a plain close, not a TLS failure.

Each accepted connection gets one thread: the handshake, then the bytes both ways (one thread, so
an ``SSLSocket`` is never used from two threads at once); either side closing closes both.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Iterator


class TlsFront:
    """``https://127.0.0.1:port`` in front of ``http://127.0.0.1:target_port``."""

    def __init__(self, context: ssl.SSLContext, target_port: int) -> None:
        self.context = context
        self.target_port = target_port
        self.handshake_errors: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._serve, args=(self._track(raw),), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.handshake_errors.append(str(exc))  # the alert went out with the failure
            raw.close()
            return
        plain = self._track(socket.create_connection(("127.0.0.1", self.target_port)))
        self._track(tls)
        with contextlib.suppress(OSError, ValueError), tls, plain:
            while True:
                ready = [tls] if tls.pending() else select.select([tls, plain], [], [])[0]
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (plain if source is tls else tls).sendall(data)

    def start(self) -> TlsFront:
        threading.Thread(target=self._accept, daemon=True, name="tls-front").start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def tls_front(context: ssl.SSLContext, target_port: int) -> Iterator[TlsFront]:
    front = TlsFront(context, target_port).start()
    try:
        yield front
    finally:
        front.stop()
