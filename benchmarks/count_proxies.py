"""Instructions and syscalls per chunk of streamwatch and the pass-through references, side by side.

``run.py --instructions`` runs this. CPU time on a shared 2-core VM with host steal swings by tens
of percent between runs; what survives is a count. Each proxy (``run.py``'s targets, started as
``run.py`` starts them) serves the same paced workload twice, N and 3N streams of ``--tokens``
chunks, and the figure is the difference divided by the extra chunks: the marginal cost of a chunk,
per-request work amortised, start-up, idle ticks and shutdown cancelling out (both workloads last
the same wall time: the streams run side by side).

* **Instructions** (user space): the proxy runs under ``valgrind --tool=callgrind``; a dump
  through ``callgrind_control`` (``callgrind.Control``) after start-up and after each workload
  gives the instructions of every thread in between (streamwatch's log writer, the span
  exporter). The upstream simulator and the load client run outside valgrind, on the other core.
* **Syscalls** (the kernel half, where most of nginx's CPU goes): a second pass runs the proxies
  natively with ``strace -f -c`` attached for each workload.
* The workload is paced (``--gap-ms``) slowly enough that a proxy under callgrind (~50x slower)
  still reads one chunk at a time, as in real traffic; the client counts its body reads per chunk
  through each proxy and through a direct connection, which shows whether that held.
* Streamwatch also runs with tracing on (100 % sampled, OTLP/HTTP to a local receiver that
  discards) on 200- and 20-chunk streams against tracing off on the same streams: the issue's
  tracing targets, counted. Two processes, one for the N and one for the 3N workloads, each
  sending a workload's spans in one export request (``count_instructions``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import callgrind
from bench_tracing import receiver
from loadclient import Results, Shape, run_load
from run import (
    LOAD_CPU,
    PYTHON,
    REFERENCES,
    Target,
    pct,
    start_printing_port,
    start_target,
    upstream_digests,
)

STRACE = shutil.which("strace") or "strace"
TRACING_ENV = {"OTEL_TRACES_SAMPLER": "always_on"}  # plus OTEL_EXPORTER_OTLP_ENDPOINT
TRACING_TOKENS = (200, 20)  # the tracing targets: <= +10 % and <= +25 % per chunk
TRACING_TARGETS = {200: 10.0, 20: 25.0}
START_TIMEOUT_S = 900.0  # streamwatch's imports take a minute or more under callgrind here


@dataclass
class Load:
    """What the client saw through one target in one workload."""

    streams: int
    chunks: int
    reads: int
    errors: int
    mismatched: int
    p99_ms: float


@dataclass
class Marginal:
    """One target, one stream length: the N and 3N workloads and the counter read after each."""

    low: Load
    high: Load
    counted: tuple[int, int]  # instructions or syscalls during the N and the 3N workload
    by_name: dict[str, tuple[int, int]] | None = None  # strace: per syscall

    @property
    def per_chunk(self) -> float:
        return (self.counted[1] - self.counted[0]) / max(self.high.chunks - self.low.chunks, 1)

    def named_per_chunk(self, names: tuple[str, ...]) -> float:
        assert self.by_name is not None
        low = sum(self.by_name.get(n, (0, 0))[0] for n in names)
        high = sum(self.by_name.get(n, (0, 0))[1] for n in names)
        return (high - low) / max(self.high.chunks - self.low.chunks, 1)

    @property
    def merged(self) -> bool:
        """Fewer reads per chunk at 3N than at N: the proxy fell behind and chunks shared reads."""
        low, high = (load.reads / max(load.chunks, 1) for load in (self.low, self.high))
        return high < 0.98 * low

    @property
    def reads_per_chunk(self) -> str:
        """Client body reads per chunk at N / 3N (marked when reads merged)."""
        cells = [f"{load.reads / max(load.chunks, 1):.3f}" for load in (self.low, self.high)]
        return " / ".join(cells) + (" (merged: raise --gap-ms)" if self.merged else "")


async def load(target: Target, upstream: Target, streams: int, tokens: int, gap_ms: int) -> Load:
    """``streams`` streams of ``tokens`` chunks, their starts spread over half a stream's length
    and at least 3 s (a request's set-up and span under callgrind take tens of ms: started
    together, they would delay the first chunks until two arrive in one read)."""
    results: Results = await run_load(
        "127.0.0.1", target.port, concurrency=streams, duration_s=math.inf,
        shape=Shape(tokens=tokens, gap_ms=gap_ms), tag=f"{target.name}-{streams}-{tokens}",
        ramp_s=max(tokens * gap_ms / 2000, 3.0), streams_per_slot=1,
    )  # fmt: skip
    sent = await asyncio.to_thread(upstream_digests, upstream.port)
    mismatched = sum(1 for k, v in results.digests.items() if sent.get(k) != v)
    return Load(results.streams, results.chunks, results.reads, results.errors, mismatched,
                pct(results.latencies_ns, 0.99))  # fmt: skip


# -- instructions: callgrind ---------------------------------------------------------------------


def span_count(bodies: list[bytes]) -> int:
    """Spans in the OTLP/HTTP export requests received."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    return sum(
        len(scope.spans)
        for body in bodies
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
    )


