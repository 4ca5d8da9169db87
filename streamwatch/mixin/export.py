"""``streamwatch dashboards export DIR``: an installed streamwatch writes its own mixin.

The dashboards and rules ship as code plus ``config.yaml`` (package data), so a ``pip install``
user gets them with their own thresholds and links, without the source tree: the shipped
configuration (or ``--config FILE``), then the options, then the same documents the repository
commits.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamwatch.mixin.config import Config, MixinConfigError
from streamwatch.mixin.output import documents


def _alert_threshold(text: str) -> tuple[str, float]:
    """argparse type for ``--alert NAME=THRESHOLD``."""
    name, _, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamwatch dashboards export",
        description="Write the Grafana dashboards, the Prometheus recording and alert rules and "
        "the prometheus-operator PrometheusRule into DIR (grafana/, prometheus/, kubernetes/), "
        "from the shipped configuration or --config, changed by the options below.",
    )
    parser.add_argument("directory", metavar="DIR", type=Path, help="output directory")
    parser.add_argument("--config", type=Path, help="a mixin YAML file, as the shipped one")
    parser.add_argument(
        "--selector", help='PromQL matcher of streamwatch\'s series (job="streamwatch")'
    )
    parser.add_argument("--grafana-url", help="Grafana base URL the alerts link to")
    parser.add_argument("--runbook-url", help="runbook URL the alerts link to (+ #alertname)")
    parser.add_argument("--ttft-objective", type=float, help="share of streams within the TTFT SLO")
    parser.add_argument("--ttft-threshold", type=float, help="TTFT SLO threshold in seconds")
    parser.add_argument(
        "--alert",
        action="append",
        default=[],
        type=_alert_threshold,
        metavar="NAME=THRESHOLD",
        help="an alert's threshold, e.g. stall_ratio=0.1 (repeatable)",
    )
    return parser


def export_config(args: argparse.Namespace) -> Config:
    """The configuration an export uses: the file (or the shipped one), then the options."""
    cfg = Config.default() if args.config is None else Config.from_yaml(args.config)
    changes: dict[str, Any] = {
        field: value
        for field, value in (
            ("selector", args.selector),
            ("grafana_url", args.grafana_url and args.grafana_url.rstrip("/")),
            ("runbook_url", args.runbook_url),
            ("slo_objective", args.ttft_objective),
            ("slo_threshold_s", args.ttft_threshold),
        )
        if value is not None
    }
    alerts = dict(cfg.alerts)
    for name, threshold in args.alert:
        if name not in alerts:
            known = ", ".join(sorted(alerts))
            raise MixinConfigError(f"--alert: unknown alert {name!r}; known: {known}")
        alerts[name] = replace(alerts[name], threshold=threshold)
    return replace(cfg, alerts=alerts, **changes).checked()


def dashboards_main(argv: Sequence[str]) -> int:
    """``streamwatch dashboards export DIR ...``; returns the exit status."""
    top = argparse.ArgumentParser(
        prog="streamwatch dashboards", description="The monitoring mixin shipped in the package."
    )
    top.add_argument("action", choices=["export"], help="export: write the files into DIR")
    args_list = list(argv)
    top.parse_args(args_list[:1])  # --help, or a usage error naming 'export'
    parser = export_parser()
    args = parser.parse_args(args_list[1:])
    try:
        cfg = export_config(args)
    except MixinConfigError as exc:
        parser.exit(2, f"streamwatch dashboards export: {exc}\n")
    written = []
    for name, text in documents(cfg):
        path = args.directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(name)
    print(f"wrote {', '.join(written)} under {args.directory}")
    return 0
