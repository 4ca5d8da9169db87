"""A real Prometheus scrapes the Metrics module and evaluates every mixin expression."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from streamwatch.core.api import Api
from streamwatch.core.events import StallPhase
from streamwatch.core.record import CloseCause, Outcome, Usage, unanalyzed_record
from streamwatch.export.prometheus import Metrics
from streamwatch.export.prometheus_sink import PrometheusSink
from tests.dashboards.mixin import RULE_FILES, all_exprs, skip_unless
from tests.dashboards.promserver import PROMETHEUS, PromServer, free_port
from tests.export.driven import Driven

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def observed_metrics(registry: CollectorRegistry) -> Metrics:
    """A Metrics with one stream of every kind of observation recorded."""
    import dataclasses

    metrics = Metrics(registry)
    sink = PrometheusSink(metrics)
    s = Driven(sink, Api.OPENAI_CHAT, "gpt-4o", trace_id=TRACE_ID)
    s.first_byte(0.2)
    s.first_token(12.0)
    for gap in (None, 0.01, 0.02, 11.0):
        s.output(gap)
    s.stall_started(StallPhase.MID_STREAM)
    s.error_frame("overloaded_error")
    s.malformed()
    record = dataclasses.replace(
        unanalyzed_record(
            api=Api.OPENAI_CHAT,
            request_model="gpt-4o",
            t_request_ns=0,
            t_end_ns=15_000_000_000,
            cause=CloseCause.UPSTREAM_EOF,
            body_bytes=10,
        ),
        outcome=Outcome.ERROR_FRAME,
        finish_reasons=("stop",),
        tokens_per_second=40.0,
        usage=Usage(input_tokens=5, output_tokens=4),
    )
    s.finish(record)
    Driven(sink, Api.OPENAI_CHAT, "gpt-4o")  # stays open
    Driven(sink, Api.OPENAI_CHAT, "gpt-4o", status=502).finish(None, "connect")
    return metrics


@pytest.fixture(scope="module")
def prom() -> Iterator[PromServer]:
    skip_unless(shutil.which(PROMETHEUS) is not None, "prometheus not installed (apt prometheus)")
    registry = CollectorRegistry()
    observed_metrics(registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        with PromServer(f"127.0.0.1:{port}", RULE_FILES) as p:
            p.wait_for('up{job="streamwatch"} == 1')
            yield p
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class TestPromServer:
    """Prometheus scrapes the exporter, runs the rules and parses every mixin expression."""

    def test_scrapes_the_contract_metrics(self, prom: PromServer) -> None:
        """The scraped series carry the observations recorded in the test."""
        [sample] = prom.wait_for('streamwatch_streams_total{outcome="error_frame"}')
        assert sample["value"][1] == "1"
        [active] = prom.wait_for('streamwatch_streams_active{api="openai_chat"}')
        assert active["value"][1] == "1"

    def test_every_expression_parses(self, prom: PromServer) -> None:
        """Every dashboard query, template query, recording rule and alert evaluates with success."""
        exprs = all_exprs()
        assert len(exprs) > 50
        failures = {}
        for expr in exprs:
            answer = prom.query(expr)
            if answer["status"] != "success":
                failures[expr] = answer.get("error")
        assert not failures

    def test_recording_rules_evaluate(self, prom: PromServer) -> None:
        """The rules Prometheus loaded produce the TTFT SLO miss ratio (the 12 s TTFT missed)."""
        [sample] = prom.wait_for(
            'route:streamwatch_time_to_first_token_seconds:slo_miss_ratio_rate5m{route="default"}'
        )
        assert sample["value"][1] in {"1", "NaN"}  # NaN until a second scrape gives a rate
        answer = prom.api("/api/v1/rules")
        names = {r["name"] for g in answer["data"]["groups"] for r in g["rules"]}
        assert "StreamwatchTTFTSLOBurn" in names
        assert all(r["health"] != "err" for g in answer["data"]["groups"] for r in g["rules"]), (
            answer
        )

    def test_exemplars_are_stored(self, prom: PromServer) -> None:
        """The TTFT observation's trace id arrives as an exemplar (OpenMetrics scrape)."""
        answer = prom.api(
            "/api/v1/query_exemplars",
            query="streamwatch_time_to_first_token_seconds_bucket",
            start="0",
            end="9999999999",
        )
        assert answer["status"] == "success"
        trace_ids = {
            e["labels"].get("trace_id") for series in answer["data"] for e in series["exemplars"]
        }
        assert TRACE_ID in trace_ids
