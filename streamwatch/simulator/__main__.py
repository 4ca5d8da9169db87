"""`python -m streamwatch.simulator`: run the simulated upstream alone until SIGINT or SIGTERM.

The first stdout line names the bound address, so `--port 0` works for scripts and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from streamwatch.simulator.profile import DEFAULT_WEIGHTS, Behaviour, Profile, parse_weights


def _mix(text: str) -> dict[Behaviour, float]:
    """argparse type for ``--mix``: the parser's own message, not a function name."""
    try:
        return parse_weights(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    defaults = Profile()
    parser = argparse.ArgumentParser(
        prog="streamwatch simulate",
        description="Simulated OpenAI / Anthropic upstream streaming realistic SSE. Each request "
        "can override the mix and timing with x-sim-* headers (docs/simulator.md).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=None, help="replay the same behaviour mix")
    parser.add_argument(
        "--mix",
        type=_mix,
        default=None,
        help="behaviour weights, e.g. normal=0.9,stall=0.1 (default: "
        + ",".join(f"{k}={v}" for k, v in DEFAULT_WEIGHTS.items())
        + ")",
    )
    parser.add_argument("--tokens", type=int, default=defaults.output_tokens)
    parser.add_argument("--ttft-ms", type=float, default=defaults.ttft_s * 1000)
    parser.add_argument("--gap-ms", type=float, default=defaults.gap_mean_s * 1000)
    parser.add_argument("--jitter-ms", type=float, default=defaults.gap_jitter_s * 1000)
    parser.add_argument("--stall-ms", type=float, default=defaults.stall_s * 1000)
    return parser


async def _serve(host: str, port: int, profile: Profile) -> None:
    # Imported here: the container HEALTHCHECK reads build_parser() and must not pay for aiohttp.
    from streamwatch.simulator.server import start_simulator  # noqa: PLC0415

    runner, bound = await start_simulator(host, port, profile)
    print(f"streamwatch simulator listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Parse `argv`, serve until SIGINT/SIGTERM, return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        profile = Profile(
            weights=args.mix if args.mix is not None else dict(DEFAULT_WEIGHTS),
            seed=args.seed,
            output_tokens=args.tokens,
            ttft_s=args.ttft_ms / 1000,
            gap_mean_s=args.gap_ms / 1000,
            gap_jitter_s=args.jitter_ms / 1000,
            stall_s=args.stall_ms / 1000,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve(args.host, args.port, profile))
    except OSError as exc:  # the port is taken or the address is not local
        sys.stderr.write(
            f"streamwatch simulate: cannot listen on {args.host}:{args.port}: "
            f"{os.strerror(exc.errno) if exc.errno else exc}\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
