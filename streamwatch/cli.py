"""``streamwatch serve | demo | simulate``: the entry point, the only place that configures logging."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Sequence

from streamwatch import __version__
from streamwatch.config import ConfigError, ListenError, Settings, add_arguments, load_settings
from streamwatch.export.logs import configure_logging


def _install_uvloop() -> None:
    """uvloop when available: a cheaper event loop on the per-chunk hot path."""
    try:
        import uvloop  # noqa: PLC0415 (optional speed-up)
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _quiet_created_series() -> None:
    """Drop prometheus-client's ``*_created`` samples: they double /metrics and no panel uses them."""
    import prometheus_client  # noqa: PLC0415

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream


def _serve(settings: Settings, argv: Sequence[str]) -> int:
    from streamwatch.export.otel import TracingConfigError  # noqa: PLC0415 (keeps --help fast)
    from streamwatch.serve import Running, serve  # noqa: PLC0415
    from streamwatch.workers import WORKER_ENV, ready_file, run_workers  # noqa: PLC0415

    log_pipe = configure_logging(
        settings.log_format, settings.log_level, queue_lines=settings.log_queue
    )
    worker_dir = os.environ.get(WORKER_ENV)
    if settings.workers > 1 and worker_dir is None:
        _install_uvloop()
        try:
            return run_workers(settings, argv)
        except ListenError as exc:
            sys.stderr.write(f"streamwatch: cannot start: {exc}\n")
            return 1
        except ConfigError as exc:  # an unusable --metrics-dir
            sys.stderr.write(f"streamwatch: configuration error: {exc}\n")
            return 2

    def started(running: Running) -> None:
        # Everything allocated so far lives until exit: keep it out of the cyclic GC, whose full
        # collections otherwise walk it all and stall every open stream (tens of ms at p99).
        gc.freeze()
        if worker_dir is not None:  # the parent gathers /debug/streams from this admin port
            ready_file(worker_dir, os.getpid()).write_text(str(running.admin_port))

    _install_uvloop()
    try:
        return asyncio.run(
            serve(
                settings,
                os.environ,
                reuse_port=worker_dir is not None,
                on_started=started,
                log_pipe=log_pipe,
            )
        )
    except ListenError as exc:  # a valid address that cannot be bound now (in use, not local)
        sys.stderr.write(f"streamwatch: cannot start: {exc}\n")
        return 1
    except (ConfigError, TracingConfigError) as exc:  # a bad OTEL_* value
        sys.stderr.write(f"streamwatch: configuration error: {exc}\n")
        return 2


def _positive_number(text: str) -> float:
    """argparse type for a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    """argparse type for a count of at least one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "simulate":
        from streamwatch.simulator.__main__ import main as simulate  # noqa: PLC0415

        return simulate(args_list[1:])
    if args_list and args_list[0] == "dashboards":
        from streamwatch.mixin.export import dashboards_main  # noqa: PLC0415

        return dashboards_main(args_list[1:])
    if args_list and args_list[0] == "analyze":
        from streamwatch.tools.analyze import main as analyze  # noqa: PLC0415

        return analyze(args_list[1:])
    if args_list and args_list[0] == "probe":
        from streamwatch.tools.probe_main import main as probe  # noqa: PLC0415

        return probe(args_list[1:])
    if args_list and args_list[0] == "top":
        from streamwatch.tools.top import main as top  # noqa: PLC0415

        return top(args_list[1:])
    parser = argparse.ArgumentParser(
        prog="streamwatch",
        description="Transparent reverse proxy that measures LLM token streams.",
    )
    parser.add_argument("--version", action="version", version=f"streamwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="proxy to an upstream gateway and measure streams")
    add_arguments(serve)
    demo = commands.add_parser(
        "demo",
        help="run the built-in simulated upstream behind the proxy and drive traffic",
        description="Everything on loopback in one process; the STREAMWATCH_* variables of "
        "serve do not apply.",
    )
    demo.add_argument(
        "--duration", type=_positive_number, default=60.0, help="seconds of traffic (60)"
    )
    demo.add_argument(
        "--concurrency", type=_positive_int, default=8, help="parallel client streams (8)"
    )
    demo.add_argument("--listen", default="127.0.0.1:8080", help="proxy listener (127.0.0.1:8080)")
    demo.add_argument("--admin-listen", default="127.0.0.1:9464", help="admin listener")
    demo.add_argument("--seed", type=int, default=None, help="replay the same traffic mix")
    demo.add_argument("--log", action="store_true", help="also print one log line per stream")
    commands.add_parser("simulate", help="run only the simulated upstream (see simulate --help)")
    commands.add_parser(
        "analyze",
        help="verdict on a captured stream: SSE body, capture or HAR (see analyze --help)",
    )
    commands.add_parser(
        "dashboards",
        help="export the Grafana dashboards and Prometheus rules (see dashboards export --help)",
    )
    commands.add_parser(
        "healthcheck",
        help="probe this container's streamwatch (the image's HEALTHCHECK); exit 0 when healthy",
    )
    args, unknown = parser.parse_known_args(args_list)
    if unknown:  # the subcommand's usage, not the top level's
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "healthcheck":
        from streamwatch.healthcheck import healthcheck  # noqa: PLC0415

        return healthcheck()
    _quiet_created_series()
    if args.command == "serve":
        try:
            settings = load_settings(args, os.environ)
        except ConfigError as exc:
            parser.exit(2, f"streamwatch: configuration error: {exc}\n")
        return _serve(settings, args_list[1:])
    from streamwatch.demo import run_demo  # noqa: PLC0415

    _install_uvloop()
    return run_demo(args)
