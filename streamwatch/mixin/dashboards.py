"""The two dashboards: the fleet overview and one model across routes and APIs."""

from __future__ import annotations

from streamwatch import metricspec as spec
from streamwatch.core.record import Outcome
from streamwatch.mixin.config import Config
from streamwatch.mixin.panels import Json, Layout, dashboard, rate_by, targets, templating
from streamwatch.mixin.promql import RATE_INTERVAL as RI
from streamwatch.mixin.promql import (
    REAL_TRAFFIC,
    dashboard_selector,
    legend,
    matchers,
    probe_selector,
    quantile,
    sum_rate,
)
from streamwatch.mixin.rules import MODEL_UID, OVERVIEW_UID


def _share(outcome: Outcome, *labels: str) -> str:
    """Share of ended streams with ``outcome``."""
    streams = spec.STREAMS
    part = sum_rate(streams, dashboard_selector(streams, outcome=outcome), *labels)
    return f"{part} / {sum_rate(streams, dashboard_selector(streams), *labels)}"


TARGET = 'job=~"$job", instance=~"$instance"'


def _goodput(lay: Layout) -> None:
    """Streams judged against their route's objectives: attainment and why they missed."""
    lay.row("Goodput")
    met, missed = spec.SLO_MET, spec.SLO_MISSED
    met_rate = sum_rate(met, dashboard_selector(met), spec.ROUTE)
    missed_rate = sum_rate(missed, dashboard_selector(missed), spec.ROUTE)
    lay.timeseries(
        "Goodput attainment",
        "Share of judged streams that completed and met every objective of their route "
        "(TTFT, time per output token, no stall).",
        targets((f"{met_rate}\n/ ({met_rate} + {missed_rate})", legend(spec.ROUTE))),
        unit="percentunit",
        w=12,
    )
    lay.timeseries(
        "Objectives missed",
        "Judged streams per second that missed an objective, by the first one missed.",
        targets(rate_by(missed, spec.REASON)),
        unit="reqps",
        w=12,
        stack=True,
    )


def _self_health(lay: Layout) -> None:
    """streamwatch itself: CPU, memory, file descriptors, event-loop lag, connections, routes."""
    lay.row("streamwatch itself")
    lay.timeseries(
        "CPU",
        "CPU seconds per second of each streamwatch process (1 = one core busy).",
        targets(
            (
                f"sum by (instance) (rate(process_cpu_seconds_total{{{TARGET}}}[{RI}]))",
                "{{instance}}",
            )
        ),
    )
    lay.timeseries(
        "Resident memory",
        "Resident set size of each streamwatch process.",
        targets((f"process_resident_memory_bytes{{{TARGET}}}", "{{instance}}")),
        unit="bytes",
    )
    lay.timeseries(
        "Open file descriptors",
        "Sockets and files open, against the process limit (client and upstream connections).",
        targets(
            (f"process_open_fds{{{TARGET}}}", "{{instance}} open"),
            (f"process_max_fds{{{TARGET}}}", "{{instance}} limit"),
        ),
    )
    lag = spec.EVENT_LOOP_LAG
    lay.timeseries(
        "Event-loop lag",
        "How late the watchdog's tick ran: while the loop is busy elsewhere, every stream waits.",
        targets(
            (quantile(0.99, lag, dashboard_selector(lag), "instance"), "{{instance}} p99"),
            (quantile(0.5, lag, dashboard_selector(lag), "instance"), "{{instance}} p50"),
            exemplar=True,
        ),
        unit="s",
    )
    connections = spec.CLIENT_CONNECTIONS
    lay.timeseries(
        "Client connections",
        "Connections open on the proxy port.",
        targets(
            (
                f"sum by (instance) ({connections.name}{{{dashboard_selector(connections)}}})",
                "{{instance}}",
            )
        ),
    )
    lay.timeseries(
        "Refused connections",
        "Client connections refused before a request was read: over --max-connections, or "
        "accept() out of file descriptors.",
        targets(rate_by(spec.CONNECTIONS_REFUSED, spec.REASON)),
        unit="cps",
    )
    lay.timeseries(
        "Stream captures",
        "serve --capture-dir captures by result: saved, skipped (completed cleanly), or dropped "
        "(too large, writer behind, no room, disk error). Empty unless --capture-dir is set.",
        targets(rate_by(spec.CAPTURES, spec.RESULT)),
        unit="ops",
    )
    lay.timeseries(
        "Dropped log lines",
        "Log lines dropped, never waited for: the reader of stderr stopped reading (a stuck log "
        "shipper) and --log-queue filled, or the write failed. The streams were not held back.",
        targets(rate_by(spec.LOG_LINES_DROPPED, "instance")),
        unit="ops",
    )
    info = spec.ROUTE_INFO
    lay.timeseries(
        "Configured routes",
        "Each route and its upstream origin, per instance (1 while configured).",
        targets(
            (
                f'count by (route, upstream) ({info.name}{{{TARGET}, route=~"$route", {REAL_TRAFFIC}}})',
                "{{route}} → {{upstream}}",
            )
        ),
    )


