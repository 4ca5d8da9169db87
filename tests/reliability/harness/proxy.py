"""H4 + H5: ``streamwatch serve`` as a real subprocess, with its metrics, logs, RSS and file descriptors.

The one wrapper of a served streamwatch for every test package. Ports are ephemeral: both listeners
bind port 0 and are read back from the JSON ``streamwatch.started`` log line on stderr; ``/readyz``
is polled before the proxy is handed out. stderr is drained by a thread (JSON lines) so the pipe
never blocks the proxy. Sync tests use it as a context manager; async tests (whose upstream runs in
their own event loop) use ``tests.harness.serve_process``, which starts and stops it in a thread.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

# Log lines that mean a resource was leaked or an error was swallowed (L5).
LEAK_MARKERS = ("Unclosed", "never retrieved", "ResourceWarning", "Traceback", "was never awaited")


class ProxyProcess:
    """``python -m streamwatch serve`` against ``upstream``; use as a context manager."""

    def __init__(
        self,
        upstream: str | None,
        *args: str,
        env: Mapping[str, str] | None = None,
        log_level: str = "debug",
        ephemeral: bool = True,
        prefix: Sequence[str] = (),
    ) -> None:
        """``upstream`` None: routes come from ``args`` (``--config``, ``--route``); ``ephemeral``
        False: the listen addresses too. The environment has no ``STREAMWATCH_*`` but ``env``'s.
        ``prefix`` wraps the command (e.g. ``unshare -m ...``); it must exec, keeping the pid."""
        self.argv = [*prefix, sys.executable, "-m", "streamwatch", "serve"]
        if upstream is not None:
            self.argv += ["--upstream", upstream]
        if ephemeral:
            self.argv += ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
        self.argv += ["--log-format", "json", "--log-level", log_level, *args]
        base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMWATCH_")}
        self.env = {**base, "PYTHONWARNINGS": "always::ResourceWarning", **(env or {})}
        self.lines: list[str] = []
        self.port = 0
        self.admin_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._reading = threading.Event()  # cleared: stderr is left unread, its pipe fills up
        self._reading.set()

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        """Spawn, then wait for the start-up line and ``/readyz`` (with ``--workers``, the parent's
        line, the one that lists the workers)."""
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        self._reader = threading.Thread(target=self._drain, daemon=True, name="proxy-stderr")
        self._reader.start()
        parent = "--workers" in self.argv and self.argv[self.argv.index("--workers") + 1] != "1"
        started = self.wait_log(
            lambda e: e.get("event") == "streamwatch.started" and ("workers" in e or not parent),
            timeout,
        )
        if started is None:
            self.stop()
            raise RuntimeError("streamwatch did not start:\n" + "".join(self.lines[-40:]))
        self.port = int(started["listen"].rpartition(":")[2])
        self.admin_port = int(started["admin"].rpartition(":")[2])
        deadline = time.monotonic() + timeout
        while self.admin_get("/readyz")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("streamwatch never became ready")
            time.sleep(0.02)
        return self

    def _drain(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.decode("utf-8", "replace"))
            self._reading.wait()

    def pause_reading(self) -> None:
        """Stop reading stderr after the next line, as a stuck log shipper does: once the pipe
        (64 KiB) and the reader's buffer are full, the proxy's log writes wait."""
        self._reading.clear()

    def resume_reading(self) -> None:
        """Read stderr again (:meth:`stop` does, after its signal)."""
        self._reading.set()

    @property
    def proxy_port(self) -> int:
        return self.port

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def wait(self, timeout: float = 15.0) -> int:
        """The exit status, once the process has exited and its stderr is drained."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return code

    async def terminate(self) -> int | None:
        """:meth:`stop` from async code (in a thread, so the caller's event loop keeps serving)."""
        return await asyncio.to_thread(self.stop)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal the proxy and wait for it; returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            self.resume_reading()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.resume_reading()
        if self._reader is not None:
            self._reader.join(5)
        if proc.stderr is not None:
            proc.stderr.close()
        return proc.returncode

    # -- telemetry (H5) ---------------------------------------------------------------------------

    def admin_get(self, path: str, port: int | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.admin_port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def metrics_text(self) -> str:
        status, body = self.admin_get("/metrics")
        assert status == 200, status
        return body.decode()

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        """Every sample of ``/metrics`` as (name, labels, value)."""
        return [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(self.metrics_text())
            for s in family.samples
        ]

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            value
            for sample, found, value in self.samples()
            if sample == name and all(found.get(k) == v for k, v in labels.items())
        )

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines so far (those whose ``event`` is ``name``, if given)."""
        out = []
        for line in tuple(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                out.append(event)
        return out

    def wait_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any] | None:
        """The first JSON log line matching ``predicate``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                if predicate(event):
                    return event
            if time.monotonic() > deadline or (
                self.proc is not None and self.proc.poll() is not None
            ):
                return None
            time.sleep(0.02)

    def record(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The one end-of-request log line for ``request_id`` (fails if missing)."""
        found = self.wait_log(lambda e: e.get("request_id") == request_id, timeout)
        assert found is not None, f"no log line for {request_id}"
        return found

    def lines_for(self, request_id: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("request_id") == request_id]

    # -- resources (L5) ---------------------------------------------------------------------------

    @property
    def ps(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def fds(self) -> int:
        return int(self.ps.num_fds())

    def leaks(self) -> list[str]:
        """stderr lines that report a leak or an unhandled error (must be empty)."""
        return [line for line in self.lines if any(m in line for m in LEAK_MARKERS)]


def proxy_args(**options: object) -> Sequence[str]:
    """``--name value`` pairs from keyword options (underscores become dashes)."""
    out: list[str] = []
    for name, value in options.items():
        out += ["--" + name.replace("_", "-"), str(value)]
    return out