async def wait_spans(bodies: list[bytes], expected: int, timeout_s: float = 300.0) -> None:
    """Until every stream's span has been exported, so its export is counted with its workload."""
    deadline = time.monotonic() + timeout_s
    while (got := span_count(bodies)) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{got} spans exported of {expected}")
        await asyncio.sleep(0.2)


Counted = dict[tuple[int, int], tuple[Load, int]]  # (chunks a stream, streams) -> load, count


async def count_instructions(
    name: str,
    upstream: Target,
    tmp: Path,
    args: argparse.Namespace,
    workloads: tuple[tuple[int, int], ...],
    *,
    tracing: tuple[str, list[bytes]] | None = None,
) -> Counted:
    """One target under callgrind: the instructions of each (chunks a stream, streams) workload.

    With ``tracing`` (endpoint, received bodies) every workload has the same number of streams,
    and the span processor sends one export request per that many spans, never on its 5 s timer:
    each workload's spans then leave in exactly one request, when its last stream ends. The
    request's fixed cost (~4-5 M instructions) is the same in the N and the 3N process and
    cancels, as it nearly does in production (up to 512 spans a request); the encoding of every
    span stays in. On the timer, 1 or 2 requests fell in a workload by phase (the 20-chunk
    figure moved by 10 % between runs); with a request per N spans, exports stalled the loop
    mid-workload and chunks shared reads.
    """
    batch = max(streams for _tokens, streams in workloads)
    slug = name.replace("@", "-").replace("/", "_") + (f"-tracing-{batch}" if tracing else "")
    out = tmp / f"callgrind-{slug}.out"
    env = None
    if tracing:
        env = {**TRACING_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": tracing[0],
               "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": str(batch),
               "OTEL_BSP_SCHEDULE_DELAY": str(3600 * 1000)}  # fmt: skip
    started = time.monotonic()
    target = start_target(
        name, upstream, tmp,
        wrap=callgrind.command(out, tmp / f"valgrind-{slug}.log", instrumented=False),
        start_timeout_s=START_TIMEOUT_S, env=env,
    )  # fmt: skip
    if target is None:
        return {}
    label = target.name + (f", tracing on (export per {batch} spans)" if tracing else "")
    print(f"  {label}: up under callgrind in {time.monotonic() - started:.0f} s", flush=True)
    assert target.pid is not None
    control = callgrind.Control(target.pid, out)
    exported = 0
    counted: Counted = {}
    try:
        # instrumented from here; the warm-up (lazy imports, pools, first-request paths, one
        # export) and everything before it go into a dump that is not counted
        await asyncio.to_thread(control.instrument)
        await load(target, upstream, batch, 10, args.gap_ms)
        if tracing:
            exported += batch
            await wait_spans(tracing[1], exported)
        await asyncio.to_thread(control.dump)
        for tokens, streams in workloads:
            before = len(tracing[1]) if tracing else 0
            done = await load(target, upstream, streams, tokens, args.gap_ms)
            if tracing:
                exported += streams
                await wait_spans(tracing[1], exported)
            counted[tokens, streams] = (done, await asyncio.to_thread(control.dump))
            posts = f", {len(tracing[1]) - before} export request(s)" if tracing else ""
            print(f"  {label}, {streams} streams x {tokens} chunks: "
                  f"{counted[tokens, streams][1] / 1e6:,.1f} M instructions, client reads per "
                  f"chunk {done.reads / max(done.chunks, 1):.3f}{posts}", flush=True)  # fmt: skip
    finally:
        target.stop(wait_s=300)
    return counted


def marginal(low: tuple[Load, int], high: tuple[Load, int]) -> Marginal:
    """Per extra chunk between two counted workloads."""
    return Marginal(low[0], high[0], (low[1], high[1]))


# -- syscalls: strace ----------------------------------------------------------------------------