def _synthetic_probe(lay: Layout) -> None:
    """``streamwatch probe``'s canary streams, per target: verdicts, freshness, TTFT, results."""
    lay.row("Synthetic probe")
    success, last, probes, ttft = (
        spec.PROBE_SUCCESS,
        spec.PROBE_LAST_SUCCESS,
        spec.PROBES,
        spec.TTFT,
    )
    target_legend = legend(spec.TARGET)
    lay.timeseries(
        "Probe success",
        "1 while a target's last probe passed (200, output, completed), 0 after a failed one.",
        targets((f"max by (target) ({success.name}{{{probe_selector(success)}}})", target_legend)),
        w=6,
    )
    lay.timeseries(
        "Since the last passing probe",
        "Seconds since each target last passed; grows by the probe interval per failed probe.",
        targets(
            (f"time() - max by (target) ({last.name}{{{probe_selector(last)}}})", target_legend)
        ),
        unit="s",
        w=6,
    )
    lay.timeseries(
        "Probe time to first token",
        "p50 and p95 time to first token of the canary streams, per target (route = target).",
        targets(
            *(
                (quantile(q, ttft, probe_selector(ttft), spec.ROUTE), f"{{{{route}}}} p{p}")
                for q, p in ((0.5, 50), (0.95, 95))
            ),
            exemplar=True,
        ),
        unit="s",
        w=6,
    )
    failures = spec.PROBE_FAILURES
    passed = ", ".join([probe_selector(probes), *matchers(probes, result=spec.PROBE_PASSED)])
    lay.timeseries(
        "Probe results",
        "Passing probes per second by target, and failing ones by why: before any response "
        "connect, tls, timeout or protocol; then http_status, not_a_stream, the stream's outcome "
        "or no_output.",
        targets(
            (sum_rate(probes, passed, spec.TARGET), legend(spec.TARGET) + " passed"),
            (
                sum_rate(failures, probe_selector(failures), spec.TARGET, spec.REASON),
                legend(spec.TARGET, spec.REASON),
            ),
        ),
        unit="reqps",
        w=6,
        stack=True,
    )


