"""Side-by-side overhead benchmark: direct, streamwatch and three pass-through references.

The references: a bare aiohttp pass-through (``bare_proxy.py``), one on asyncio ``Protocol``s +
httptools (``protocol_proxy.py``), and nginx when installed.

    .venv/bin/python benchmarks/run.py --quick     # < 1 minute
    .venv/bin/python benchmarks/run.py             # full: main scenario, capacity sweep, memory

The upstream is the streamwatch simulator (``benchmarks/upstream.py``) stamping each output event
with its send time; the load client runs in this process. Proxies are pinned to CPU 0, upstream and
client to CPU 1 (when there are two). Targets are measured interleaved (A B C D A B C D ...) so drift
hits all of them alike. Prints markdown tables; ``--json FILE`` keeps them, one key per section.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from loadclient import Results, Shape, open_idle, run_load

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
NGINX = "/usr/sbin/nginx"
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
TWO_CORES = len(os.sched_getaffinity(0)) >= 2
PROXY_CPU, LOAD_CPU = ({0}, {1}) if TWO_CORES else (None, None)


def _pin(proc: subprocess.Popen[bytes], cpus: set[int] | None) -> None:
    """Pin a just-started process (its later threads inherit the mask)."""
    if cpus is not None:
        os.sched_setaffinity(proc.pid, cpus)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``--workers`` runs one process per worker)."""
    return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process tree (all threads), from /proc/<pid>/stat."""
    total = 0
    for each in _tree(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total * TICK_S


def rss_kib(pid: int) -> int:
    """VmRSS of a process tree."""
    total = 0
    for each in _tree(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


@dataclass
class Target:
    """A process that listens on ``port`` (``pid`` None for the direct connection)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    gc_file: Path | None = None  # run under gc_pauses.py (``--gc``)
    gc_signals: int = 0

    def gc_mark(self) -> None:
        """Close the GC window of ``gc_pauses.py`` (its file gets the pauses since the last mark)."""
        if self.gc_file is not None and self.pid is not None:
            self.gc_signals += 1
            os.kill(self.pid, signal.SIGUSR2)

    def gc_window(self) -> list[tuple[int, int]]:
        """The (generation, ns) pauses between the last two marks."""
        assert self.gc_file is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(self.gc_file.read_text())
                if data["seq"] == self.gc_signals:
                    return [(gen, ns) for gen, ns in data["pauses"]]
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: no GC pauses written to {self.gc_file}")

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stop(self, wait_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _wait_line(proc: subprocess.Popen[bytes], prefix: bytes) -> bytes:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
    raise RuntimeError(f"process exited before printing {prefix!r}")


def _gc_argv(gc_dir: Path | None, name: str) -> tuple[list[str], Path | None]:
    """The ``gc_pauses.py`` prefix for a Python target when ``--gc`` asks for it."""
    if gc_dir is None:
        return [], None
    out = gc_dir / f"gc-{name.replace(' ', '-')}.json"
    return [str(HERE / "gc_pauses.py"), str(out)], out


def start_printing_port(
    name: str,
    argv: list[str],
    cpus: set[int] | None,
    gc_dir: Path | None = None,
    wrap: Sequence[str] = (),
) -> Target:
    """A Python script that prints ``port N`` once it listens (``wrap``: e.g. valgrind's argv)."""
    prefix, gc_file = _gc_argv(gc_dir, name)
    proc = subprocess.Popen([*wrap, argv[0], *prefix, *argv[1:]], stdout=subprocess.PIPE, cwd=HERE)
    _pin(proc, cpus)
    port = int(_wait_line(proc, b"port ").split()[1])
    return Target(name, port, proc, gc_file=gc_file)


def start_streamwatch(
    upstream: str,
    tmp: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    gc_dir: Path | None = None,
    name: str | None = None,
    wrap: Sequence[str] = (),
    start_timeout_s: float = 20.0,
) -> Target:
    port, admin = _free_port(), _free_port()
    log = tmp / f"streamwatch-{port}.log"
    # SWBENCH_CPROFILE=FILE runs streamwatch under cProfile; SWBENCH_WRAP=SCRIPT runs a script
    # standing in for ``-m streamwatch`` (e.g. one that records GC pauses).
    profile, script = os.environ.get("SWBENCH_CPROFILE"), os.environ.get("SWBENCH_WRAP")
    entry = (
        [script]
        if script
        else [*(["-m", "cProfile", "-o", profile] if profile else []), "-m", "streamwatch"]
    )
    gc_prefix, gc_file = _gc_argv(gc_dir if workers == 1 else None, "streamwatch")
    argv = [*wrap, PYTHON, *gc_prefix, *entry, "serve", "--upstream", upstream,
            "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}",
            "--max-streams", "20000", "--max-connections", "20000", "--log-format", "json",
            "--workers", str(workers)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    _pin(proc, PROXY_CPU if workers == 1 else None)  # workers: both cores
    _wait_http(port, proc, start_timeout_s)
    deadline = time.monotonic() + 20
    while workers > 1 and b'"workers":' not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)  # the parent logs streamwatch.started once every worker listens
    name = name or ("streamwatch" if workers == 1 else f"streamwatch x{workers}")
    return Target(name, port, proc, log, gc_file=gc_file)


def start_nginx(
    upstream_port: int, tmp: Path, wrap: Sequence[str] = (), start_timeout_s: float = 20.0
) -> Target | None:
    """nginx as one process (``daemon off; master_process off;``), so ``wrap`` sees it all."""
    if not os.access(NGINX, os.X_OK):
        return None
    port = _free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 40000;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    upstream sim {{ server 127.0.0.1:{upstream_port}; keepalive 1024; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 900s;
        }}
    }}
}}
""")
    proc = subprocess.Popen(
        [*wrap, NGINX, "-c", str(conf), "-p", str(tmp)], stderr=subprocess.DEVNULL
    )
    _pin(proc, PROXY_CPU)
    _wait_http(port, proc, start_timeout_s)
    return Target("nginx", port, proc)


def _wait_http(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"target on port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    proc.kill()  # not left running behind the error
    proc.wait()
    raise RuntimeError(f"nothing listens on {port}")


def upstream_digests(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/digests", timeout=10) as resp:
        return dict(json.loads(resp.read()))


# --- measurement --------------------------------------------------------------------------------


@dataclass
class Run:
    """One target's figures, accumulated over the interleaved rounds."""

    latencies_ns: list[int] = field(default_factory=list)
    ttft_ns: list[int] = field(default_factory=list)
    chunks: int = 0
    window_s: float = 0.0
    cpu_s: float = 0.0
    rss_kib: int = 0
    errors: int = 0
    streams: int = 0
    mismatched: int = 0
    gc_pauses: list[tuple[int, int]] | None = None  # None: not run under gc_pauses.py

    def add(self, results: Results, window_s: float, cpu_s: float, mismatched: int) -> None:
        self.latencies_ns += results.latencies_ns
        self.ttft_ns += results.ttft_ns
        self.chunks += results.chunks
        self.window_s += window_s
        self.cpu_s += cpu_s
        self.errors += results.errors
        self.streams += results.streams
        self.mismatched += mismatched


