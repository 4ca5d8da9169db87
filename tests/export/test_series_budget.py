"""The series budget: a saturated instance stays within its series count and /metrics size."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streamwatch import metricspec as spec
from streamwatch.core.api import Api
from streamwatch.core.events import StallPhase
from streamwatch.core.record import CloseCause, Outcome, StreamRecord, Usage, unanalyzed_record
from streamwatch.core.slo import Goodput, Objectives
from streamwatch.export.prometheus import Metrics
from streamwatch.export.prometheus_sink import PrometheusSink
from tests.export.driven import Driven

#: Fifty model names as long as real ones (``claude-sonnet-4-5-20250929`` is 26 characters).
MODELS = tuple(f"vendor-model-{i:02d}-2025-09-29" for i in range(50))
APIS = (Api.OPENAI_CHAT, Api.ANTHROPIC_MESSAGES)
CODES = (200, 400, 401, 404, 408, 413, 429, 500, 502, 503, 504)
ROUTE = spec.DEFAULT_ROUTE

#: The README's series formula (per route, API and model; per route and API; per route).
PER_MODEL_MAX = 60
INSTANCE_MAX = 6_000
SIZE_MAX = 600_000


@pytest.fixture(autouse=True)
def _no_created_series() -> Iterator[None]:
    """As ``streamwatch serve`` runs: without prometheus-client's ``*_created`` samples."""
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    yield
    prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]


def record(api: Api, model: str, outcome: Outcome, reason: str) -> StreamRecord:
    return dataclasses.replace(
        unanalyzed_record(
            api=api,
            request_model=model,
            t_request_ns=0,
            t_end_ns=3_000_000_000,
            cause=CloseCause.UPSTREAM_EOF,
            body_bytes=100,
        ),
        outcome=outcome,
        response_model=model,
        finish_reasons=(reason,),
        tokens_per_second=40.0,
        usage=Usage(input_tokens=7, output_tokens=10, reasoning_tokens=3, cached_input_tokens=2),
    )


def saturate(metrics: Metrics) -> None:
    """Every label value the families can take, on 50 models x 2 APIs of one route with goodput
    objectives, through the sink's real hooks."""
    objectives = Objectives(ttft_s=0.5, tpot_s=0.01, no_stall=True)
    sink = PrometheusSink(metrics, Goodput({ROUTE: objectives}))
    for api in APIS:
        reasons = [*spec.FINISH_REASONS_BY_API[api.value], "something new"]
        for model in MODELS:
            for i, outcome in enumerate(Outcome):
                stream = Driven(sink, api, model)
                stream.first_byte(0.3)
                stream.first_token(0.7)
                stream.output(None)
                stream.output(0.03)
                stream.stall_started(StallPhase.MID_STREAM)
                stream.finish(record(api, model, outcome, reasons[i % len(reasons)]))
            for reason in reasons:
                Driven(sink, api, model).finish(record(api, model, Outcome.COMPLETED, reason))
        stream = Driven(sink, api, MODELS[0])
        for error_type in [*spec.ERROR_TYPES, "something new"]:
            stream.error_frame(error_type)
        stream.stall_started(StallPhase.BEFORE_FIRST_TOKEN)
        stream.malformed()
        stream.oversize()
        stream.analysis_stopped()
        stream.finish(None)
        for code in CODES:
            Driven(sink, api, MODELS[0], status=code).finish(None)
    for kind in [*spec.UPSTREAM_ERROR_KINDS, "other"]:
        Driven(sink, Api.OPENAI_CHAT, MODELS[0], status=502).finish(None, kind)


_MODEL = re.compile(r'model="([^"]*)"')


@pytest.fixture(scope="module")
def scrape() -> bytes:
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        registry = CollectorRegistry()
        saturate(Metrics(registry))
        return generate_latest(registry)
    finally:
        prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]


def series(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if line and not line.startswith("#")]


class TestSeriesBudget:
    """At defaults, 50 models on 2 APIs with every label value seen fit the documented budget."""

    def test_every_value_was_seen(self, scrape: bytes) -> None:
        """The scrape is saturated: every outcome and the other fallbacks are there."""
        text = scrape.decode()
        for outcome in Outcome:
            assert f'outcome="{outcome.value}"' in text
        assert 'finish_reason="other"' in text
        assert 'error_type="other"' in text

    def test_series_per_route_api_model(self, scrape: bytes) -> None:
        """No (route, api, model) has more than 60 series."""
        per_model = Counter[tuple[str, str]]()
        for line in series(scrape):
            model = _MODEL.search(line)
            if model:
                api = re.search(r'api="([^"]*)"', line)
                assert api
                per_model[api[1], model[1]] += 1
        assert len(per_model) == len(APIS) * len(MODELS)
        worst = max(per_model.values())
        print(f"series per (route, api, model): max {worst}")
        assert worst <= PER_MODEL_MAX

    def test_instance_series_and_size(self, scrape: bytes) -> None:
        """The whole exposition has at most 6,000 series and 600 KB."""
        count = len(series(scrape))
        print(f"saturated /metrics: {count} series, {len(scrape)} bytes")
        assert count <= INSTANCE_MAX
        assert len(scrape) <= SIZE_MAX
