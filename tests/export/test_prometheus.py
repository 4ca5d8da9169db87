"""The Prometheus metric set: contract names and labels, live and end-of-stream counting, bounds."""

from __future__ import annotations

import dataclasses
import random
import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from streamwatch import metricspec as spec
from streamwatch.core.api import Api
from streamwatch.core.events import StallPhase
from streamwatch.core.record import CloseCause, Outcome, StreamRecord, Usage, unanalyzed_record
from streamwatch.export.labels import (
    ModelLabels,
    normalise_error_type,
    normalise_finish_reason,
    sanitize_label,
)
from streamwatch.export.prometheus import BatchedHistogram, Metrics
from streamwatch.export.prometheus_sink import PrometheusSink
from streamwatch.metricspec import ERROR_TYPES
from tests.export.driven import Driven

ROUTE = "default"
API = Api.OPENAI_CHAT.value
MODEL = "gpt-4o"
SIDE = "client"
LABELS = {"route": ROUTE, "side": SIDE, "api": API, "model": MODEL}
ROUTE_API = {"route": ROUTE, "side": SIDE, "api": API}


def make_record(**changes: object) -> StreamRecord:
    """A completed OpenAI chat record with usage, changed as the test needs."""
    base = dataclasses.replace(
        unanalyzed_record(
            api=Api.OPENAI_CHAT,
            request_model=MODEL,
            t_request_ns=1_000_000_000,
            t_end_ns=3_500_000_000,
            cause=CloseCause.UPSTREAM_EOF,
            body_bytes=100,
        ),
        outcome=Outcome.COMPLETED,
        analysis_failed=False,
        response_model=MODEL,
        output_events=10,
        output_tokens=10,
        output_tokens_estimated=False,
        tokens_per_second=42.0,
        finish_reasons=("stop",),
        usage=Usage(input_tokens=7, output_tokens=10, reasoning_tokens=3, cached_input_tokens=2),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class TestDeclarations:
    """Every contract metric is registered under its name, type, help sentence and base unit."""

    def test_every_contract_metric_is_registered_with_its_type(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """The registry's metric families match the spec table exactly."""
        Driven(PrometheusSink(metrics), API, MODEL).finish(make_record())
        metrics.request_finished(ROUTE, SIDE, API, 200)
        families = {}
        process = set()
        for family in registry.collect():
            name = family.name + ("_total" if family.type == "counter" else "")
            if name.startswith("process_"):
                process.add(name)  # prometheus-client's process collector, not ours
                continue
            families[name] = family
        assert {n: f.type for n, f in families.items()} == {f.name: f.kind for f in spec.FAMILIES}
        assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= process
        for family in families.values():
            assert family.documentation.endswith("."), family.name
            assert family.documentation[0].isupper(), family.name

    def test_build_info_carries_the_version(self, registry: CollectorRegistry) -> None:
        """build_info is 1 with the package version."""
        Metrics(registry, version="9.9.9")
        assert value(registry, "streamwatch_build_info", version="9.9.9") == 1

    def test_buckets_cover_llm_ranges(self) -> None:
        """Latency buckets reach 300 s, gaps the default stall threshold, duration 1 h."""
        assert spec.LATENCY_BUCKETS[-1] >= 300
        assert spec.TTFT_BUCKETS[-1] >= 300
        assert spec.GAP_BUCKETS[-1] >= 10
        assert spec.TOKENS_PER_SECOND_BUCKETS[-1] >= 500
        assert spec.DURATION_BUCKETS[-1] >= 3600
        for family in spec.FAMILIES:
            assert list(family.buckets) == sorted(set(family.buckets))

    def test_a_slow_ttft_lands_in_a_finite_bucket(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """A 200 s reasoning-model TTFT is below the 300 s bucket, not only in +Inf."""
        Driven(PrometheusSink(metrics), API, MODEL).first_token(200.0)
        name = "streamwatch_time_to_first_token_seconds_bucket"
        assert value(registry, name, **LABELS, le="30.0") == 0
        assert value(registry, name, **LABELS, le="300.0") == 1


class TestPreinitialisation:
    """Known label values exist at zero so rate() sees them before the first event."""

    def test_route_series_start_at_zero(self, registry: CollectorRegistry) -> None:
        """Upstream error kinds and gauges exist for configured routes before any traffic."""
        Metrics(registry, routes={"default": "client", "anthropic": "provider"})
        for route, side in (("default", "client"), ("anthropic", "provider")):
            for kind in ("connect", "timeout", "protocol"):
                errors = value(
                    registry, spec.UPSTREAM_ERRORS.name, route=route, side=side, kind=kind
                )
                assert errors == 0
            for family in (spec.STREAMS_ACTIVE, spec.STREAMS_STALLED):
                assert value(registry, family.name, route=route, side=side, api=API) == 0

    def test_outcomes_and_phases_start_at_zero_with_the_first_stream(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """The first stream of a (route, api, model) creates every outcome and stall phase (the
        outcomes once its model is settled: at its first token, or at once for a known model)."""
        Driven(PrometheusSink(metrics), API, MODEL).first_token(0.2)
        for outcome in Outcome:
            assert value(registry, spec.STREAMS.name, **LABELS, outcome=outcome.value) == 0
        for phase in StallPhase:
            assert value(registry, spec.STALLS.name, **ROUTE_API, phase=phase.value) == 0

    def test_expected_reasons_and_error_types_start_at_zero(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """A stream's first series include its API's usual finish reasons and error types at zero."""
        Driven(PrometheusSink(metrics), Api.ANTHROPIC_MESSAGES.value, MODEL)
        labels = {**ROUTE_API, "api": Api.ANTHROPIC_MESSAGES.value}
        for reason in ("end_turn", "max_tokens", "tool_use"):
            assert (
                value(registry, spec.FINISH_REASONS_TOTAL.name, **labels, finish_reason=reason) == 0
            )
        assert (
            value(
                registry,
                spec.ERROR_FRAMES.name,
                **labels,
                error_type="overloaded_error",
            )
            == 0
        )

    def test_requests_alone_create_no_stream_series(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """A route that only answers errors or JSON gets request counts, not empty histograms."""
        metrics.request_finished("dead", SIDE, "openai_chat", 502)
        labels = {"route": "dead", "side": SIDE, "api": "openai_chat"}
        assert value(registry, spec.REQUESTS.name, **labels, code="502") == 1
        assert (
            value(registry, spec.STREAMS.name, **labels, model=MODEL, outcome="completed") is None
        )


class TestLiveObservations:
    """The per-event methods move the live metrics at once, before the stream ends."""

    def test_first_byte_first_token_and_gaps(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """TTFB, TTFT, gaps and output events are observed per call."""
        s = Driven(PrometheusSink(metrics), API, MODEL)
        s.first_byte(0.2)
        s.first_token(0.5)
        s.output(None)
        s.output(0.0)
        s.output(0.03)
        assert value(registry, "streamwatch_time_to_first_byte_seconds_sum", **ROUTE_API) == 0.2
        assert value(registry, "streamwatch_time_to_first_token_seconds_count", **LABELS) == 1
        assert value(registry, "streamwatch_inter_chunk_gap_seconds_count", **LABELS) == 2
        assert value(registry, "streamwatch_inter_chunk_gap_seconds_sum", **LABELS) == 0.03
        assert value(registry, spec.OUTPUT_EVENTS.name, **ROUTE_API) == 3

    def test_outputs_of_one_read_are_each_counted(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """A read with several output events counts each event and observes each gap."""
        s = Driven(PrometheusSink(metrics), API, MODEL)
        s.first_token(0.5)
        s.read(None, 0.004, 0.004, 2.0)
        s.read(0.03)
        assert value(registry, spec.OUTPUT_EVENTS.name, **ROUTE_API) == 5
        assert value(registry, "streamwatch_inter_chunk_gap_seconds_count", **LABELS) == 4
        assert value(
            registry, "streamwatch_inter_chunk_gap_seconds_sum", **LABELS
        ) == pytest.approx(2.038)
        assert (
            value(registry, "streamwatch_inter_chunk_gap_seconds_bucket", **LABELS, le="0.01") == 2
        )

    def test_active_and_stalled_gauges_follow_the_stream(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """Open/stall raise the gauges; stall end and close lower them, even if closed stalled."""
        a = Driven(PrometheusSink(metrics), API, MODEL)
        b = Driven(PrometheusSink(metrics), API, "other-model")
        assert value(registry, spec.STREAMS_ACTIVE.name, **ROUTE_API) == 2
        a.stall_started(StallPhase.BEFORE_FIRST_TOKEN)
        b.stall_started(StallPhase.MID_STREAM)
        assert value(registry, spec.STREAMS_STALLED.name, **ROUTE_API) == 2
        a.stall_ended()
        assert value(registry, spec.STREAMS_STALLED.name, **ROUTE_API) == 1
        b.finish(None)
        a.finish(make_record())
        assert value(registry, spec.STREAMS_STALLED.name, **ROUTE_API) == 0
        assert value(registry, spec.STREAMS_ACTIVE.name, **ROUTE_API) == 0
        assert (
            value(registry, spec.STALLS.name, **ROUTE_API, phase=StallPhase.BEFORE_FIRST_TOKEN) == 1
        )

    def test_error_frames_are_counted_live_by_bounded_type(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """Known types keep their name, image errors collapse, unknown become other."""
        s = Driven(PrometheusSink(metrics), API, MODEL)
        s.error_frame("overloaded_error")
        s.error_frame("invalid_image_format")
        s.error_frame("user 1234 quota blown")
        assert (
            value(registry, spec.ERROR_FRAMES.name, **ROUTE_API, error_type="overloaded_error") == 1
        )
        assert value(registry, spec.ERROR_FRAMES.name, **ROUTE_API, error_type="image_error") == 1
        assert value(registry, spec.ERROR_FRAMES.name, **ROUTE_API, error_type="other") == 1

    def test_close_does_not_count_error_frames_again(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """Error frames in the record are not re-counted at the end (they were counted live)."""
        s = Driven(PrometheusSink(metrics), API, MODEL)
        s.error_frame("server_error")
        record = make_record(
            outcome=Outcome.ERROR_FRAME,
            error_frames=(pm_error_frame(),),
        )
        s.finish(record)
        assert value(registry, spec.ERROR_FRAMES.name, **ROUTE_API, error_type="server_error") == 1
        assert value(registry, spec.STREAMS.name, **LABELS, outcome="error_frame") == 1

    def test_exemplar_carries_the_trace_id(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """With a trace id the OpenMetrics exposition carries it as an exemplar."""
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        traced = Driven(PrometheusSink(metrics), API, MODEL, trace_id=trace_id)
        traced.first_token(7.0)
        s = Driven(PrometheusSink(metrics), API, MODEL)
        s.output(0.2)  # no trace id: no exemplar, no error
        text = generate_openmetrics(registry).decode()
        assert f'# {{trace_id="{trace_id}"}} 7.0' in text
        assert "trace_id" not in generate_latest(registry).decode()

    def test_analysis_errors_by_stage(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        """Malformed, oversize and analyzer faults count under their stage."""
        s = Driven(PrometheusSink(metrics), API, MODEL)
        s.malformed()
        s.oversize()
        s.analysis_stopped()
        s.analysis_stopped()
        for stage, n in (("malformed_frame", 1), ("oversize_event", 1), ("analyzer", 2)):
            assert value(registry, spec.ANALYSIS_ERRORS.name, **ROUTE_API, stage=stage) == n

    def test_upstream_errors_and_requests(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """Upstream errors count by kind (unknown kinds as other); requests by status code."""
        metrics.upstream_error(ROUTE, SIDE, "connect")
        metrics.upstream_error(ROUTE, SIDE, "dns-weirdness")
        metrics.request_finished(ROUTE, SIDE, API, 502)
        assert (
            value(registry, spec.UPSTREAM_ERRORS.name, route=ROUTE, side=SIDE, kind="connect") == 1
        )
        assert value(registry, spec.UPSTREAM_ERRORS.name, route=ROUTE, side=SIDE, kind="other") == 1
        assert value(registry, spec.REQUESTS.name, **ROUTE_API, code="502") == 1


GAPS_NS = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=200 * 10**9),
        # values on, just under and just over each bound, where rounding could differ
        st.sampled_from(spec.GAP.buckets).flatmap(
            lambda b: st.integers(round(b * 1e9) - 2, round(b * 1e9) + 2)
        ),
    ),
    min_size=1,
    max_size=20,
)


class TestBatchedHistogram:
    """A batch observed in nanoseconds lands in the buckets observing each value would fill."""

    @staticmethod
    def _pair(values_ns: list[int], exemplar: dict[str, str] | None) -> tuple[Histogram, Histogram]:
        """The same values observed one by one in seconds, and as one batch in nanoseconds."""
        plain = Histogram("h", "h", buckets=spec.GAP.buckets, registry=CollectorRegistry())
        for v in values_ns:
            plain.observe(v / 1e9, exemplar)
        batched = Histogram("h", "h", buckets=spec.GAP.buckets, registry=CollectorRegistry())
        BatchedHistogram(batched).observe_ns(values_ns, exemplar)
        return plain, batched

    @settings(max_examples=200, deadline=None)
    @given(GAPS_NS)
    def test_same_buckets_as_one_observe_per_value(self, values_ns: list[int]) -> None:
        """Every bucket, the count and (to float rounding) the sum equal per-value ``observe``."""
        plain, batched = self._pair(values_ns, None)

        def samples(h: Histogram) -> dict[tuple[str, str | None], float]:
            (family,) = h.collect()
            return {(s.name, s.labels.get("le")): s.value for s in family.samples}

        want, got = samples(plain), samples(batched)
        assert got.pop(("h_sum", None)) == pytest.approx(want.pop(("h_sum", None)), rel=1e-12)
        del got[("h_created", None)], want[("h_created", None)]
        assert got == want

    @settings(max_examples=200, deadline=None)
    @given(GAPS_NS)
    def test_same_exemplars_as_one_observe_per_value(self, values_ns: list[int]) -> None:
        """With a trace's exemplar, each bucket keeps the value per-value ``observe`` leaves
        there (the last to fall in it), with the trace id; none without one."""
        trace = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}

        def exemplars(h: Histogram) -> dict[str | None, tuple[dict[str, str], float] | None]:
            (family,) = h.collect()
            return {
                s.labels.get("le"): None
                if s.exemplar is None
                else (s.exemplar.labels, s.exemplar.value)
                for s in family.samples
                if s.name == "h_bucket"
            }

        plain, batched = self._pair(values_ns, trace)
        assert exemplars(batched) == exemplars(plain)
        assert any(exemplars(batched).values())
        _, untraced = self._pair(values_ns, None)
        assert not any(exemplars(untraced).values())


def pm_error_frame() -> object:
    from streamwatch.core.record import ErrorFrame

    return ErrorFrame(event_index=3, error_type="server_error", message="boom")


def ended(metrics: Metrics, record: StreamRecord, trace_id: str | None = None) -> None:
    """A stream of ``record``'s api and model opened and closed with ``record``."""
    Driven(PrometheusSink(metrics), record.api, record.model, trace_id=trace_id).finish(record)


class TestEndOfStream:
    """The finish hook counts what is only known once the stream has ended."""

    def test_completed_stream(self, registry: CollectorRegistry, metrics: Metrics) -> None:
        """Outcome, finish reason, reported tokens, tokens/s and duration are recorded once."""
        ended(metrics, make_record(), "4bf92f3577b34da6a3ce929d0e0e4736")
        assert value(registry, spec.STREAMS.name, **LABELS, outcome="completed") == 1
        assert value(registry, spec.STREAMS.name, **LABELS, outcome="truncated") == 0
        assert (
            value(registry, spec.FINISH_REASONS_TOTAL.name, **ROUTE_API, finish_reason="stop") == 1
        )
        for kind, n in (("input", 7), ("output", 10), ("reasoning", 3), ("cached_input", 2)):
            assert value(registry, spec.TOKENS.name, **ROUTE_API, type=kind) == n
        assert value(registry, "streamwatch_output_tokens_per_second_sum", **LABELS) == 42.0
        assert value(registry, "streamwatch_stream_duration_seconds_sum", **ROUTE_API) == 2.5

    def test_estimated_tokens_are_not_counted(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """Without reported usage tokens_total stays at zero and tokens/s is skipped when None."""
        ended(
            metrics,
            make_record(usage=None, output_tokens_estimated=True, tokens_per_second=None),
        )
        assert value(registry, spec.TOKENS.name, **ROUTE_API, type="output") == 0
        assert value(registry, "streamwatch_output_tokens_per_second_count", **LABELS) == 0

    def test_unknown_finish_reason_and_truncation(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """An unknown finish reason counts as other; a truncation counts under its outcome."""
        ended(metrics, make_record(outcome=Outcome.TRUNCATED, finish_reasons=("STOP", "weird")))
        assert value(registry, spec.STREAMS.name, **LABELS, outcome="truncated") == 1
        assert (
            value(registry, spec.FINISH_REASONS_TOTAL.name, **ROUTE_API, finish_reason="stop") == 1
        )
        assert (
            value(registry, spec.FINISH_REASONS_TOTAL.name, **ROUTE_API, finish_reason="other") == 1
        )

    def test_response_model_moves_end_metrics_to_its_label(
        self, registry: CollectorRegistry, metrics: Metrics
    ) -> None:
        """A stream opened under the request model is recorded under the response model."""
        s = Driven(PrometheusSink(metrics), API, "gpt-4o-latest")
        s.finish(make_record(response_model="gpt-4o-2024-08-06"))
        labels = {**LABELS, "model": "gpt-4o-2024-08-06"}
        assert value(registry, spec.STREAMS.name, **labels, outcome="completed") == 1


class TestModelLabels:
    """The model label stays bounded: allowlist or first-N, sanitised, others become other."""

    def test_allowlist(self) -> None:
        """Only allowlisted models keep their names."""
        labels = ModelLabels(allowlist=("gpt-4o", "claude-sonnet-4-5"))
        assert labels("gpt-4o") == "gpt-4o"
        assert labels("gpt-5") == "other"
        assert labels(None) == "unknown"
        assert labels("") == "unknown"

    def test_first_n_distinct(self) -> None:
        """Without an allowlist the first max_models distinct names are kept."""
        labels = ModelLabels(max_models=2)
        assert [labels(m) for m in ("a", "b", "a", "c", "b")] == ["a", "b", "a", "other", "b"]

    def test_only_a_claim_takes_a_slot(self) -> None:
        """A name that may not claim (a failed response's) is other and leaves its slot free."""
        labels = ModelLabels(max_models=1)
        assert labels("invented", claim=False) == "other"
        assert labels("real") == "real"
        assert labels("real", claim=False) == "real"  # known names keep their label
        assert labels("invented") == "other"

    def test_failed_stream_claims_no_slot(self, registry: CollectorRegistry) -> None:
        """A stream answered with an error status is counted under other, its model unclaimed."""
        metrics = Metrics(registry, max_models=1)
        driven = Driven(PrometheusSink(metrics), API, "invented", status=401)
        driven.finish(make_record(request_model="invented"))
        assert metrics.models.known == frozenset()

    def test_request_alias_takes_no_slot(self, registry: CollectorRegistry) -> None:
        """A stream asking for an alias is bound to the model its response names, not the alias."""
        metrics = Metrics(registry, max_models=1)
        driven = Driven(PrometheusSink(metrics), API, "alias")
        driven.first_token(0.3, model="vendor-model-2025")
        driven.finish(make_record(response_model="vendor-model-2025", request_model="alias"))
        assert metrics.models.known == frozenset({"vendor-model-2025"})

    def test_sanitised_and_capped(self) -> None:
        """Unusual characters become _ and values are cut to 64 characters."""
        labels = ModelLabels()
        assert labels('evil"}\nmodel') == "evil___model"
        assert len(labels("m" * 500)) == 64

    def test_metrics_use_the_bound(self, registry: CollectorRegistry) -> None:
        """Past the cap, streams are counted under model=other."""
        metrics = Metrics(registry, max_models=1)
        ended(metrics, make_record(response_model="first"))
        ended(metrics, make_record(response_model="second"))
        labels = {**LABELS, "model": "other"}
        assert value(registry, spec.STREAMS.name, **labels, outcome="completed") == 1

    @settings(max_examples=200, deadline=None)
    @given(
        allow=st.lists(
            st.text(alphabet=string.ascii_letters + "-.", min_size=1), min_size=1, max_size=5
        ),
        inputs=st.lists(st.text(max_size=200), max_size=50),
    )
    @example(allow=["A" * 65], inputs=["A" * 64])  # found by the loop: the label, not the name
    def test_output_is_allowlisted_or_other(self, allow: list[str], inputs: list[str]) -> None:
        """With an allowlist every output is an allowlisted name's label value, other or unknown."""
        labels = ModelLabels(allowlist=allow)
        for raw in inputs:
            out = labels(raw)
            assert out in {*map(sanitize_label, allow), "other", "unknown"}
            assert len(out) <= 64

    def test_a_long_allowlisted_name_keeps_its_capped_label(self) -> None:
        """A name past 64 characters (a Bedrock inference-profile ARN) is matched by its label
        value, the first 64 characters, as every name is: two names alike for 64 characters
        share a series with or without an allowlist."""
        arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v2:0"
        labels = ModelLabels(allowlist=[arn])
        assert labels(arn) == arn[:64]
        assert labels(arn[:64]) == arn[:64]
        assert labels("arn:aws:bedrock:us-east-1:123456789012:other") == "other"

    @settings(max_examples=10, deadline=None)
    @given(seed=st.integers(0, 2**32), alphabet=st.text(min_size=1, max_size=40))
    def test_cardinality_is_bounded(self, seed: int, alphabet: str) -> None:
        """10,000 random names produce at most max_models + 2 label values, each ≤ 64 chars."""
        labels = ModelLabels(max_models=50)
        rnd = random.Random(seed)
        inputs = ["".join(rnd.choices(alphabet, k=rnd.randint(0, 120))) for _ in range(10_000)]
        outputs = {labels(raw) for raw in inputs}
        assert len(outputs) <= 52
        assert all(len(o) <= 64 for o in outputs)
        assert len(labels.known) <= 50


class TestNormalisers:
    """finish_reason and error_type map any string into their bounded sets."""

    @given(st.text(max_size=100))
    def test_finish_reason_is_bounded(self, raw: str) -> None:
        """Any string maps into the known finish reasons or other."""
        for api in spec.APIS:
            assert normalise_finish_reason(raw, api) in spec.FINISH_REASONS_BY_API[api] | {"other"}

    @given(st.text(max_size=100))
    def test_error_type_is_bounded(self, raw: str) -> None:
        """Any string maps into the known error types or other."""
        assert normalise_error_type(raw) in ERROR_TYPES | {"other"}

    @pytest.mark.parametrize(
        ("api", "raw", "expected"),
        [
            ("anthropic_messages", "end_turn", "end_turn"),
            ("openai_chat", "end_turn", "other"),
            ("openai_chat", "STOP", "stop"),
            ("openai_chat", " length ", "length"),
            ("openai_chat", "done", "other"),
            ("openai_responses", "incomplete:max_output_tokens", "max_output_tokens"),
            ("openai_responses", "incomplete:something_new", "incomplete"),
            ("openai_responses", "weird:reason", "other"),
            ("sse", "stop", "other"),
            ("gemini", "MAX_TOKENS", "max_tokens"),
            ("gemini_json", "1", "other"),  # Vertex int enum
            ("bedrock_converse", "guardrail_intervened", "guardrail_intervened"),
            ("bedrock_invoke", "LENGTH", "length"),
            ("cohere_v2", "TOOL_CALL", "tool_call"),
            ("ollama_chat", "tool_call", "other"),
        ],
    )
    def test_finish_reason_examples(self, api: str, raw: str, expected: str) -> None:
        """Known reasons of the stream's API are case-folded; others, even another API's, are other."""
        assert normalise_finish_reason(raw, api) == expected

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("overloaded_error", "overloaded_error"),
            ("server_is_overloaded", "server_is_overloaded"),
            ("context_length_exceeded", "context_length_exceeded"),
            ("image_too_large", "image_error"),
            ("", "other"),
            ("throttlingException", "throttling_exception"),
            ("RESOURCE_EXHAUSTED", "resource_exhausted"),
            ("someNewException", "other"),
        ],
    )
    def test_error_type_examples(self, raw: str, expected: str) -> None:
        """Corpus error types keep their names (Bedrock's camelCase as snake_case); the image
        family collapses."""
        assert normalise_error_type(raw) == expected