def pct(values: list[int], q: float) -> float:
    """Nearest-rank percentile in milliseconds (``q`` = 1.0 is the maximum)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


async def measure(target: Target, *, upstream_port: int, concurrency: int, seconds: float,
                  shape: Shape, tag: str, run: Run) -> None:  # fmt: skip
    """One load run through ``target``; CPU is read at the edges of the steady window."""
    pid = target.pid
    marks: list[tuple[float, float]] = []

    def on_window(_start: bool) -> None:
        marks.append((time.monotonic(), cpu_seconds(pid) if pid else 0.0))
        target.gc_mark()

    ramp = shape.tokens * shape.gap_ms / 1000
    results = await run_load("127.0.0.1", target.port, concurrency=concurrency,
                             duration_s=seconds + ramp, shape=shape, tag=tag, ramp_s=ramp,
                             on_window=on_window)  # fmt: skip
    sent = await asyncio.to_thread(upstream_digests, upstream_port)
    mismatched = sum(1 for k, v in results.digests.items() if sent.get(k) != v)
    (t0, c0), (t1, c1) = marks
    run.add(results, t1 - t0, c1 - c0, mismatched)
    if pid:
        run.rss_kib = max(run.rss_kib, rss_kib(pid))
    if target.gc_file is not None:
        run.gc_pauses = (run.gc_pauses or []) + await asyncio.to_thread(target.gc_window)


def table(runs: dict[str, Run], offered: float) -> str:
    base = runs.get("direct")
    lines = [
        "| target | TTFT p50 / p99 (ms) | added latency p50 / p99 / max (ms) | chunks/s "
        "| CPU µs/chunk | RSS MiB | errors | byte-exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        lat = [pct(r.latencies_ns, q) for q in (0.5, 0.99, 1.0)]
        if base is not None and name != "direct":
            ref = [pct(base.latencies_ns, q) for q in (0.5, 0.99, 1.0)]
            added = " / ".join(f"{a - b:+.2f}" for a, b in zip(lat, ref, strict=True))
        else:
            added = "(baseline: " + " / ".join(f"{a:.2f}" for a in lat) + ")"
        cpu = f"{r.cpu_s / r.chunks * 1e6:.1f}" if r.chunks and name != "direct" else "-"
        rss = f"{r.rss_kib / 1024:.0f}" if r.rss_kib else "-"
        exact = f"{r.streams - r.errors - r.mismatched}/{r.streams - r.errors}"
        lines.append(
            f"| {name} | {pct(r.ttft_ns, 0.5):.2f} / {pct(r.ttft_ns, 0.99):.2f} | {added} "
            f"| {r.chunks / r.window_s:,.0f} | {cpu} | {rss} | {r.errors} | {exact} |"
        )
    lines.append(f"\noffered: {offered:,.0f} chunks/s")
    ratio_lines = ratios(runs)
    if ratio_lines:
        lines += ["", *ratio_lines]
    gc_lines = gc_table(runs)
    if gc_lines:
        lines += ["", *gc_lines]
    return "\n".join(lines)


def gc_table(runs: dict[str, Run]) -> list[str]:
    """Cyclic-GC pauses inside the steady windows of the targets run under ``gc_pauses.py``."""
    lines = ["| target | GC collections gen 0 / 1 / 2 per s | paused ms per s | pause p99 / max (ms) "
             "| longest gen 0 / 1 / 2 (ms) |", "|---|---|---|---|---|"]  # fmt: skip
    for name, r in runs.items():
        if r.gc_pauses is None or not r.window_s:
            continue
        per_gen = [[ns for gen, ns in r.gc_pauses if gen == g] for g in (0, 1, 2)]
        counts = " / ".join(f"{len(p) / r.window_s:.1f}" for p in per_gen)
        longest = " / ".join(f"{max(p) / 1e6:.2f}" if p else "-" for p in per_gen)
        every = [ns for _gen, ns in r.gc_pauses] or [0]
        total = sum(ns for _gen, ns in r.gc_pauses) / 1e6 / r.window_s
        lines.append(f"| {name} | {counts} | {total:.2f} | {pct(every, 0.99):.2f} / "
                     f"{pct(every, 1.0):.2f} | {longest} |")  # fmt: skip
    return lines if len(lines) > 2 else []


REFERENCES = ("bare aiohttp", "protocol reference", "nginx")


def _figures(runs: dict[str, Run], name: str) -> tuple[float, float, float]:
    """CPU µs per chunk and added p50 / p99 (ms) of ``name`` against the direct runs."""
    r, base = runs[name], runs["direct"]
    added = [pct(r.latencies_ns, q) - pct(base.latencies_ns, q) for q in (0.5, 0.99)]
    return r.cpu_s / r.chunks * 1e6 if r.chunks else float("nan"), added[0], added[1]


def ratios(runs: dict[str, Run]) -> list[str]:
    """Each streamwatch target / each reference measured in the same run: CPU, added p50 / p99."""
    if "direct" not in runs:
        return []
    lines = ["| target / reference | CPU per chunk | added p50 | added p99 |", "|---|---|---|---|"]
    for name in runs:
        if not name.startswith("streamwatch"):
            continue
        cpu, p50, p99 = _figures(runs, name)
        for ref in REFERENCES:
            if ref in runs:
                ref_cpu, ref_p50, ref_p99 = _figures(runs, ref)
                cells = [f"{a / b:.2f}x" if b > 0 else "-" for a, b in
                         ((cpu, ref_cpu), (p50, ref_p50), (p99, ref_p99))]  # fmt: skip
                lines.append(f"| {name} / {ref} | " + " | ".join(cells) + " |")
    return lines if len(lines) > 2 else []


async def scenario(targets: list[Target], upstream_port: int, *, concurrency: int, seconds: float,
                   rounds: int, shape: Shape) -> dict[str, Run]:  # fmt: skip
    """The same load through every target, interleaved round by round."""
    runs = {t.name: Run() for t in targets}
    for rnd in range(rounds):
        for target in targets:
            await measure(target, upstream_port=upstream_port, concurrency=concurrency,
                          seconds=seconds, shape=shape, tag=f"{target.name}-{concurrency}-{rnd}",
                          run=runs[target.name])  # fmt: skip
    return runs


async def sweep(targets: list[Target], upstream_port: int, rates: list[int], seconds: float,
                shape: Shape) -> list[str]:  # fmt: skip
    """Raise the offered rate until each proxy's added p99 passes 20 ms; report the knee."""
    per_stream = 1000 / shape.gap_ms
    lines = ["| offered chunks/s | " + " | ".join(
        f"{t.name} achieved / added p99 (ms)" for t in targets if t.name != "direct") + " |"]  # fmt: skip
    lines.append("|---" * (len(targets)) + "|")
    for rate in rates:
        runs = await scenario(targets, upstream_port, concurrency=int(rate / per_stream),
                              seconds=seconds, rounds=1, shape=shape)  # fmt: skip
        base = pct(runs["direct"].latencies_ns, 0.99)
        cells = [f"{r.chunks / r.window_s:,.0f} / {pct(r.latencies_ns, 0.99) - base:+.1f}"
                 + (f" ({r.errors} err)" if r.errors else "")
                 for n, r in runs.items() if n != "direct"]  # fmt: skip
        lines.append(f"| {rate:,} (direct {runs['direct'].chunks / runs['direct'].window_s:,.0f}) | "
                     + " | ".join(cells) + " |")  # fmt: skip
        print(lines[-1], flush=True)
    return lines