def strace_counts(summary: str) -> dict[str, int]:
    """Calls per syscall from ``strace -c`` output, with the sum under ``"total"``."""
    counts: dict[str, int] = {}
    for line in summary.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[3].isdigit():
            counts[fields[-1]] = int(fields[3])
    if "total" not in counts:
        raise RuntimeError(f"no total in strace output:\n{summary}")
    return counts


async def traced(target: Target, out: Path, run: Callable[[], Awaitable[None]]) -> dict[str, int]:
    """Syscalls of ``target`` (every thread) while ``run()`` is awaited."""
    assert target.pid is not None
    strace = await asyncio.create_subprocess_exec(
        STRACE, "-f", "-c", "-o", str(out), "-p", str(target.pid), stderr=asyncio.subprocess.PIPE
    )  # fmt: skip
    try:
        assert strace.stderr is not None
        line = await asyncio.wait_for(strace.stderr.readline(), 30)  # "Process N attached ..."
        if b"attached" not in line:
            raise RuntimeError(f"strace did not attach to {target.name}: {line!r}")
        await run()
    finally:
        strace.send_signal(signal.SIGINT)  # detaches and writes the summary
        await asyncio.wait_for(strace.wait(), 60)
    return strace_counts(await asyncio.to_thread(out.read_text))


async def count_syscalls(
    name: str, upstream: Target, tmp: Path, args: argparse.Namespace
) -> Marginal | None:
    """One target run natively, ``strace -f -c`` attached for the N and then the 3N workload."""
    target = start_target(name, upstream, tmp)
    if target is None:
        return None
    try:
        await load(target, upstream, args.streams, 10, 10)  # warm: pools, first-request paths
        loads: list[Load] = []
        counts = []
        for streams in (args.streams, 3 * args.streams):

            async def run(streams: int = streams) -> None:
                loads.append(await load(target, upstream, streams, args.tokens, args.gap_ms))

            counts.append(await traced(target, tmp / f"strace-{streams}.txt", run))
    finally:
        target.stop()
    names = set(counts[0]) | set(counts[1])
    by_name = {n: (counts[0].get(n, 0), counts[1].get(n, 0)) for n in names}
    return Marginal(loads[0], loads[1], by_name["total"], by_name)


# -- report --------------------------------------------------------------------------------------

READS = ("read", "recvfrom", "recvmsg", "readv")
WRITES = ("write", "sendto", "sendmsg", "writev")
POLLS = ("epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl")


