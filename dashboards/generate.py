"""Generate the streamwatch monitoring mixin: Grafana dashboards, Prometheus rules and alerts.

Plain Python on purpose: dashboards are JSON and rules are YAML, both already writable with the
standard library and PyYAML (a streamwatch runtime dependency), so the mixin needs no jsonnet
toolchain or grafanalib. Metric names come from :mod:`streamwatch.export.prometheus`, thresholds
from ``dashboards/config.yaml``, so nothing is pasted twice.

    python dashboards/generate.py           # rewrite the committed output
    python dashboards/generate.py --check   # exit 1 if the committed output is stale (CI)
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from streamwatch.export import prometheus as m  # noqa: E402

Json = dict[str, Any]

OVERVIEW_UID = "streamwatch-overview"
MODEL_UID = "streamwatch-model"
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (long window, short window, burn rate) pairs from the Google SRE workbook, "Alerting on SLOs".
PAGE_BURNS = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
TICKET_BURNS = (("1d", "2h", 3.0), ("3d", "6h", 1.0))


@dataclass(frozen=True, slots=True)
class Threshold:
    """One alert's threshold, ``for`` duration and severity."""

    threshold: float
    for_: str
    severity: str


@dataclass(frozen=True, slots=True)
class Config:
    """The mixin's configuration (``dashboards/config.yaml``)."""

    selector: str
    grafana_url: str
    runbook_url: str
    slo_objective: float
    slo_threshold_s: float
    alerts: dict[str, Threshold]

    @classmethod
    def from_yaml(cls, path: Path) -> Config:
        """Read and check the configuration file."""
        raw = yaml.safe_load(path.read_text())
        alerts = {
            name: Threshold(float(v.get("threshold", 0)), str(v["for"]), str(v["severity"]))
            for name, v in raw["alerts"].items()
        }
        cfg = cls(
            selector=raw["selector"],
            grafana_url=raw["grafana_url"].rstrip("/"),
            runbook_url=raw["runbook_url"],
            slo_objective=float(raw["ttft_slo"]["objective"]),
            slo_threshold_s=float(raw["ttft_slo"]["threshold_seconds"]),
            alerts=alerts,
        )
        if cfg.slo_threshold_s not in m.LATENCY_BUCKETS:
            raise SystemExit(
                f"ttft_slo.threshold_seconds={cfg.slo_threshold_s} is not a TTFT bucket bound "
                f"({', '.join(map(str, m.LATENCY_BUCKETS))})"
            )
        if not 0 < cfg.slo_objective < 1:
            raise SystemExit("ttft_slo.objective must be between 0 and 1")
        return cfg


def num(x: float) -> str:
    """A threshold as PromQL reads it, without float noise (0.7200000000000001 -> 0.72)."""
    return f"{round(x, 9):g}"


def le_matcher(bound: float) -> str:
    """Matches a bucket bound as client_python writes it ("10.0") and as Prometheus 3 does ("10")."""
    if bound == int(bound):
        return f'le=~"{int(bound)}(\\\\.0)?"'
    return f'le="{bound!r}"'


# --- recording rules ------------------------------------------------------------------------------

QUANTILES = {
    m.TIME_TO_FIRST_BYTE_SECONDS: (0.5, 0.95, 0.99),
    m.TIME_TO_FIRST_TOKEN_SECONDS: (0.5, 0.95, 0.99),
    m.INTER_CHUNK_GAP_SECONDS: (0.5, 0.99),
    m.OUTPUT_TOKENS_PER_SECOND: (0.1, 0.5, 0.9),
    m.STREAM_DURATION_SECONDS: (0.5, 0.95),
}
RAM = "route_api_model"


def bare(name: str) -> str:
    """Counter name without ``_total``, as recording rules name it."""
    return name.removesuffix("_total")


def slo_miss(window: str) -> str:
    """Recording rule name of the TTFT SLO miss ratio over ``window``."""
    return f"route:{m.TIME_TO_FIRST_TOKEN_SECONDS}:slo_miss_ratio_rate{window}"


TRUNCATED_RATIO = f"route:{bare(m.STREAMS_TOTAL)}_truncated:ratio_rate5m"
ERROR_FRAME_RATIO = f"route:{bare(m.STREAMS_TOTAL)}_error_frame:ratio_rate5m"
STALL_RATIO = f"route:{bare(m.STALLS_TOTAL)}_per_stream:ratio_rate5m"
UPSTREAM_RATIO = f"route:{bare(m.UPSTREAM_ERRORS_TOTAL)}:ratio_rate5m"
STREAM_RATE = f"route:{bare(m.STREAMS_TOTAL)}:rate5m"