async def idle_memory(target: Target, upstream_port: int, count: int) -> str:
    """RSS growth per open stream that has its headers and waits for its first token."""
    assert target.pid is not None
    before = rss_kib(target.pid)
    shape = Shape(ttft_ms=600_000)
    conns = await open_idle("127.0.0.1", target.port, count, shape)
    deadline = time.monotonic() + 60
    while sum(c.in_body for c in conns) < count and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    opened = sum(c.in_body for c in conns)
    await asyncio.sleep(1.0)
    after = rss_kib(target.pid)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.abort()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(upstream_digests, upstream_port)  # forget their digests
    return (f"| {target.name} | {opened}/{count} | {before / 1024:.0f} → {after / 1024:.0f} "
            f"| {(after - before) / max(opened, 1):.1f} |")  # fmt: skip


async def bulk_memory(target: Target, upstream_port: int, size: int, rate_bps: float) -> str:
    """One stream of ``size`` bytes to a reader capped at ``rate_bps``: RSS must stay flat."""
    from loadclient import _Conn

    assert target.pid is not None
    loop = asyncio.get_running_loop()
    results = Results()
    done: asyncio.Future[bool] = loop.create_future()
    transport, conn = await loop.create_connection(
        lambda: _Conn(results, lambda ok: done.done() or done.set_result(ok)),
        "127.0.0.1", target.port,
    )  # fmt: skip
    conn.rate_bps = rate_bps
    conn.reset("bulk", time.monotonic_ns())
    transport.write(Shape(path="/bulk/chat/completions", extra={"x-bulk-bytes": str(size)})
                    .request("bulk", f"127.0.0.1:{target.port}"))  # fmt: skip
    samples = [rss_kib(target.pid)]
    started = time.monotonic()
    while not done.done():
        await asyncio.sleep(0.1)
        samples.append(rss_kib(target.pid))
    elapsed = time.monotonic() - started
    transport.close()
    ok = done.result()
    sent = (await asyncio.to_thread(upstream_digests, upstream_port)).get("bulk")
    exact = ok and sent == results.digests.get("bulk")
    # the first second is warm-up (buffers reach their steady size)
    steady = samples[min(10, len(samples) - 1) :]
    return (f"| {target.name} | {results.body_bytes / 1e6:,.0f} MB in {elapsed:.1f} s "
            f"| {samples[0] / 1024:.0f} | {min(steady) / 1024:.0f} - {max(steady) / 1024:.0f} "
            f"| {(max(steady) - min(steady)) / 1024:.1f} | {'yes' if exact else 'NO'} |")  # fmt: skip