def report(
    names: dict[str, str],
    instructions: dict[str, Marginal],
    syscalls: dict[str, Marginal],
    direct: Load,
    args: argparse.Namespace,
) -> str:
    lines = [
        f"{args.streams} and {3 * args.streams} streams x {args.tokens} chunks, one chunk every "
        f"{args.gap_ms} ms a stream; per chunk = (3N count - N count) / extra chunks\n",
        "| target | instructions per chunk (user space) | syscalls per chunk | of which reads "
        "/ writes / epoll | client reads per chunk, callgrind pass (N / 3N) | same, strace pass "
        "| chunk p99 under callgrind (ms) | errors | byte-exact |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    direct_reads = f"{direct.reads / max(direct.chunks, 1):.3f}"
    lines.append(f"| direct | - | - | - | {direct_reads} | - | - | {direct.errors} | - |")
    for name, label in names.items():
        counted, traced_ = instructions.get(name), syscalls.get(name)
        if counted is None and traced_ is None:
            continue
        cells = [
            f"{counted.per_chunk:,.0f}" if counted else "-",
            f"{traced_.per_chunk:.2f}" if traced_ else "-",
            " / ".join(f"{traced_.named_per_chunk(group):.2f}" for group in (READS, WRITES, POLLS))
            if traced_
            else "-",
            counted.reads_per_chunk if counted else "-",
            traced_.reads_per_chunk if traced_ else "-",
            f"{counted.high.p99_ms:.1f}" if counted else "-",
        ]
        runs = [m for m in (counted, traced_) if m is not None]
        errors = sum(load.errors for m in runs for load in (m.low, m.high))
        ok = sum(
            load.streams - load.errors - load.mismatched for m in runs for load in (m.low, m.high)
        )
        total = sum(load.streams - load.errors for m in runs for load in (m.low, m.high))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {errors} | {ok}/{total} |")
    lines += [
        "",
        "| streamwatch / | instructions per chunk | syscalls per chunk |",
        "|---|---|---|",
    ]
    for name, label in names.items():
        if not name.startswith("streamwatch") or name not in instructions:
            continue
        for ref_name, ref_label in names.items():
            if ref_label not in REFERENCES:
                continue
            cells = []
            for table in (instructions, syscalls):
                mine, ref = table.get(name), table.get(ref_name)
                cells.append(f"{mine.per_chunk / ref.per_chunk:.2f}x" if mine and ref else "-")
            prefix = "" if label == "streamwatch" else f"({label}) "
            lines.append(f"| {prefix}{ref_label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tracing_report(label: str, off: dict[int, Marginal], on: dict[int, Marginal]) -> str:
    lines = [
        f"{label}: tracing off vs on (100 % sampled, OTLP/HTTP to a local receiver), instructions "
        "per chunk, every thread (the span exporter's included); user space only\n",
        "| chunks a stream | tracing off | on | added per chunk | vs off | target "
        "| client reads per chunk, off / on (N / 3N) |",
        "|---|---|---|---|---|---|---|",
    ]
    for tokens in TRACING_TOKENS:
        if tokens not in off or tokens not in on:
            continue
        base, traced_ = off[tokens].per_chunk, on[tokens].per_chunk
        change = (traced_ / base - 1) * 100
        verdict = "met" if change <= TRACING_TARGETS[tokens] else "not met"
        lines.append(f"| {tokens} | {base:,.0f} | {traced_:,.0f} | {traced_ - base:,.0f} "
                     f"| {change:+.1f} % | ≤ +{TRACING_TARGETS[tokens]:.0f} %: {verdict} "
                     f"| {off[tokens].reads_per_chunk}; {on[tokens].reads_per_chunk} |")  # fmt: skip
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    os.environ["PYTHONHASHSEED"] = "0"  # the Python targets hash alike in every run
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="swcount-"))
    up = start_printing_port("upstream", [PYTHON, "upstream.py"], LOAD_CPU)
    labels = {
        "bare": "bare aiohttp",
        "protocol": "protocol reference",
        "nginx": "nginx",
    }
    names = {name: labels.get(name, name) for name in args.targets}
    instructions: dict[str, Marginal] = {}
    syscalls: dict[str, Marginal] = {}
    traced_runs: dict[str, tuple[dict[int, Marginal], dict[int, Marginal]]] = {}
    report_: dict[str, object] = {}
    try:
        direct = await load(Target("direct", up.port), up, args.streams, args.tokens, args.gap_ms)
        print("instructions (callgrind):", flush=True)
        async with receiver() as (endpoint, bodies):
            n, n3 = args.streams, 3 * args.streams
            for name, label in names.items():
                swatch = name.startswith("streamwatch") and args.tracing
                lengths = (args.tokens, *TRACING_TOKENS) if swatch else (args.tokens,)
                found = await count_instructions(
                    name, up, tmp, args, tuple((t, s) for t in lengths for s in (n, n3))
                )
                if not found:
                    continue
                off = {t: marginal(found[t, n], found[t, n3]) for t in lengths}
                instructions[name] = off[args.tokens]
                print(f"  {label}: {off[args.tokens].per_chunk:,.0f} instructions per chunk",
                      flush=True)  # fmt: skip
                if swatch:
                    on_n, on_n3 = [
                        await count_instructions(
                            name, up, tmp, args, tuple((t, s) for t in TRACING_TOKENS),
                            tracing=(endpoint, bodies),
                        )
                        for s in (n, n3)
                    ]  # fmt: skip
                    on = {t: marginal(on_n[t, n], on_n3[t, n3]) for t in TRACING_TOKENS}
                    traced_runs[name] = (off, on)
        if args.syscalls:
            print("syscalls (strace, proxies run natively):", flush=True)
            for name, label in names.items():
                found_calls = await count_syscalls(name, up, tmp, args)
                if found_calls is not None:
                    syscalls[name] = found_calls
                    print(f"  {label}: {found_calls.per_chunk:.2f} syscalls per chunk, "
                          f"client reads per chunk {found_calls.reads_per_chunk}", flush=True)  # fmt: skip
    finally:
        up.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(names, instructions, syscalls, direct, args)
    print(f"\n{text}", flush=True)
    report_["instructions"] = text
    for name, (off, on) in traced_runs.items():
        tracing_text = tracing_report(names[name], off, on)
        print(f"\n{tracing_text}", flush=True)
        report_[f"tracing {name}"] = tracing_text
    print(f"\n({time.monotonic() - started:.0f} s)")
    return report_
