"""Prometheus recording rules (``level:metric:operations``), the alerts, and the PrometheusRule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from streamwatch import metricspec as spec
from streamwatch.core.record import Outcome
from streamwatch.mixin.config import Config, Threshold
from streamwatch.mixin.promql import (
    PROBE_TRAFFIC,
    le_matcher,
    num,
    rule_selector,
    sum_rate,
)

Json = dict[str, Any]

OVERVIEW_UID = "streamwatch-overview"
MODEL_UID = "streamwatch-model"
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (long window, short window, burn rate) pairs from the Google SRE workbook, "Alerting on SLOs".
PAGE_BURNS = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
TICKET_BURNS = (("1d", "2h", 3.0), ("3d", "6h", 1.0))

#: The quantiles recorded per histogram.
QUANTILES: dict[spec.Family, tuple[float, ...]] = {
    spec.TTFB: (0.5, 0.95, 0.99),
    spec.TTFT: (0.5, 0.95, 0.99),
    spec.GAP: (0.5, 0.99),
    spec.TOKENS_PER_SECOND: (0.1, 0.5, 0.9),
    spec.DURATION: (0.5, 0.95),
}
#: The probe TTFT alert's window: a canary probes every ``interval`` (30 s by default), so 10
#: minutes hold about 20 first tokens per target.
PROBE_WINDOW = "10m"


def goodput_miss(window: str) -> str:
    """Recording rule name of the goodput miss ratio (judged streams that missed) over ``window``."""
    return f"route:{spec.SLO_MISSED.base}:ratio_rate{window}"


GOODPUT_JUDGED = "route:streamwatch_slo_judged:rate5m"


def slo_miss(window: str) -> str:
    """Recording rule name of the TTFT SLO miss ratio over ``window``."""
    return f"route:{spec.TTFT.name}:slo_miss_ratio_rate{window}"


TRUNCATED_RATIO = f"route:{spec.STREAMS.base}_truncated:ratio_rate5m"
ERROR_FRAME_RATIO = f"route:{spec.STREAMS.base}_error_frame:ratio_rate5m"
STALL_RATIO = f"route:{spec.STALLS.base}_per_stream:ratio_rate5m"
UPSTREAM_RATIO = f"route:{spec.UPSTREAM_ERRORS.base}:ratio_rate5m"
STREAM_RATE = f"route:{spec.STREAMS.base}:rate5m"
REQUEST_RATE = f"route:{spec.REQUESTS.base}:rate5m"
FIRST_TOKEN_RATE = f"route:{spec.TTFT.series('_count')}:rate5m"


def recording_rules(cfg: Config) -> Json:
    """Prometheus recording rules, ``level:metric:operations``."""
    s = cfg.selector
    rules: list[Json] = []
    for hist, qs in QUANTILES.items():
        group = [label for label in spec.STREAM_LABELS if label in hist.labels]
        level = "_".join(group)
        buckets = f"{level}_le:{hist.series('_bucket')}:rate5m"
        rules.append(
            {
                "record": buckets,
                "expr": sum_rate(
                    hist, rule_selector(s, hist), *group, "le", window="5m", suffix="_bucket"
                ),
            }
        )
        rules.extend(
            {
                "record": f"{level}:{hist.name}:p{round(q * 100)}_rate5m",
                "expr": f"histogram_quantile({q}, {buckets})",
            }
            for q in qs
        )
    streams = spec.STREAMS
    per_route = f"/ {STREAM_RATE}"

    def route_rate(family: spec.Family, **equal: str) -> str:
        return sum_rate(family, rule_selector(s, family, **equal), spec.ROUTE, window="5m")

    rules += [
        {
            "record": f"route_side_api_model_outcome:{streams.base}:rate5m",
            "expr": sum_rate(
                streams, rule_selector(s, streams), *spec.STREAM_LABELS, spec.OUTCOME, window="5m"
            ),
        },
        {"record": STREAM_RATE, "expr": route_rate(streams)},
        {
            "record": TRUNCATED_RATIO,
            "expr": f"{route_rate(streams, outcome=Outcome.TRUNCATED)}\n{per_route}",
        },
        {
            "record": ERROR_FRAME_RATIO,
            "expr": f"{route_rate(streams, outcome=Outcome.ERROR_FRAME)}\n{per_route}",
        },
        {"record": STALL_RATIO, "expr": f"{route_rate(spec.STALLS)}\n{per_route}"},
        {"record": REQUEST_RATE, "expr": route_rate(spec.REQUESTS)},
        {
            "record": FIRST_TOKEN_RATE,
            "expr": sum_rate(
                spec.TTFT, rule_selector(s, spec.TTFT), spec.ROUTE, window="5m", suffix="_count"
            ),
        },
        {
            "record": UPSTREAM_RATIO,
            "expr": f"{route_rate(spec.UPSTREAM_ERRORS)}\n/ {REQUEST_RATE}",
        },
    ]
    le = le_matcher(cfg.slo_threshold_s)
    ttft = spec.TTFT
    real = rule_selector(s, ttft)
    rules.extend(
        {
            "record": slo_miss(w),
            "expr": f"1 - (\n  {sum_rate(ttft, f'{real}, {le}', spec.ROUTE, window=w, suffix='_bucket')}"
            f"\n/ {sum_rate(ttft, real, spec.ROUTE, window=w, suffix='_count')}\n)",
        }
        for w in SLO_WINDOWS
    )
    met, missed = spec.SLO_MET, spec.SLO_MISSED

    def judged(window: str) -> str:
        return (
            f"{sum_rate(met, rule_selector(s, met), spec.ROUTE, window=window)}\n"
            f"+ {sum_rate(missed, rule_selector(s, missed), spec.ROUTE, window=window)}"
        )

    rules.append({"record": GOODPUT_JUDGED, "expr": judged("5m")})
    rules.extend(
        {
            "record": goodput_miss(w),
            "expr": f"{sum_rate(missed, rule_selector(s, missed), spec.ROUTE, window=w)}"
            f"\n/ (\n{judged(w)}\n)",
        }
        for w in SLO_WINDOWS
    )
    return {"groups": [{"name": "streamwatch.rules", "rules": rules}]}


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
    """A ratio as a percentage for an alert's text."""
    return f"{num(x * 100)}%"