# --- main ---------------------------------------------------------------------------------------


def start_target(
    name: str,
    upstream: Target,
    tmp: Path,
    *,
    gc_dir: Path | None = None,
    wrap: Sequence[str] = (),
    start_timeout_s: float = 20.0,
    env: dict[str, str] | None = None,
) -> Target | None:
    """The proxy a ``--targets`` name stands for, in front of ``upstream`` (None: no nginx here).

    ``wrap`` runs it under another program (valgrind); ``env`` is added to streamwatch's.
    """
    url = f"http://127.0.0.1:{upstream.port}"
    if name == "streamwatch":
        return start_streamwatch(
            url, tmp, gc_dir=gc_dir, wrap=wrap, start_timeout_s=start_timeout_s, env=env
        )
    if name == "streamwatch-compiled":  # the core as setup.py compiles it: the image's build
        return start_streamwatch(
            url, tmp, env={"PYTHONPATH": str(compiled_tree(tmp)), **(env or {})}, gc_dir=gc_dir,
            name=name, wrap=wrap, start_timeout_s=start_timeout_s,
        )  # fmt: skip
    if name in ("bare", "protocol"):
        label, script = {
            "bare": ("bare aiohttp", "bare_proxy.py"),
            "protocol": ("protocol reference", "protocol_proxy.py"),
        }[name]
        return start_printing_port(
            label, [PYTHON, script, "--upstream", url], PROXY_CPU, gc_dir, wrap
        )
    if name == "nginx":
        return start_nginx(upstream.port, tmp, wrap, start_timeout_s)
    if name.startswith("streamwatch@"):  # another checkout (a branch, a compiled build)
        checkout = name.split("@", 1)[1]
        return start_streamwatch(
            url, tmp, env={"PYTHONPATH": checkout, **(env or {})}, gc_dir=gc_dir, name=name,
            wrap=wrap, start_timeout_s=start_timeout_s,
        )  # fmt: skip
    if name.startswith("streamwatch-workers"):
        return start_streamwatch(url, tmp, workers=int(name.rsplit("-", 1)[1]), wrap=wrap)
    raise SystemExit(f"unknown target {name}")