def recording_rules(cfg: Config) -> Json:
    """Prometheus recording rules, ``level:metric:operations``."""
    s = cfg.selector
    rules: list[Json] = []
    for hist, qs in QUANTILES.items():
        buckets = f"{RAM}_le:{hist}_bucket:rate5m"
        rules.append(
            {
                "record": buckets,
                "expr": f"sum by (route, api, model, le) (rate({hist}_bucket{{{s}}}[5m]))",
            }
        )
        rules.extend(
            {
                "record": f"{RAM}:{hist}:p{round(q * 100)}_rate5m",
                "expr": f"histogram_quantile({q}, {buckets})",
            }
            for q in qs
        )
    streams, stalls = m.STREAMS_TOTAL, m.STALLS_TOTAL
    rules += [
        {
            "record": f"{RAM}_outcome:{bare(streams)}:rate5m",
            "expr": f"sum by (route, api, model, outcome) (rate({streams}{{{s}}}[5m]))",
        },
        {"record": STREAM_RATE, "expr": f"sum by (route) (rate({streams}{{{s}}}[5m]))"},
        {
            "record": TRUNCATED_RATIO,
            "expr": f'sum by (route) (rate({streams}{{{s}, outcome="truncated"}}[5m]))\n'
            f"/ {STREAM_RATE}",
        },
        {
            "record": ERROR_FRAME_RATIO,
            "expr": f'sum by (route) (rate({streams}{{{s}, outcome="error_frame"}}[5m]))\n'
            f"/ {STREAM_RATE}",
        },
        {
            "record": STALL_RATIO,
            "expr": f"sum by (route) (rate({stalls}{{{s}}}[5m]))\n/ {STREAM_RATE}",
        },
        {
            "record": UPSTREAM_RATIO,
            "expr": f"sum by (route) (rate({m.UPSTREAM_ERRORS_TOTAL}{{{s}}}[5m]))\n"
            f"/ sum by (route) (rate({m.REQUESTS_TOTAL}{{{s}}}[5m]))",
        },
    ]
    ttft, le = m.TIME_TO_FIRST_TOKEN_SECONDS, le_matcher(cfg.slo_threshold_s)
    rules.extend(
        {
            "record": slo_miss(w),
            "expr": f"1 - (\n  sum by (route) (rate({ttft}_bucket{{{s}, {le}}}[{w}]))\n"
            f"/ sum by (route) (rate({ttft}_count{{{s}}}[{w}]))\n)",
        }
        for w in SLO_WINDOWS
    )
    return {"groups": [{"name": "streamwatch.rules", "rules": rules}]}


# --- alerts ---------------------------------------------------------------------------------------


def alert(  # noqa: PLR0917 (each alert call reads as one table row)
    cfg: Config,
    name: str,
    expr: str,
    t: Threshold,
    summary: str,
    description: str,
    *,
    per_route: bool = True,
) -> Json:
    """One alert with the annotations every streamwatch alert carries."""
    link = f"{cfg.grafana_url}/d/{OVERVIEW_UID}/streamwatch-overview"
    if per_route:
        link += "?var-route={{ $labels.route }}"
    return {
        "alert": name,
        "expr": expr,
        "for": t.for_,
        "labels": {"severity": t.severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{cfg.runbook_url}#{name.lower()}",
            "dashboard_url": link,
        },
    }


def pct(x: float) -> str:
    return f"{num(x * 100)}%"