def alert_rules(cfg: Config) -> Json:
    """The ``Streamwatch<Symptom>`` alerts."""
    a, s = cfg.alerts, cfg.selector
    budget = 1 - cfg.slo_objective
    objective = (
        f"{pct(cfg.slo_objective)} of streams with a first token within {cfg.slo_threshold_s:g}s"
    )

    def burn(
        pairs: Sequence[tuple[str, str, float]],
        miss: Callable[[str], str] = slo_miss,
        error_budget: float = budget,
        traffic: str = FIRST_TOKEN_RATE,
    ) -> str:
        return guarded(
            "(\n"
            + "\nor\n".join(
                f"({miss(long)} > {num(rate * error_budget)}\n"
                f" and {miss(short)} > {num(rate * error_budget)})"
                for long, short, rate in pairs
            )
            + "\n)",
            traffic,
        )

    goodput_budget = 1 - cfg.goodput_objective
    goodput = f"{pct(cfg.goodput_objective)} of judged streams meeting their route's objectives"

    def guarded(expr: str, traffic: str = STREAM_RATE) -> str:
        """``expr`` only for routes with enough traffic to judge a ratio by."""
        return f"{expr}\nand on (route) {traffic} * 300 >= {cfg.min_streams_5m}"

    def burn_alerts(  # noqa: PLR0917 (the objective's words, then burn()'s arguments)
        name: str,
        what: str,
        subject: str,
        missed: str,
        miss: Callable[[str], str] = slo_miss,
        error_budget: float = budget,
        traffic: str = FIRST_TOKEN_RATE,
        *,
        why: str = "",
    ) -> list[Json]:
        """One objective's two burn-rate alerts: the fast burn pages, the slow one files a ticket."""
        return [
            alert(
                cfg,
                name,
                burn(burns, miss, error_budget, traffic),
                threshold,
                f"{what} is burning its error budget{speed}.",
                "Route {{ $labels.route }} misses " + subject + " fast enough to spend the 30-day "
                "budget " + when + "; {{ $value | humanizePercentage }} of " + missed + ".",
            )
            for burns, threshold, speed, when in (
                (PAGE_BURNS, Threshold(0, "2m", "critical"), " fast" + why, "in under 2 days"),
                (TICKET_BURNS, Threshold(0, "1h", "warning"), "", "early"),
            )
        ]

    per_route = "on route {{ $labels.route }}"
    analyzer = rule_selector(s, spec.ANALYSIS_ERRORS, stage=spec.STAGE_ANALYZER)
    probe_buckets = sum_rate(
        spec.TTFT, f"{s}, {PROBE_TRAFFIC}", "le", spec.ROUTE, window=PROBE_WINDOW, suffix="_bucket"
    )
    probe_ttft_p95 = f"histogram_quantile(0.95, {probe_buckets})"
    rules = [
        alert(
            cfg,
            "StreamwatchStallRateHigh",
            guarded(f"{STALL_RATIO} > {num(a['stall_ratio'].threshold)}"),
            a["stall_ratio"],
            "LLM streams are stalling: no output for longer than the stall threshold.",
            '{{ $value | printf "%.3g" }} stall episodes per ended stream '
            + per_route
            + f" over the last 5m (threshold {num(a['stall_ratio'].threshold)}).",
        ),
        *burn_alerts(
            "StreamwatchTTFTSLOBurn",
            "Time to first token",
            "the TTFT objective (" + objective + ")",
            "streams missed it",
        ),
        *burn_alerts(
            "StreamwatchGoodputBurn",
            "Goodput",
            "its goodput objective (" + goodput + ")",
            "judged streams missed an objective (TTFT, TPOT, stall or outcome)",
            goodput_miss,
            goodput_budget,
            GOODPUT_JUDGED,
            why=": streams miss their objectives",
        ),
        alert(
            cfg,
            "StreamwatchTruncationRateHigh",
            guarded(f"{TRUNCATED_RATIO} > {num(a['truncation_ratio'].threshold)}"),
            a["truncation_ratio"],
            "LLM streams end without their terminal frame.",
            "{{ $value | humanizePercentage }} of streams " + per_route + " were cut off by "
            f"upstream over the last 5m (threshold {pct(a['truncation_ratio'].threshold)}).",
        ),
        alert(
            cfg,
            "StreamwatchErrorFrameRateHigh",
            guarded(f"{ERROR_FRAME_RATIO} > {num(a['error_frame_ratio'].threshold)}"),
            a["error_frame_ratio"],
            "LLM streams fail with mid-stream error events.",
            "{{ $value | humanizePercentage }} of streams " + per_route + " ended with an "
            f"error frame over the last 5m (threshold {pct(a['error_frame_ratio'].threshold)}).",
        ),
        alert(
            cfg,
            "StreamwatchUpstreamErrorsHigh",
            guarded(f"{UPSTREAM_RATIO} > {num(a['upstream_error_ratio'].threshold)}", REQUEST_RATE),
            a["upstream_error_ratio"],
            "Requests fail to reach the upstream gateway.",
            "{{ $value | humanizePercentage }} of requests " + per_route + " failed before "
            "upstream answered (connect, timeout or protocol error) over the last 5m "
            f"(threshold {pct(a['upstream_error_ratio'].threshold)}).",
        ),
        alert(
            cfg,
            "StreamwatchAnalysisFailing",
            f"{sum_rate(spec.ANALYSIS_ERRORS, analyzer, spec.ROUTE, window='5m')}"
            f" > {num(a['analysis_errors_per_second'].threshold)}",
            a["analysis_errors_per_second"],
            "The stream analyzer is failing; streams pass through unmeasured.",
            'The analyzer raised {{ $value | printf "%.3g" }} times per second '
            + per_route
            + " over the last 5m; those streams are forwarded but missing from the metrics.",
        ),
        alert(
            cfg,
            "StreamwatchProbeFailing",
            f"{spec.PROBE_SUCCESS.name}{{{s}}} == 0",
            a["probe_failing"],
            "The synthetic streaming probe fails: the gateway does not stream for the canary.",
            "Every probe of target {{ $labels.target }} ({{ $labels.instance }}) failed for more "
            f"than {a['probe_failing'].for_} (no 200, no output, or not completed); real users "
            "of that route and model are likely failing too.",
            per_route=False,
        ),
        alert(
            cfg,
            "StreamwatchProbeTTFTHigh",
            f"{probe_ttft_p95} > {num(a['probe_ttft_p95_seconds'].threshold)}",
            a["probe_ttft_p95_seconds"],
            "The synthetic probe waits too long for its first token.",
            "p95 time to first token of the probe streams to target {{ $labels.route }} was "
            "{{ $value | humanizeDuration }} over the last "
            f"{PROBE_WINDOW} (threshold {num(a['probe_ttft_p95_seconds'].threshold)}s).",
            per_route=False,
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