def overview(cfg: Config) -> Json:
    """The fleet overview: traffic, latency, outcomes, tokens and self-health."""
    lay = Layout()
    lay.row("Traffic")
    active, stalled = spec.STREAMS_ACTIVE, spec.STREAMS_STALLED
    lay.stat(
        "Active streams",
        "SSE streams open right now.",
        f"sum({active.name}{{{dashboard_selector(active)}}})",
    )
    lay.stat(
        "Stalled now",
        "Open streams with no output for longer than the stall threshold.",
        f"sum({stalled.name}{{{dashboard_selector(stalled)}}})",
    )
    lay.stat(
        "Streams / s",
        "SSE streams ended per second.",
        sum_rate(spec.STREAMS, dashboard_selector(spec.STREAMS)),
        unit="reqps",
    )
    lay.stat(
        "Truncated",
        "Share of streams upstream closed without the terminal frame.",
        _share(Outcome.TRUNCATED),
        unit="percentunit",
    )
    lay.stat(
        "TTFT p95",
        "95th percentile time to first token.",
        quantile(0.95, spec.TTFT, dashboard_selector(spec.TTFT)),
        unit="s",
    )
    lay.stat(
        "Version",
        "streamwatch versions running (count of instances).",
        f'count by ({spec.VERSION}) ({spec.BUILD_INFO.name}{{job=~"$job", instance=~"$instance"}})',
    )
    lay.timeseries(
        "Request rate by status",
        "Every proxied request, streaming or not, by the status returned to the client.",
        targets(rate_by(spec.REQUESTS, spec.CODE)),
        unit="reqps",
        stack=True,
    )
    lay.timeseries(
        "Stream rate by API",
        "SSE streams ended per second, by protocol.",
        targets(rate_by(spec.STREAMS, spec.API)),
        unit="reqps",
        stack=True,
    )
    route = legend(spec.ROUTE)
    lay.timeseries(
        "Active and stalled streams",
        "Open SSE streams, and those stalled right now.",
        targets(
            (f"sum by (route) ({active.name}{{{dashboard_selector(active)}}})", f"{route} active"),
            (
                f"sum by (route) ({stalled.name}{{{dashboard_selector(stalled)}}})",
                f"{route} stalled",
            ),
        ),
    )
    lay.row("Latency")
    lay.percentiles(
        spec.TTFB,
        (0.5, 0.95, 0.99),
        "Time to first byte",
        "Request headers to the first upstream body byte; click an exemplar for its trace.",
    )
    lay.percentiles(
        spec.TTFT,
        (0.5, 0.95, 0.99),
        "Time to first token",
        "Request headers to the first output event; click an exemplar for its trace.",
    )
    lay.percentiles(
        spec.TTFT,
        (0.5, 0.95),
        "Time to first token by side",
        "Client side (in front of the gateway) beside provider side (between the gateway and the"
        " providers): the difference is the time the gateway added. Pick the gateway's alias and"
        " the provider's model under model (docs/provider-side.md).",
        by=spec.SIDE,
    )
    lay.percentiles(
        spec.GAP,
        (0.5, 0.99),
        "Inter-chunk gap",
        "Time between consecutive output events; p99 shows hiccups, stalls land in the top buckets.",
    )
    lay.heatmap(
        "Inter-chunk gap distribution", "Every gap between output events, by bucket.", spec.GAP
    )
    lay.heatmap("Time to first token distribution", "Every TTFT, by bucket.", spec.TTFT)
    lay.percentiles(
        spec.TOKENS_PER_SECOND,
        (0.1, 0.5, 0.9),
        "Decode rate (output tokens/s)",
        "Per-stream decode rate: (output tokens - 1) / generation time; p10 is the slow tail.",
    )
    lay.heatmap(
        "Decode rate distribution",
        "Per-stream output tokens per second, by bucket.",
        spec.TOKENS_PER_SECOND,
    )
    lay.percentiles(spec.DURATION, (0.5, 0.95), "Stream duration", "Request headers to stream end.")
    lay.percentiles(
        spec.UPSTREAM_REPORTED,
        (0.5,),
        "Upstream-reported durations (p50)",
        "What the provider or gateway says it spent (Bedrock latencyMs and invocation metrics,"
        " Ollama's load/prompt/eval durations; Envoy, OpenAI and LiteLLM timing headers), beside"
        " the TTFT and duration measured here.",
        by=spec.TIMING,
    )
    lay.row("Outcomes")
    lay.outcomes(
        "How streams ended: completed, truncated, error_frame, client_abort, upstream_reset, ..."
    )
    lay.finish_reasons(
        "Finish reasons as providers reported them (length/max_tokens are budget cuts, not errors)."
    )
    lay.timeseries(
        "Truncation and error-frame ratio",
        "Share of ended streams that were truncated by upstream or ended with an error frame.",
        targets(
            (_share(Outcome.TRUNCATED, spec.ROUTE), f"{route} truncated"),
            (_share(Outcome.ERROR_FRAME, spec.ROUTE), f"{route} error frame"),
        ),
        unit="percentunit",
    )
    lay.timeseries(
        "Error frames by type",
        "Mid-stream error events per second, by provider error type.",
        targets(rate_by(spec.ERROR_FRAMES, spec.ERROR_TYPE)),
        unit="reqps",
        stack=True,
    )
    lay.timeseries(
        "Stalls",
        "Stall episodes per second, before the first token and mid-stream.",
        targets(rate_by(spec.STALLS, spec.PHASE)),
        unit="reqps",
        stack=True,
    )
    lay.row("Tokens")
    lay.tokens("Reported usage: input, output, reasoning and cached input tokens per second.")
    lay.timeseries(
        "Output events",
        "Output events (text, reasoning, refusal and tool-call deltas) per second, by API.",
        targets(rate_by(spec.OUTPUT_EVENTS, spec.API)),
        w=12,
    )
    lay.timeseries(
        "Tokens delivered on streams without a usage report",
        "Output tokens per second delivered by streams that never reported usage (cut, aborted, "
        "failed, or usage not asked for), estimated from their output events, by API.",
        targets(
            (
                sum_rate(
                    spec.DELIVERED_OUTPUT_TOKENS,
                    dashboard_selector(
                        spec.DELIVERED_OUTPUT_TOKENS, **{spec.USAGE: spec.USAGE_ESTIMATED}
                    ),
                    spec.API,
                ),
                legend(spec.API),
            )
        ),
        w=12,
    )
    lay.row("Upstream and self-health")
    lay.timeseries(
        "Upstream errors and retries",
        "Requests that failed before upstream answered, by kind; and requests sent again because "
        "a reused keep-alive connection closed before answering (the upstream's idle timeout).",
        targets(
            rate_by(spec.UPSTREAM_ERRORS, spec.ROUTE, spec.KIND),
            (rate_by(spec.UPSTREAM_RETRIES, spec.ROUTE)[0], "{{route}} retried"),
        ),
        unit="reqps",
        w=12,
    )
    lay.timeseries(
        "Analysis errors",
        "Analyzer faults, malformed frames and oversize events (bytes were still forwarded).",
        targets(rate_by(spec.ANALYSIS_ERRORS, spec.STAGE)),
        unit="reqps",
        w=12,
    )
    _goodput(lay)
    _synthetic_probe(lay)
    _self_health(lay)
    return dashboard(
        OVERVIEW_UID,
        "streamwatch / Overview",
        "LLM token streams as streamwatch measured them: TTFT, gaps, stalls, outcomes, tokens.",
        lay,
        templating(),
    )