def alert_rules(cfg: Config) -> Json:
    """The ``Streamwatch<Symptom>`` alerts."""
    a, s = cfg.alerts, cfg.selector
    budget = 1 - cfg.slo_objective
    objective = (
        f"{pct(cfg.slo_objective)} of streams with a first token within {cfg.slo_threshold_s:g}s"
    )

    def burn(pairs: Sequence[tuple[str, str, float]]) -> str:
        return "\nor\n".join(
            f"({slo_miss(long)} > {num(rate * budget)}\n and {slo_miss(short)} > {num(rate * budget)})"
            for long, short, rate in pairs
        )

    per_route = "on route {{ $labels.route }}"
    rules = [
        alert(
            cfg,
            "StreamwatchStallRateHigh",
            f"{STALL_RATIO} > {num(a['stall_ratio'].threshold)}",
            a["stall_ratio"],
            "LLM streams are stalling: no output for longer than the stall threshold.",
            '{{ $value | printf "%.3g" }} stall episodes per ended stream '
            + per_route
            + f" over the last 5m (threshold {num(a['stall_ratio'].threshold)}).",
        ),
        alert(
            cfg,
            "StreamwatchTTFTSLOBurn",
            burn(PAGE_BURNS),
            Threshold(0, "2m", "critical"),
            "Time to first token is burning its error budget fast.",
            "Route {{ $labels.route }} misses the TTFT objective (" + objective + ") "
            "fast enough to spend the 30-day budget in under 2 days; "
            "{{ $value | humanizePercentage }} of streams missed it.",
        ),
        alert(
            cfg,
            "StreamwatchTTFTSLOBurn",
            burn(TICKET_BURNS),
            Threshold(0, "1h", "warning"),
            "Time to first token is burning its error budget.",
            "Route {{ $labels.route }} misses the TTFT objective (" + objective + ") "
            "fast enough to spend the 30-day budget early; "
            "{{ $value | humanizePercentage }} of streams missed it.",
        ),
        alert(
            cfg,
            "StreamwatchTruncationRateHigh",
            f"{TRUNCATED_RATIO} > {num(a['truncation_ratio'].threshold)}",
            a["truncation_ratio"],
            "LLM streams end without their terminal frame.",
            "{{ $value | humanizePercentage }} of streams " + per_route + " were cut off by "
            f"upstream over the last 5m (threshold {pct(a['truncation_ratio'].threshold)}).",
        ),
        alert(
            cfg,
            "StreamwatchErrorFrameRateHigh",
            f"{ERROR_FRAME_RATIO} > {num(a['error_frame_ratio'].threshold)}",
            a["error_frame_ratio"],
            "LLM streams fail with mid-stream error events.",
            "{{ $value | humanizePercentage }} of streams " + per_route + " ended with an "
            f"error frame over the last 5m (threshold {pct(a['error_frame_ratio'].threshold)}).",
        ),
        alert(
            cfg,
            "StreamwatchUpstreamErrorsHigh",
            f"{UPSTREAM_RATIO} > {num(a['upstream_error_ratio'].threshold)}",
            a["upstream_error_ratio"],
            "Requests fail to reach the upstream gateway.",
            "{{ $value | humanizePercentage }} of requests " + per_route + " failed before "
            "upstream answered (connect, timeout or protocol error) over the last 5m "
            f"(threshold {pct(a['upstream_error_ratio'].threshold)}).",
        ),
        alert(
            cfg,
            "StreamwatchAnalysisFailing",
            f'sum by (route) (rate({m.ANALYSIS_ERRORS_TOTAL}{{{s}, stage="analyzer"}}[5m]))'
            f" > {num(a['analysis_errors_per_second'].threshold)}",
            a["analysis_errors_per_second"],
            "The stream analyzer is failing; streams pass through unmeasured.",
            'The analyzer raised {{ $value | printf "%.3g" }} times per second '
            + per_route
            + " over the last 5m; those streams are forwarded but missing from the metrics.",
        ),
        alert(
            cfg,
            "StreamwatchTargetDown",
            f"up{{{s}}} == 0",
            a["target_down"],
            "Prometheus cannot scrape a streamwatch instance.",
            "{{ $labels.instance }} of job {{ $labels.job }} has been down for more than "
            f"{a['target_down'].for_}; its streams are not measured and the gateway behind it "
            "may be unreachable.",
            per_route=False,
        ),
        alert(
            cfg,
            "StreamwatchAbsent",
            f"absent(up{{{s}}})",
            a["absent"],
            "No streamwatch target is being scraped.",
            f"Prometheus has no target matching {{{s}}} for more than {a['absent'].for_}; "
            "check the scrape configuration or the ServiceMonitor.",
            per_route=False,
        ),
    ]
    return {"groups": [{"name": "streamwatch.alerts", "rules": rules}]}


# --- dashboards -----------------------------------------------------------------------------------

DS = {"type": "prometheus", "uid": "${datasource}"}
FULL = 'job=~"$job", instance=~"$instance", route=~"$route", api=~"$api", model=~"$model"'
ROUTE_API = 'job=~"$job", instance=~"$instance", route=~"$route", api=~"$api"'
ROUTE_ONLY = 'job=~"$job", instance=~"$instance", route=~"$route"'
RI = "$__rate_interval"


