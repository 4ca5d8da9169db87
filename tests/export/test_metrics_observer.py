"""The metrics sink on a fresh registry: a real analyzer's events and record in, exactly the samples
the stream implies out (live while it is open, final once it ends).

Driven through the sink's public hooks with the events of a real :class:`StreamAnalyzer` fed a
simulator stream; expectations come from the simulator's plan and the chosen timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence

from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry

from streamwatch.core.analyzer import StreamAnalyzer
from streamwatch.core.api import Api
from streamwatch.core.record import CloseCause, StreamRecord
from streamwatch.export.metrics_observer import MetricsSink
from streamwatch.export.prometheus import Metrics
from streamwatch.simulator.scenario import Scenario, Send, plan, steps
from streamwatch.sinks import AnalysisStopped, Exchange, Hooks

MS = 1_000_000
T0 = 1_000 * MS
ROUTE = "default"
TOKENS = 5


def exchange(api: Api | None, model: str | None = "req-model", path: str = "/v1/x") -> Exchange:
    return Exchange(
        request_id="r1",
        route=ROUTE,
        method="POST",
        path=path,
        api=api,
        request_model=model,
        stream_requested=True,
        t_request_ns=T0,
        headers=CIMultiDictProxy(CIMultiDict()),
        status=200,
    )


def frames(api: str, model: str, **changes: object) -> list[bytes]:
    scenario = Scenario(api=api, model=model, output_tokens=TOKENS, **changes)  # type: ignore[arg-type]
    return [step.data for step in steps(scenario) if isinstance(step, Send)]


class Sink:
    """The metrics sink on its own registry, one request at a time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sink = MetricsSink(Metrics(self.registry, routes=[ROUTE]))

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels`` (and the route)."""
        want = {"route": ROUTE, **labels}
        return sum(
            s.value
            for family in self.registry.collect()
            for s in family.samples
            if s.name == name and want.items() <= s.labels.items()
        )

    def open(self, ex: Exchange, trace_id: str | None = None) -> Hooks:
        hooks = self.sink.watch(ex, trace_id)
        assert hooks is not None
        if hooks.upstream_request is not None:
            hooks.upstream_request(CIMultiDict())
        return hooks

    def stream(
        self, api: Api, reads: Sequence[bytes], *, trace_id: str | None = None
    ) -> tuple[Hooks, StreamRecord]:
        """Run a stream through a real analyzer, one read per ms after a 50 ms TTFB; not finished."""
        hooks = self.open(exchange(api), trace_id)
        assert hooks.response is not None
        assert hooks.event is not None
        hooks.response(200, api)
        analyzer = StreamAnalyzer(api, T0, request_model="req-model")
        at = T0 + 50 * MS
        for read in reads:
            for event in analyzer.feed(read, at):
                hooks.event(event)
            at += MS
        events, record = analyzer.close(at, CloseCause.UPSTREAM_EOF)
        for event in events:
            hooks.event(event)
        return hooks, record


class TestLiveAndFinal:
    """A stream is active and counted live while open; its outcome is counted once when it ends."""

    def test_completed_chat_stream(self) -> None:
        """Active 1 while open and 0 after; one completed stream, every output event, one TTFT."""
        sink = Sink()
        reads = frames("openai_chat", "answer-model")
        outputs = len(plan(Scenario("openai_chat", "m", output_tokens=TOKENS)).text)
        hooks, record = sink.stream(Api.OPENAI_CHAT, reads)
        chat = {"api": "openai_chat"}
        answered = {**chat, "model": "answer-model"}
        assert sink.value("streamwatch_streams_active", **chat) == 1
        assert sink.value("streamwatch_output_events_total", **chat) == outputs
        assert sink.value("streamwatch_time_to_first_token_seconds_count", **chat) == 1
        assert sink.value("streamwatch_time_to_first_byte_seconds_count", **chat) == 1
        assert sink.value("streamwatch_streams_total", **answered, outcome="completed") == 0
        assert hooks.finish is not None
        hooks.finish(record, None)
        assert sink.value("streamwatch_streams_active", **chat) == 0
        assert sink.value("streamwatch_streams_total", **answered, outcome="completed") == 1
        assert sink.value("streamwatch_requests_total", **chat, code="200") == 1
        assert sink.value("streamwatch_inter_chunk_gap_seconds_count", **chat) == outputs - 1
        # Counted under the model that answered, never under the one requested.
        assert (
            sink.value("streamwatch_streams_total", **chat, model="req-model", outcome="completed")
            == 0
        )

    def test_error_frame(self) -> None:
        """An in-band error frame is counted live by type, and the stream ends as error_frame."""
        sink = Sink()
        reads = frames("anthropic_messages", "claude", error_after=2)
        hooks, record = sink.stream(Api.ANTHROPIC_MESSAGES, reads)
        labels = {"api": "anthropic_messages"}
        assert sink.value("streamwatch_error_frames_total", **labels) == 1
        assert hooks.finish is not None
        hooks.finish(record, None)
        assert sink.value("streamwatch_streams_total", **labels, outcome="error_frame") == 1

    def test_analysis_stopped(self) -> None:
        """The tap's AnalysisStopped is counted once as an analyzer fault; the stream still ends."""
        sink = Sink()
        hooks, record = sink.stream(Api.OPENAI_CHAT, frames("openai_chat", "m")[:2])
        assert hooks.event is not None
        hooks.event(AnalysisStopped(T0 + 60 * MS, "analyzer"))
        assert hooks.finish is not None
        hooks.finish(record, None)
        labels = {"api": "openai_chat"}
        assert sink.value("streamwatch_analysis_errors_total", **labels, stage="analyzer") == 1
        assert sink.value("streamwatch_streams_active", **labels) == 0


