"""``serve --workers N``: N proxy processes on one port (SO_REUSEPORT), one admin listener.

The parent binds the proxy port first (SO_REUSEPORT, never listening, so it receives no
connections) to resolve port 0 and reserve the port, then starts N copies of the same command as
workers. Each worker runs the normal proxy with ``reuse_port`` and reports readiness by writing a
file that holds its private admin port. The parent serves the admin port alone: ``/metrics`` (below),
``/readyz`` (every worker ready), and ``/debug/streams`` gathered from each worker's own admin
listener on loopback, each row tagged with the worker's pid.

Metrics use prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): each worker's
counters, histograms and gauges live in memory-mapped files and the parent's ``/metrics`` sums them
with ``MultiProcessCollector``. Chosen over scraping and merging the workers' expositions because
the library already defines the merge for every metric type (gauges by ``multiprocess_mode``) and
it keeps working while a worker is busy; the cost is no exemplars with several workers. The
process collector has no multiprocess mode, so :class:`ProcessTree` reads every worker's
``/proc`` entry from the parent and sums them with the parent's own.

The metric files live in a directory created under ``--metrics-dir`` (default: the system temporary
directory); under a read-only root filesystem that must be a writable mount (tmpfs, emptyDir), and
an unusable one stops start-up naming the option.

A worker that dies takes the whole process down (exit 1): a supervisor restarts it cleanly rather
than leaving a port that silently serves with fewer workers. SIGTERM, SIGINT and SIGQUIT first
flip the parent's ``/readyz`` to 503 for ``--shutdown-delay`` (the workers keep serving), then drain
every worker (each gets SIGTERM); SIGHUP and SIGUSR1 are logged and ignored, as in one process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from streamwatch import __version__
from streamwatch.config import ConfigError, ListenError, Settings
from streamwatch.export.scrape import metrics_handler
from streamwatch.proxy.signals import handle_signals

log = structlog.get_logger("streamwatch")

WORKER_ENV = "STREAMWATCH_WORKER_DIR"  # set in workers: where to report readiness
_POLL_S = 0.05
_DEBUG_TIMEOUT_S = 5.0


def ready_file(directory: str, pid: int) -> Path:
    """The file a worker writes, holding its admin port, once its proxy accepts connections."""
    return Path(directory, f"ready-{pid}")


def _worker_admin_port(directory: str, pid: int) -> int | None:
    try:
        return int(ready_file(directory, pid).read_text())
    except (OSError, ValueError):
        return None


def _reserve(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _listen_error(option: str, host: str, port: int, exc: OSError) -> ListenError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return ListenError(option, f"cannot listen on {host}:{port}: {reason}")


def _ready(procs: Sequence[subprocess.Popen[bytes]], directory: str) -> bool:
    return all(p.poll() is None and ready_file(directory, p.pid).exists() for p in procs)


async def _worker_streams(session: aiohttp.ClientSession, pid: int, port: int) -> dict[str, Any]:
    async with session.get(f"http://127.0.0.1:{port}/debug/streams") as response:
        listing: dict[str, Any] = await response.json()
    for row in listing["streams"]:
        row["worker"] = pid
    return listing


class ProcessTree(Collector):
    """prometheus-client's ``process_*`` families for the parent and its workers together: CPU
    seconds, resident and virtual memory and open descriptors summed over the live processes;
    start time and the descriptor limit are the parent's. The same series as one process, so the
    dashboards' self-metrics row reads a ``--workers`` instance whole."""

    _SUMMED = frozenset(
        {
            "process_cpu_seconds",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
        }
    )

    def __init__(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        self._parent = ProcessCollector(registry=None)
        self._workers = [
            (proc, ProcessCollector(pid=partial(int, proc.pid), registry=None)) for proc in procs
        ]

    def collect(self) -> Iterator[Metric]:
        totals: dict[str, float] = {}
        for proc, collector in self._workers:
            if proc.poll() is None:  # a worker gone between poll and read yields nothing
                for family in collector.collect():
                    if family.name in self._SUMMED:
                        totals[family.name] = totals.get(family.name, 0.0) + sum(
                            s.value for s in family.samples
                        )
        for family in self._parent.collect():
            extra = totals.get(family.name)
            if extra is None:
                yield family
                continue
            summed = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                summed.add_sample(sample.name, sample.labels, sample.value + extra)
            yield summed


def _admin_app(
    procs: Sequence[subprocess.Popen[bytes]], directory: str, leaving: asyncio.Event
) -> web.Application:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]  # untyped upstream
    registry.register(ProcessTree(procs))

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if leaving.is_set():
            return web.Response(status=503, text="draining\n")
        if not _ready(procs, directory):
            return web.Response(status=503, text="workers not ready\n")
        return web.Response(text="ready\n")

    async def debug_streams(_: web.Request) -> web.Response:
        ports = {p.pid: _worker_admin_port(directory, p.pid) for p in procs if p.poll() is None}
        timeout = aiohttp.ClientTimeout(total=_DEBUG_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            listings = await asyncio.gather(
                *(_worker_streams(session, pid, port) for pid, port in ports.items() if port),
                return_exceptions=True,
            )
        answered = [item for item in listings if isinstance(item, dict)]
        return web.json_response(
            {
                "version": 1,
                "inflight": sum(int(item["inflight"]) for item in answered),
                "streams": [row for item in answered for row in item["streams"]],
                "workers": len(procs),
                "workers_answered": len(answered),
            }
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler(registry))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/debug/streams", debug_streams)
    return app


async def _supervise(
    settings: Settings, procs: list[subprocess.Popen[bytes]], directory: str, port: int
) -> int:
    leaving = asyncio.Event()
    runner = web.AppRunner(_admin_app(procs, directory, leaving), access_log=None)
    await runner.setup()
    admin_host, admin_port = settings.admin_listen
    site = web.TCPSite(runner, admin_host, admin_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise _listen_error("admin_listen", admin_host, admin_port, exc) from None
    stopping = asyncio.Event()
    handle_signals(stopping)
    while not _ready(procs, directory):
        if any(p.poll() is not None for p in procs) or stopping.is_set():
            break
        await asyncio.sleep(_POLL_S)
    else:
        log.info(
            "streamwatch.started",
            version=__version__,
            listen=f"{settings.listen[0]}:{port}",
            admin=f"{admin_host}:{runner.addresses[0][1]}",
            workers=[p.pid for p in procs],
            upstreams=settings.upstream_urls(),
        )
    status = 0
    while not stopping.is_set():
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            log.error("worker.exited", pid=dead[0].pid, status=dead[0].returncode)
            status = 1
            break
        await asyncio.sleep(_POLL_S * 4)
    if status == 0:
        leaving.set()  # /readyz 503 now; the workers keep serving through the delay
        log.info("streamwatch.leaving", shutdown_delay=settings.shutdown_delay)
        stopping.clear()
        with suppress(TimeoutError):  # a second signal ends the wait early
            await asyncio.wait_for(stopping.wait(), settings.shutdown_delay)
    log.info("streamwatch.draining", workers=len(procs))
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.to_thread(proc.wait, settings.drain_timeout + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
        mark_process_dead(proc.pid, directory)  # type: ignore[no-untyped-call]  # untyped upstream
    await runner.cleanup()
    log.info("streamwatch.stopped", status=status)
    return status


def run_workers(settings: Settings, argv: Sequence[str]) -> int:
    """Start ``settings.workers`` copies of ``streamwatch serve argv`` and supervise them."""
    host, port = settings.listen
    try:
        reservation = _reserve(host, port)
    except OSError as exc:
        raise _listen_error("listen", host, port, exc) from None
    port = int(reservation.getsockname()[1])
    try:
        directory = tempfile.mkdtemp(prefix="streamwatch-metrics-", dir=settings.metrics_dir)
    except OSError as exc:  # also "No usable temporary directory" under a read-only root
        reservation.close()
        where = settings.metrics_dir or "the system temporary directory"
        raise ConfigError(
            "metrics_dir",
            f"cannot create the workers' metrics directory in {where}: {exc}; "
            "mount a writable tmpfs or emptyDir and point --metrics-dir (or TMPDIR) at it",
        ) from None
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory, WORKER_ENV: directory}
    # Later flags win: every worker joins the resolved port; their own admin listeners stay private;
    # the parent alone waits out the shutdown delay, then signals them to drain at once.
    command = [sys.executable, "-m", "streamwatch", "serve", *argv,
               "--listen", f"{host}:{port}", "--admin-listen", "127.0.0.1:0",
               "--shutdown-delay", "0"]  # fmt: skip
    try:
        procs = [subprocess.Popen(command, env=env) for _ in range(settings.workers)]  # noqa: S603 (our own argv)
        try:
            return asyncio.run(_supervise(settings, procs, directory, port))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        reservation.close()
        shutil.rmtree(directory, ignore_errors=True)