def model_drilldown(cfg: Config) -> Json:
    """One model across routes: the families sliced by model. The others (TTFB, duration, finish
    reasons, tokens, stalls, error frames) are per route and API only, to keep the series budget;
    the overview shows them."""
    lay = Layout()
    lay.row("$model")
    by = spec.ROUTE
    lay.percentiles(
        spec.TTFT,
        (0.5, 0.95, 0.99),
        "Time to first token by route",
        "TTFT percentiles per route for this model.",
        w=12,
        by=by,
    )
    lay.heatmap(
        "Time to first token distribution", "Every TTFT of this model, by bucket.", spec.TTFT
    )
    lay.percentiles(
        spec.GAP, (0.5, 0.99), "Inter-chunk gap by route", "Gap percentiles per route.", w=12, by=by
    )
    lay.heatmap("Inter-chunk gap distribution", "Every gap of this model, by bucket.", spec.GAP)
    lay.percentiles(
        spec.TOKENS_PER_SECOND,
        (0.1, 0.5, 0.9),
        "Decode rate by route",
        "Output tokens per second percentiles per route.",
        w=12,
        by=by,
    )
    lay.outcomes("How this model's streams ended.", w=12)
    met = spec.SLO_MET
    lay.timeseries(
        "Streams that met their objectives",
        "Streams of this model per second that completed and met every goodput objective.",
        targets(rate_by(met, spec.ROUTE)),
        unit="reqps",
        w=12,
    )
    return dashboard(
        MODEL_UID,
        "streamwatch / Model",
        "One model across routes and APIs.",
        lay,
        templating(model_multi=False),
    )
