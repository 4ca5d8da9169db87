"""``streamwatch healthcheck``: the container image's HEALTHCHECK, probing whatever the container runs.

A HEALTHCHECK line cannot know the port: ``serve`` may be started with another ``--admin-listen``
(flag, ``STREAMWATCH_*`` or config file) and the same image runs ``simulate``. So the probe finds the
container's streamwatch process (the lowest pid whose command line runs ``streamwatch serve`` or
``simulate``), reads its arguments and environment from ``/proc``, resolves them with the real
parsers, and probes serve's admin ``/healthz`` or the simulator's ``/v1/models``. Outside a
container (no such process), the probe's own environment gives serve's admin address.
"""

from __future__ import annotations

import argparse
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from streamwatch.config import ConfigError, add_arguments, load_settings, parse_listen

PROBE_TIMEOUT_S = 2.0
_COMMANDS = ("serve", "simulate")


def _command_of(argv: Sequence[str]) -> list[str] | None:
    """``[command, *args]`` when ``argv`` runs ``streamwatch serve|simulate``, else None."""
    for i, word in enumerate(argv):
        if Path(word).name == "streamwatch" and i + 1 < len(argv) and argv[i + 1] in _COMMANDS:
            return list(argv[i + 1 :])
        if word == "-m" and argv[i + 1 : i + 3] and argv[i + 1] == "streamwatch":
            rest = list(argv[i + 2 :])
            return rest if rest and rest[0] in _COMMANDS else None
    return None


def _read_nul_list(path: Path) -> list[str]:
    return [p.decode(errors="replace") for p in path.read_bytes().split(b"\0") if p]


def find_process(proc: Path = Path("/proc")) -> tuple[list[str], dict[str, str]] | None:
    """The command and environment of the lowest-pid streamwatch serve/simulate process."""
    pids = sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit())
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            command = _command_of(_read_nul_list(proc / str(pid) / "cmdline"))
            if command is None:
                continue
            environ = dict(
                item.partition("=")[::2] for item in _read_nul_list(proc / str(pid) / "environ")
            )
        except OSError:  # gone meanwhile, or not ours to read
            continue
        return command, environ
    return None


def _loopback(host: str) -> str:
    """Where to reach a listener bound to ``host`` from inside the same network namespace."""
    if host in ("", "0.0.0.0"):  # noqa: S104 (a wildcard bind is reached on loopback)
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def probe_url(command: Sequence[str], environ: Mapping[str, str]) -> str:
    """The URL that answers 200 while the process running ``command`` is healthy."""
    if command and command[0] == "simulate":
        from streamwatch.simulator.__main__ import build_parser  # noqa: PLC0415

        args, _ = build_parser().parse_known_args(list(command[1:]))
        return f"http://{_loopback(args.host)}:{args.port}/v1/models"
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    args, _ = parser.parse_known_args(list(command[1:]))
    try:
        host, port = load_settings(args, environ).admin_listen
    except ConfigError as exc:
        if exc.option != "upstream":
            raise
        # No upstream in this environment: the admin address alone is enough to probe.
        raw = args.admin_listen or environ.get("STREAMWATCH_ADMIN_LISTEN", "127.0.0.1:9464")
        host, port = parse_listen("admin_listen", raw)
    return f"http://{_loopback(host)}:{port}/healthz"


def healthcheck() -> int:
    """Probe once; 0 when healthy, 1 otherwise (the message says what was probed)."""
    found = find_process()
    command, environ = found if found is not None else (["serve"], dict(os.environ))
    try:
        url = probe_url(command, environ)
    except ConfigError as exc:
        print(f"unhealthy: configuration error: {exc}")
        return 1
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:  # noqa: S310 (http URL built above)
            status = int(response.status)
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}")
        return 1
    print(f"{'healthy' if status == 200 else 'unhealthy'}: {url} answered {status}")
    return 0 if status == 200 else 1