def target(expr: str, legend: str, *, ref: str = "A", exemplar: bool = False) -> Json:
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "exemplar": exemplar,
        "range": True,
    }


def targets(*pairs: tuple[str, str], exemplar: bool = False) -> list[Json]:
    return [
        target(e, leg, ref=chr(ord("A") + i), exemplar=exemplar) for i, (e, leg) in enumerate(pairs)
    ]


def quantiles(hist: str, sel: str, qs: Sequence[float], by: str = "") -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    prefix = "{{" + by + "}} " if by else ""
    return [
        (
            f"histogram_quantile({q}, sum by ({group}) (rate({hist}_bucket{{{sel}}}[{RI}])))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in qs
    ]


class Layout:
    """Places panels left to right, 24 columns wide, assigning ids."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1
        self.panels: list[Json] = []

    def row(self, title: str) -> None:
        self.y += self.row_h
        self.x = self.row_h = 0
        self._add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        self.y += 1

    def _add(self, panel: Json, w: int, h: int) -> None:
        if self.x + w > 24:
            self.y += self.row_h
            self.x = self.row_h = 0
        panel["id"] = self.next_id
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)

    def timeseries(
        self,
        title: str,
        description: str,
        tgts: list[Json],
        *,
        unit: str = "short",
        w: int = 8,
        stack: bool = False,
    ) -> None:
        custom: Json = {"fillOpacity": 20 if stack else 0, "showPoints": "never"}
        if stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
        self._add(
            {
                "type": "timeseries",
                "title": title,
                "description": description,
                "datasource": DS,
                "targets": tgts,
                "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"},
                },
            },
            w,
            8,
        )

    def stat(self, title: str, description: str, expr: str, *, unit: str = "short") -> None:
        self._add(
            {
                "type": "stat",
                "title": title,
                "description": description,
                "datasource": DS,
                "targets": [target(expr, title)],
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
            },
            4,
            4,
        )

    def heatmap(self, title: str, description: str, hist: str, sel: str, *, unit: str) -> None:
        tgt = target(
            f"sum by (le) (increase({hist}_bucket{{{sel}}}[{RI}]))", "{{le}}", exemplar=True
        )
        tgt["format"] = "heatmap"
        self._add(
            {
                "type": "heatmap",
                "title": title,
                "description": description,
                "datasource": DS,
                "targets": [tgt],
                "options": {
                    "calculate": False,
                    "yAxis": {"unit": unit},
                    "cellGap": 1,
                    "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5},
                    "exemplars": {"color": "rgba(255,0,255,0.7)"},
                    "tooltip": {"show": True, "yHistogram": True},
                },
                "fieldConfig": {"defaults": {}, "overrides": []},
            },
            12,
            8,
        )


def variable(name: str, query: str, *, multi: bool = True, label: str | None = None) -> Json:
    return {
        "name": name,
        "label": label or name,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "allValue": ".*" if multi else None,
        "current": {},
        "options": [],
    }


def templating(*, model_multi: bool = True) -> Json:
    info = m.BUILD_INFO
    streams = m.STREAMS_TOTAL
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "options": [],
                "refresh": 1,
            },
            variable("job", f"label_values({info}, job)"),
            variable("instance", f'label_values({info}{{job=~"$job"}}, instance)'),
            variable("route", f'label_values({streams}{{job=~"$job"}}, route)'),
            variable("api", f'label_values({streams}{{job=~"$job", route=~"$route"}}, api)'),
            variable(
                "model",
                f'label_values({streams}{{job=~"$job", route=~"$route", api=~"$api"}}, model)',
                multi=model_multi,
            ),
        ]
    }


def dashboard(uid: str, title: str, description: str, layout: Layout, tmpl: Json) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["streamwatch", "llm"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "templating": tmpl,
        "annotations": {"list": []},
        "links": [
            {
                "title": "streamwatch dashboards",
                "type": "dashboards",
                "tags": ["streamwatch"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": layout.panels,
    }


def rate_by(metric: str, sel: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{RI}]))"


def overview(cfg: Config) -> Json:
    """The fleet overview: traffic, latency, outcomes, tokens and self-health."""
    lay = Layout()
    lay.row("Traffic")
    lay.stat(
        "Active streams", "SSE streams open right now.", f"sum({m.STREAMS_ACTIVE}{{{ROUTE_API}}})"
    )
    lay.stat(
        "Stalled now",
        "Open streams with no output for longer than the stall threshold.",
        f"sum({m.STREAMS_STALLED}{{{ROUTE_API}}})",
    )
    lay.stat(
        "Streams / s",
        "SSE streams ended per second.",
        f"sum(rate({m.STREAMS_TOTAL}{{{FULL}}}[{RI}]))",
        unit="reqps",
    )
    lay.stat(
        "Truncated",
        "Share of streams upstream closed without the terminal frame.",
        f'sum(rate({m.STREAMS_TOTAL}{{{FULL}, outcome="truncated"}}[{RI}]))'
        f" / sum(rate({m.STREAMS_TOTAL}{{{FULL}}}[{RI}]))",
        unit="percentunit",
    )
    lay.stat(
        "TTFT p95",
        "95th percentile time to first token.",
        f"histogram_quantile(0.95, sum by (le) "
        f"(rate({m.TIME_TO_FIRST_TOKEN_SECONDS}_bucket{{{FULL}}}[{RI}])))",
        unit="s",
    )
    lay.stat(
        "Version",
        "streamwatch versions running (count of instances).",
        f'count by (version) ({m.BUILD_INFO}{{job=~"$job", instance=~"$instance"}})',
    )
    lay.timeseries(
        "Request rate by status",
        "Every proxied request, streaming or not, by the status returned to the client.",
        targets((rate_by(m.REQUESTS_TOTAL, FULL, "code"), "{{code}}")),
        unit="reqps",
        stack=True,
    )
    lay.timeseries(
        "Stream rate by API",
        "SSE streams ended per second, by protocol.",
        targets((rate_by(m.STREAMS_TOTAL, FULL, "api"), "{{api}}")),
        unit="reqps",
        stack=True,
    )
    lay.timeseries(
        "Active and stalled streams",
        "Open SSE streams, and those stalled right now.",
        targets(
            (f"sum by (route) ({m.STREAMS_ACTIVE}{{{ROUTE_API}}})", "{{route}} active"),
            (f"sum by (route) ({m.STREAMS_STALLED}{{{ROUTE_API}}})", "{{route}} stalled"),
        ),
    )
    lay.row("Latency")
    lay.timeseries(
        "Time to first byte",
        "Request headers to the first upstream body byte; click an exemplar for its trace.",
        targets(*quantiles(m.TIME_TO_FIRST_BYTE_SECONDS, FULL, (0.5, 0.95, 0.99)), exemplar=True),
        unit="s",
    )
    lay.timeseries(
        "Time to first token",
        "Request headers to the first output event; click an exemplar for its trace.",
        targets(*quantiles(m.TIME_TO_FIRST_TOKEN_SECONDS, FULL, (0.5, 0.95, 0.99)), exemplar=True),
        unit="s",
    )
    lay.timeseries(
        "Inter-chunk gap",
        "Time between consecutive output events; p99 shows hiccups, stalls land in the top buckets.",
        targets(*quantiles(m.INTER_CHUNK_GAP_SECONDS, FULL, (0.5, 0.99)), exemplar=True),
        unit="s",
    )
    lay.heatmap(
        "Inter-chunk gap distribution",
        "Every gap between output events, by bucket.",
        m.INTER_CHUNK_GAP_SECONDS,
        FULL,
        unit="s",
    )
    lay.heatmap(
        "Time to first token distribution",
        "Every TTFT, by bucket.",
        m.TIME_TO_FIRST_TOKEN_SECONDS,
        FULL,
        unit="s",
    )
    lay.timeseries(
        "Decode rate (output tokens/s)",
        "Per-stream decode rate: (output tokens - 1) / generation time; p10 is the slow tail.",
        targets(*quantiles(m.OUTPUT_TOKENS_PER_SECOND, FULL, (0.1, 0.5, 0.9)), exemplar=True),
    )
    lay.heatmap(
        "Decode rate distribution",
        "Per-stream output tokens per second, by bucket.",
        m.OUTPUT_TOKENS_PER_SECOND,
        FULL,
        unit="short",
    )
    lay.timeseries(
        "Stream duration",
        "Request headers to stream end.",
        targets(*quantiles(m.STREAM_DURATION_SECONDS, FULL, (0.5, 0.95)), exemplar=True),
        unit="s",
    )
    lay.row("Outcomes")
    lay.timeseries(
        "Outcomes",
        "How streams ended: completed, truncated, error_frame, client_abort, upstream_reset, ...",
        targets((rate_by(m.STREAMS_TOTAL, FULL, "outcome"), "{{outcome}}")),
        unit="reqps",
        stack=True,
    )
    lay.timeseries(
        "Finish reasons",
        "Finish reasons as providers reported them (length/max_tokens are budget cuts, not errors).",
        targets((rate_by(m.FINISH_REASONS_TOTAL, FULL, "finish_reason"), "{{finish_reason}}")),
        unit="reqps",
        stack=True,
    )
    lay.timeseries(
        "Truncation and error-frame ratio",
        "Share of ended streams that were truncated by upstream or ended with an error frame.",
        targets(
            (
                f'sum by (route) (rate({m.STREAMS_TOTAL}{{{FULL}, outcome="truncated"}}[{RI}]))'
                f" / sum by (route) (rate({m.STREAMS_TOTAL}{{{FULL}}}[{RI}]))",
                "{{route}} truncated",
            ),
            (
                f'sum by (route) (rate({m.STREAMS_TOTAL}{{{FULL}, outcome="error_frame"}}[{RI}]))'
                f" / sum by (route) (rate({m.STREAMS_TOTAL}{{{FULL}}}[{RI}]))",
                "{{route}} error frame",
            ),
        ),
        unit="percentunit",
    )
    lay.timeseries(
        "Error frames by type",
        "Mid-stream error events per second, by provider error type.",
        targets((rate_by(m.ERROR_FRAMES_TOTAL, FULL, "error_type"), "{{error_type}}")),
        unit="reqps",
        stack=True,
    )
    lay.timeseries(
        "Stalls",
        "Stall episodes per second, before the first token and mid-stream.",
        targets((rate_by(m.STALLS_TOTAL, FULL, "phase"), "{{phase}}")),
        unit="reqps",
        stack=True,
    )
    lay.row("Tokens")
    lay.timeseries(
        "Tokens by type",
        "Reported usage: input, output, reasoning and cached input tokens per second.",
        targets((rate_by(m.TOKENS_TOTAL, FULL, "type"), "{{type}}")),
    )
    lay.timeseries(
        "Output events",
        "Output events (text, reasoning, refusal and tool-call deltas) per second, by model.",
        targets((rate_by(m.OUTPUT_EVENTS_TOTAL, FULL, "model"), "{{model}}")),
    )
    lay.timeseries(
        "Tokens delivered on streams without a usage report",
        "Output tokens per second delivered by streams that never reported usage (cut, aborted, "
        "failed, or usage not asked for), estimated from their output events, by model.",
        targets(
            (
                rate_by(m.DELIVERED_OUTPUT_TOKENS_TOTAL, f'{FULL}, source="estimated"', "model"),
                "{{model}}",
            )
        ),
    )
    lay.row("Upstream and self-health")
    lay.timeseries(
        "Upstream errors",
        "Requests that failed before upstream answered, by kind.",
        targets(
            (rate_by(m.UPSTREAM_ERRORS_TOTAL, ROUTE_ONLY, "route, kind"), "{{route}} {{kind}}")
        ),
        unit="reqps",
        w=12,
    )
    lay.timeseries(
        "Analysis errors",
        "Analyzer faults, malformed frames and oversize events (bytes were still forwarded).",
        targets((rate_by(m.ANALYSIS_ERRORS_TOTAL, ROUTE_API, "stage"), "{{stage}}")),
        unit="reqps",
        w=12,
    )
    return dashboard(
        OVERVIEW_UID,
        "streamwatch / Overview",
        "LLM token streams as streamwatch measured them: TTFT, gaps, stalls, outcomes, tokens.",
        lay,
        templating(),
    )


def model_drilldown(cfg: Config) -> Json:
    """One model across routes and APIs: latency, decode rate, outcomes, usage."""
    lay = Layout()
    lay.row("$model")
    by = "route"
    lay.timeseries(
        "Time to first token by route",
        "TTFT percentiles per route for this model.",
        targets(
            *quantiles(m.TIME_TO_FIRST_TOKEN_SECONDS, FULL, (0.5, 0.95, 0.99), by), exemplar=True
        ),
        unit="s",
        w=12,
    )
    lay.timeseries(
        "Time to first byte by route",
        "TTFB percentiles per route for this model.",
        targets(*quantiles(m.TIME_TO_FIRST_BYTE_SECONDS, FULL, (0.5, 0.95), by), exemplar=True),
        unit="s",
        w=12,
    )
    lay.timeseries(
        "Decode rate by route",
        "Output tokens per second percentiles per route.",
        targets(*quantiles(m.OUTPUT_TOKENS_PER_SECOND, FULL, (0.1, 0.5, 0.9), by), exemplar=True),
        w=12,
    )
    lay.timeseries(
        "Inter-chunk gap by route",
        "Gap percentiles per route.",
        targets(*quantiles(m.INTER_CHUNK_GAP_SECONDS, FULL, (0.5, 0.99), by), exemplar=True),
        unit="s",
        w=12,
    )
    lay.heatmap(
        "Time to first token distribution",
        "Every TTFT of this model, by bucket.",
        m.TIME_TO_FIRST_TOKEN_SECONDS,
        FULL,
        unit="s",
    )
    lay.heatmap(
        "Inter-chunk gap distribution",
        "Every gap of this model, by bucket.",
        m.INTER_CHUNK_GAP_SECONDS,
        FULL,
        unit="s",
    )
    lay.timeseries(
        "Outcomes",
        "How this model's streams ended.",
        targets((rate_by(m.STREAMS_TOTAL, FULL, "outcome"), "{{outcome}}")),
        unit="reqps",
        stack=True,
    )
    lay.timeseries(
        "Finish reasons",
        "Finish reasons this model reported.",
        targets((rate_by(m.FINISH_REASONS_TOTAL, FULL, "finish_reason"), "{{finish_reason}}")),
        unit="reqps",
        stack=True,
    )
    lay.timeseries(
        "Error frames and stalls",
        "Mid-stream errors by type and stall episodes by phase.",
        targets(
            (rate_by(m.ERROR_FRAMES_TOTAL, FULL, "error_type"), "error {{error_type}}"),
            (rate_by(m.STALLS_TOTAL, FULL, "phase"), "stall {{phase}}"),
        ),
        unit="reqps",
    )
    lay.timeseries(
        "Tokens by type",
        "Reported usage of this model per second.",
        targets((rate_by(m.TOKENS_TOTAL, FULL, "type"), "{{type}}")),
        w=12,
    )
    lay.timeseries(
        "Stream duration",
        "Request headers to stream end.",
        targets(*quantiles(m.STREAM_DURATION_SECONDS, FULL, (0.5, 0.95), by), exemplar=True),
        unit="s",
        w=12,
    )
    return dashboard(
        MODEL_UID,
        "streamwatch / Model",
        "One model across routes and APIs.",
        lay,
        templating(model_multi=False),
    )


# --- Kubernetes PrometheusRule --------------------------------------------------------------------


def prometheus_rule(cfg: Config) -> Json:
    """The same rules as a prometheus-operator PrometheusRule."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "streamwatch",
            "labels": {"app.kubernetes.io/name": "streamwatch", "role": "alert-rules"},
        },
        "spec": {
            "groups": recording_rules(cfg)["groups"] + alert_rules(cfg)["groups"],
        },
    }