class TestRequestsWithoutStream:
    """Requests that never stream are counted as requests only: no stream series appear."""

    def test_upstream_failure(self) -> None:
        """A failed upstream counts its kind and the 502 the client got; no stream, no active gauge."""
        sink = Sink()
        ex = exchange(Api.OPENAI_CHAT)
        ex.status = 502
        hooks = sink.open(ex)
        assert hooks.finish is not None
        hooks.finish(None, "connect")
        assert sink.value("streamwatch_upstream_errors_total", kind="connect") == 1
        assert sink.value("streamwatch_requests_total", api="openai_chat", code="502") == 1
        names = {s.name for m in sink.registry.collect() for s in m.samples if s.value}
        assert not {n for n in names if n.startswith("streamwatch_streams_total")}

    def test_not_an_llm_api(self) -> None:
        """A path that is no LLM API is counted with api ``other``."""
        sink = Sink()
        hooks = sink.open(exchange(None, None, path="/v1/models"))
        assert hooks.response is not None
        assert hooks.finish is not None
        hooks.response(200, None)
        hooks.finish(None, None)
        assert sink.value("streamwatch_requests_total", api="other", code="200") == 1


class TestExemplars:
    """The trace id the sink is given is the exemplar of the stream's latency observations."""

    def test_trace_id_is_the_exemplar(self) -> None:
        """TTFT, TTFB and gap buckets carry the request's trace id; without one, no exemplar."""
        traced, untraced = Sink(), Sink()
        for sink, trace_id in ((traced, "4bf92f3577b34da6a3ce929d0e0e4736"), (untraced, None)):
            hooks, record = sink.stream(
                Api.OPENAI_CHAT, frames("openai_chat", "m"), trace_id=trace_id
            )
            assert hooks.finish is not None
            hooks.finish(record, None)
        names = (
            "streamwatch_time_to_first_token_seconds_bucket",
            "streamwatch_time_to_first_byte_seconds_bucket",
            "streamwatch_inter_chunk_gap_seconds_bucket",
        )
        for name in names:
            assert exemplar_trace_ids(traced, name) == {"4bf92f3577b34da6a3ce929d0e0e4736"}, name
            assert exemplar_trace_ids(untraced, name) == set(), name


def exemplar_trace_ids(sink: Sink, name: str) -> set[str]:
    return {
        s.exemplar.labels["trace_id"]
        for family in sink.registry.collect()
        for s in family.samples
        if s.name == name and s.exemplar is not None
    }
