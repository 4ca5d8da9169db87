"""``streamwatch probe`` command line: one-shot verdicts for CI, or a canary daemon with metrics.

``--once`` probes every target once, prints each verdict (the same fields ``streamwatch analyze``
prints) and exits 0 if every stream passed, 1 if one failed, 2 on a configuration error. Without
it, each target is probed every ``interval`` seconds until SIGTERM or SIGINT, and the results are
served on ``--listen`` as Prometheus metrics (see :mod:`streamwatch.tools.probe_metrics`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx
import orjson

from streamwatch.core.api import Api
from streamwatch.core.events import OutputReceived
from streamwatch.tools.analyze import Source, Verdict, render_text, report
from streamwatch.tools.probe import (
    PROBE_APIS,
    ProbeConfigError,
    ProbeResult,
    Target,
    load_targets,
    probe_once,
    target_from,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamwatch probe",
        description="Synthetic streaming canary: small streaming requests through a gateway, "
        "judged by the proxy's analyzer. Credentials only from --credential-env or "
        "--credential-file (or the same keys in --config), never on the command line.",
    )
    parser.add_argument("--config", help="YAML file with 'targets:' (keys as the flags below)")
    parser.add_argument("--url", help="gateway base URL, e.g. http://litellm:4000")
    parser.add_argument("--name", default="default", help="target name (the route label)")
    parser.add_argument(
        "--api", default=Api.OPENAI_CHAT.value, choices=[a.value for a in PROBE_APIS]
    )
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--prompt", default="Reply with the single word: ok")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between probes")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per probe")
    parser.add_argument("--path", help="request path (default: the API's, e.g. /v1/messages)")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra request header (not a credential)",
    )
    parser.add_argument("--credential-env", help="environment variable holding the API key")
    parser.add_argument("--credential-file", help="file holding the API key")
    parser.add_argument(
        "--credential-header",
        help="header carrying the key (default: Authorization Bearer, x-api-key for Anthropic)",
    )
    parser.add_argument("--once", action="store_true", help="probe once, print, exit 0/1")
    parser.add_argument("--json", action="store_true", help="with --once: JSON output")
    parser.add_argument(
        "--listen", default="127.0.0.1:9465", help="metrics listener HOST:PORT (127.0.0.1:9465)"
    )
    return parser


def _targets(args: argparse.Namespace) -> list[Target]:
    if args.config:
        if args.url:
            raise ProbeConfigError("--config and --url: use one")
        return load_targets(Path(args.config))
    if not args.url:
        raise ProbeConfigError("--url or --config is required")
    headers: dict[str, str] = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ProbeConfigError(f"--header: expected NAME=VALUE, got {item[:40]!r}")
        headers[name.strip()] = value
    entry: dict[str, Any] = {
        "name": args.name,
        "url": args.url,
        "api": args.api,
        "model": args.model,
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "interval": args.interval,
        "timeout": args.timeout,
        "path": args.path,
        "headers": headers,
        "credential_env": args.credential_env,
        "credential_file": args.credential_file,
        "credential_header": args.credential_header,
    }
    return [target_from(entry, 0)]


def result_report(result: ProbeResult) -> dict[str, Any]:
    """The JSON document of one probe: the verdict and, when a stream started, the analysis."""
    doc: dict[str, Any] = {
        "target": result.target.name,
        "ok": result.ok,
        "reason": result.reason,
        "failure": result.failure,
        "status": result.status,
    }
    if result.record is not None:
        gaps = tuple(
            e.gap_ns for e in result.events if type(e) is OutputReceived and e.gap_ns is not None
        )
        source = Source(
            "probe",
            result.record.api,
            result.target.request_path,
            (),
            "reads",
            0,
            result.record.close_cause,
        )
        doc.update(report(Verdict(source, result.record, gaps)))
    return doc


def _print(results: Sequence[ProbeResult], as_json: bool, out: TextIO) -> None:
    docs = [result_report(r) for r in results]
    if as_json:
        out.write(orjson.dumps({"probes": docs}, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    for doc in docs:
        verdict = "PASS" if doc["ok"] else f"FAIL ({doc['reason']})"
        print(f"{verdict} {doc['target']} HTTP {doc['status'] or '-'}", file=out)
        if "verdict" in doc:
            render_text(doc, out)


async def run_once(targets: Sequence[Target], environ: Mapping[str, str]) -> list[ProbeResult]:
    """Probe every target once, concurrently."""
    async with httpx.AsyncClient(http2=True) as client:
        return list(await asyncio.gather(*(probe_once(client, t, environ) for t in targets)))


def main(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        targets = _targets(args)
        for target in targets:  # a missing credential is a start-up error, not a failed probe
            target.credential(os.environ)
    except ProbeConfigError as exc:
        print(f"streamwatch probe: configuration error: {exc}", file=err)
        return 2
    if args.once:
        results = asyncio.run(run_once(targets, os.environ))
        _print(results, args.json, out)
        return 0 if all(r.ok for r in results) else 1
    from streamwatch.tools.probe_daemon import run_daemon  # noqa: PLC0415 (metrics stack)

    return run_daemon(targets, args.listen, os.environ, err)