def compiled_tree(tmp: Path) -> Path:
    """A copy of this checkout's package in ``tmp`` with its core compiled by ``setup.py``
    (``STREAMWATCH_COMPILE=1``: mypyc, about a minute), built once per run."""
    tree = tmp / "compiled"
    if not tree.exists():
        repo = HERE.parent
        skip = shutil.ignore_patterns("__pycache__", "*.so", "build")
        shutil.copytree(repo / "streamwatch", tree / "streamwatch", ignore=skip)
        for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
            shutil.copy2(repo / name, tree / name)
        print("compiling the core (setup.py, mypyc)...", flush=True)
        subprocess.run(
            [PYTHON, "setup.py", "-q", "build_ext", "--inplace"],
            cwd=tree, env={**os.environ, "STREAMWATCH_COMPILE": "1"}, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return tree


@contextlib.contextmanager
def processes(args: argparse.Namespace) -> Iterator[tuple[Target, list[Target]]]:
    tmp = Path(tempfile.mkdtemp(prefix="swbench-"))
    started: list[Target] = []
    try:
        up = start_printing_port("upstream", [PYTHON, "upstream.py"], LOAD_CPU)
        started.append(up)
        targets = [Target("direct", up.port)]
        gc_dir = tmp if args.gc else None
        for name in args.targets:
            target = start_target(name, up, tmp, gc_dir=gc_dir)
            if target is None:
                print("nginx not installed: skipped", file=sys.stderr)
                continue
            started.append(target)
            targets.append(target)
        yield up, targets
    finally:
        for target in reversed(started):
            target.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    report: dict[str, object] = {}
    shape = Shape(tokens=args.tokens, gap_ms=args.gap_ms)
    offered = args.concurrency * 1000 / args.gap_ms
    with processes(args) as (up, targets):
        for target in targets:  # warm-up: pools, JIT-free caches, page faults
            await measure(target, upstream_port=up.port, concurrency=50, seconds=1.0,
                          shape=Shape(tokens=20, gap_ms=10), tag="warm", run=Run())  # fmt: skip
        print(f"\n## {args.concurrency} streams x {args.tokens} chunks every {args.gap_ms} ms, "
              f"{args.rounds} interleaved rounds of {args.seconds:.0f} s\n", flush=True)  # fmt: skip
        runs = await scenario(targets, up.port, concurrency=args.concurrency, seconds=args.seconds,
                              rounds=args.rounds, shape=shape)  # fmt: skip
        text = table(runs, offered)
        print(text, flush=True)
        report["main"] = text
        proxies = [t for t in targets if t.pid is not None]
        if args.sweep:
            print(
                "\n## capacity sweep (knee: added p99 > 20 ms or achieved < offered)\n", flush=True
            )
            lines = await sweep(targets, up.port, args.sweep, args.sweep_seconds, shape)
            report["sweep"] = "\n".join(lines)
            print(report["sweep"], flush=True)
        if args.idle:
            lines = ["| target | streams open | RSS MiB before → after | KiB per stream |",
                     "|---|---|---|---|"]  # fmt: skip
            for target in proxies:
                lines.append(await idle_memory(target, up.port, args.idle))
            report["idle"] = "\n".join(lines)
            print(f"\n## memory at {args.idle} open idle streams\n\n{report['idle']}", flush=True)
        if args.bulk_mb:
            lines = ["| target | transferred | RSS MiB at start | RSS MiB steady min - max "
                     "| swing MiB | byte-exact |", "|---|---|---|---|---|---|"]  # fmt: skip
            for target in proxies:
                lines.append(
                    await bulk_memory(target, up.port, args.bulk_mb << 20, args.bulk_rate * 1e6)
                )
            report["bulk"] = "\n".join(lines)
            print(f"\n## one {args.bulk_mb} MiB stream to a reader capped at {args.bulk_rate:.0f} MB/s\n\n"
                  f"{report['bulk']}", flush=True)  # fmt: skip
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description="streamwatch overhead benchmark")
    parser.add_argument("--quick", action="store_true", help="under a minute")
    parser.add_argument(
        "--targets", nargs="+", default=["streamwatch", "bare", "protocol", "nginx"]
    )
    parser.add_argument("--concurrency", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--gap-ms", type=int, default=None,
                        help="ms between a stream's chunks (30: 300 x 1000/30 = 10k chunks/s; "
                        "--instructions: 100)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=None, help="steady window per run")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--sweep", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="offered chunks/s levels, e.g. 10000,20000,30000")  # fmt: skip
    parser.add_argument("--sweep-seconds", type=float, default=5.0)
    parser.add_argument("--idle", type=int, default=None, help="open idle streams for memory")
    parser.add_argument("--bulk-mb", type=int, default=None, help="MiB through one slow stream")
    parser.add_argument("--bulk-rate", type=float, default=50.0, help="slow reader MB/s")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--gc", action="store_true",
                        help="record cyclic-GC pauses of the Python targets (gc_pauses.py)")  # fmt: skip
    counting = parser.add_argument_group(
        "--instructions", "instructions (callgrind) and syscalls (strace) per chunk, side by side "
        "(count_proxies.py)")  # fmt: skip
    counting.add_argument("--instructions", action="store_true",
                          help="count instead of timing (~10 min)")  # fmt: skip
    counting.add_argument("--streams", type=int, default=5,
                          help="N: the workloads are N and 3N streams side by side")  # fmt: skip
    counting.add_argument("--no-syscalls", dest="syscalls", action="store_false",
                          help="skip the strace pass")  # fmt: skip
    counting.add_argument("--no-tracing", dest="tracing", action="store_false",
                          help="skip streamwatch with tracing on (200- and 20-chunk streams)")  # fmt: skip
    args = parser.parse_args()
    quick = args.quick
    args.seconds = args.seconds or (4.0 if quick else 10.0)
    args.rounds = args.rounds or (2 if quick else 3)
    if args.sweep is None and not quick:
        args.sweep = [5000, 10000, 15000, 20000, 25000, 30000]
    args.idle = args.idle if args.idle is not None else (1000 if quick else 5000)
    args.bulk_mb = args.bulk_mb if args.bulk_mb is not None else (100 if quick else 1024)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    if LOAD_CPU:
        os.sched_setaffinity(0, LOAD_CPU)
    if args.instructions:
        import count_proxies

        args.gap_ms = args.gap_ms or 100
        report = asyncio.run(count_proxies.main_async(args))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return
    args.gap_ms = args.gap_ms or 30
    try:
        import uvloop
    except ImportError:
        report = asyncio.run(main_async(args))
    else:
        report = uvloop.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