# --- output ---------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)

HEADER = "# Generated by dashboards/generate.py from dashboards/config.yaml; do not edit.\n"


def dump_yaml(doc: Json) -> str:
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=4096)


def dump_json(doc: Json) -> str:
    return json.dumps(doc, indent=2) + "\n"


def outputs(cfg: Config) -> Iterator[tuple[Path, str]]:
    """Every generated file and its content."""
    yield ROOT / "grafana" / "streamwatch-overview.json", dump_json(overview(cfg))
    yield ROOT / "grafana" / "streamwatch-model.json", dump_json(model_drilldown(cfg))
    yield ROOT / "prometheus" / "recording_rules.yml", dump_yaml(recording_rules(cfg))
    yield ROOT / "prometheus" / "alerts.yml", dump_yaml(alert_rules(cfg))
    yield REPO / "deploy" / "kubernetes" / "prometheusrule.yaml", dump_yaml(prometheus_rule(cfg))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="diff instead of writing; exit 1 if stale"
    )
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    args = parser.parse_args(argv)
    cfg = Config.from_yaml(args.config)
    stale = 0
    for path, text in outputs(cfg):
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale += 1
            rel = path.relative_to(REPO)
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"{rel} (committed)",
                    f"{rel} (generated)",
                )
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print(f"{stale} generated file(s) are stale: run python dashboards/generate.py")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
