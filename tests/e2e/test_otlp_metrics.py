"""OTLP metrics end to end: ``streamwatch serve`` with ``OTEL_METRICS_EXPORTER=otlp`` pushes to a
real OTLP/HTTP receiver decoding ``ExportMetricsServiceRequest`` protobuf, and what it receives
agrees with the Prometheus scrape of the same streams."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import pytest
import pytest_asyncio

from streamwatch import metricspec as spec
from streamwatch.export.otel import TracingConfigError
from streamwatch.export.otlp_metrics import metric_exporters
from tests.dashboards.test_live_streamwatch import APIS, Call, scenario
from tests.e2e.otlp import Receiver, otlp_receiver
from tests.harness import Scrape, raw_exchange, scrape, serve_process, simulator, until

pytestmark = pytest.mark.e2e

OUTCOME = spec.otel_attribute(spec.OUTCOME)
FINISH_REASON = spec.otel_attribute(spec.FINISH_REASON)


def mix() -> list[Call]:
    """Completed, tool-call, reasoning, budget-cut, error-frame, truncated and reset streams."""
    names = ("normal", "tool_call", "reasoning", "max_tokens", "error", "truncate", "reset")
    return [Call(api, scenario(name)) for api in APIS for name in names]


@dataclass
class Pushed:
    """The Prometheus scrape taken before shutdown and what the receiver got by the end."""

    scrape: Scrape
    receiver: Receiver


async def push(env: Mapping[str, str]) -> Pushed:
    """Run the mix through a serve subprocess that pushes OTLP metrics, scrape it, stop it (the
    final export happens at shutdown) and return both views."""
    async with otlp_receiver() as receiver, simulator() as upstream:
        environ = {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_METRIC_EXPORT_INTERVAL": "600000",  # only the final export, at shutdown
            **env,
        }
        async with serve_process("--upstream", upstream, "--slo-ttft", "5", env=environ) as serve:
            await asyncio.gather(*(raw_exchange(serve.proxy_port, c.request()) for c in mix()))

            async def settled() -> bool:
                return (await scrape(serve.admin_port)).value(spec.STREAMS_ACTIVE.name) == 0

            await until(settled, 10, what="every stream closed")
            scraped = await scrape(serve.admin_port)
            assert await serve.terminate() == 0
        await until(lambda: receiver.metric_exports > 0, 10, what="the final OTLP export")
        return Pushed(scraped, receiver)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def explicit() -> Pushed:
    return await push({})


@pytest.mark.asyncio(loop_scope="module")
class TestOtlpMatchesPrometheus:
    """For the same streams, OTLP and /metrics count the same things."""

    async def test_outcomes_and_finish_reasons(self, explicit: Pushed) -> None:
        """streamwatch.streams by outcome and streamwatch.finish_reasons equal the scrape."""
        scraped, received = explicit.scrape, explicit.receiver
        outcomes = scraped.values(spec.STREAMS.name, spec.OUTCOME)
        assert len(outcomes) >= 4
        assert received.by(spec.STREAMS.otel, OUTCOME) == outcomes
        reasons = scraped.values(spec.FINISH_REASONS_TOTAL.name, spec.FINISH_REASON)
        assert reasons
        assert received.by(spec.FINISH_REASONS_TOTAL.otel, FINISH_REASON) == reasons
        missed = scraped.values(spec.SLO_MISSED.name, spec.REASON)
        assert missed
        assert received.by(spec.SLO_MISSED.otel, spec.otel_attribute(spec.REASON)) == missed
        assert received.total(spec.SLO_MET.otel) == scraped.value(spec.SLO_MET.name) > 0

    @pytest.mark.parametrize("family", [spec.TTFT, spec.GAP, spec.DURATION, spec.TTFB])
    async def test_histogram_counts_and_sums(self, explicit: Pushed, family: spec.Family) -> None:
        """Each histogram's count and sum over OTLP equal the Prometheus _count and _sum."""
        count, total, kinds = explicit.receiver.histogram(family.otel)
        assert count > 0
        assert count == explicit.scrape.value(family.series("_count"))
        assert total == pytest.approx(explicit.scrape.value(family.series("_sum")), rel=1e-9)
        assert kinds == {"histogram"}

    async def test_usage_counters(self, explicit: Pushed) -> None:
        """The GenAI usage counters carry the same reported tokens as tokens_total."""
        for kind in ("input", "output"):
            name = spec.GENAI_USAGE[kind]
            assert explicit.receiver.total(name) == explicit.scrape.value(
                spec.TOKENS.name, type=kind
            )
            assert explicit.receiver.total(name) > 0

    async def test_genai_attributes_and_resource(self, explicit: Pushed) -> None:
        """GenAI points carry operation, provider and models; the resource names the service."""
        [point, *_] = explicit.receiver.series(
            spec.TTFT.otel, **{"gen_ai.provider.name": "anthropic"}
        )
        assert point.attributes["gen_ai.operation.name"] == "chat"
        assert point.attributes["gen_ai.response.model"] == "claude-sonnet-4-5"
        assert point.attributes["streamwatch.route"] == "default"
        failed = explicit.receiver.series(spec.DURATION.otel, **{"error.type": "truncated"})
        assert failed
        resource = explicit.receiver.metric_resources[0]
        assert resource["service.name"] == "streamwatch"
        assert resource["service.instance.id"]  # two processes never share a cumulative stream


class TestExponentialHistograms:
    """Base-2 exponential histograms when the standard variable asks for them."""

    async def test_same_counts_as_exponential_histograms(self) -> None:
        """TTFT and gaps arrive as exponential histograms with the scrape's counts and sums."""
        pushed = await push(
            {
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": (
                    "base2_exponential_bucket_histogram"
                )
            }
        )
        for family in (spec.TTFT, spec.GAP):
            count, total, kinds = pushed.receiver.histogram(family.otel)
            assert kinds == {"exponential_histogram"}
            assert count == pushed.scrape.value(family.series("_count"))
            assert total == pytest.approx(pushed.scrape.value(family.series("_sum")), rel=1e-9)


class TestConfiguration:
    """OTLP metrics are off unless asked for; a bad standard variable fails start-up naming it."""

    def test_off_by_default(self) -> None:
        """An OTLP endpoint alone (tracing) does not turn metrics on."""
        assert metric_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == []
        assert (
            metric_exporters({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) == []
        )

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("OTEL_METRICS_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "sometimes"),
            ("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "linear"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ],
    )
    def test_bad_value_names_the_variable(self, name: str, value: str) -> None:
        """Each unusable value is refused with the variable's name."""
        environ = {"OTEL_METRICS_EXPORTER": "otlp", name: value}
        with pytest.raises(TracingConfigError, match=name):
            metric_exporters(environ)

    async def test_serve_refuses_a_bad_value_at_start(self) -> None:
        """streamwatch serve exits 2 naming the variable."""
        from tests.harness import run_cli

        proc = await run_cli(
            "serve", "--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0",
            "--admin-listen", "127.0.0.1:0",
            env={"OTEL_METRICS_EXPORTER": "otlp",
                 "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "sometimes"},
        )  # fmt: skip
        _, stderr = await proc.communicate()
        assert proc.returncode == 2
        assert b"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE" in stderr
