"""The sink port: the tracer answers first, its trace id reaches every sink, hooks are optional and
a sink that raises is dropped for that request alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from streamwatch.core.api import Api
from streamwatch.core.events import (
    FirstTokenReceived,
    OutputReceived,
    StallPhase,
    StallStarted,
    StreamEvent,
)
from streamwatch.core.record import StreamRecord
from streamwatch.sinks import HELD_OUTPUTS, Exchange, Fanout, Hooks, SinkEvent, Sinks, Trace

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _exchange() -> Exchange:
    return Exchange(
        request_id="r1",
        route="default",
        method="POST",
        path="/v1/chat/completions",
        api=Api.OPENAI_CHAT,
        request_model="gpt-4o-mini",
        stream_requested=True,
        t_request_ns=0,
        headers=CIMultiDictProxy(CIMultiDict()),
    )


@dataclass
class Recording:
    """A sink that records every hook call it receives, optionally raising in one stage."""

    calls: list[tuple[str, object]] = field(default_factory=list)
    trace_ids: list[str | None] = field(default_factory=list)
    fail_in: str = ""
    finish_only: bool = False

    def _record(self, stage: str, value: object) -> None:
        self.calls.append((stage, value))
        if stage == self.fail_in:
            raise RuntimeError(f"sink fault in {stage}")

    def hooks(self) -> Hooks:
        def finish(record: StreamRecord | None, error_kind: str | None) -> None:
            self._record("finish", error_kind)

        if self.finish_only:
            return Hooks(finish=finish)

        def upstream_request(headers: CIMultiDict[str]) -> None:
            self._record("upstream_request", None)

        def response(status: int, api: Api | None) -> None:
            self._record("response", status)

        def events(events: Sequence[StreamEvent]) -> None:
            for event in events:
                self._record("event", event)

        return Hooks(upstream_request, response, events, finish)

    def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks:
        self.trace_ids.append(trace_id)
        return self.hooks()


@dataclass
class RecordingTracer:
    """A tracer that decides a fixed trace id and records its own hook calls."""

    sink: Recording = field(default_factory=Recording)

    def trace(self, exchange: Exchange) -> Trace:
        return Trace(self.sink.hooks(), TRACE_ID)


def _run(sinks: Sinks) -> None:
    fanout = sinks.open(_exchange())
    fanout.upstream_request(CIMultiDict())
    fanout.response(200, Api.OPENAI_CHAT)
    fanout.emit((OutputReceived(1, None), OutputReceived(2, 1)))
    fanout.finish(None, None)


class TestTraceId:
    """The trace id the tracer decides is handed to every other sink as an argument."""

    def test_every_sink_gets_the_tracers_trace_id(self) -> None:
        """Each sink's ``watch`` receives the id the tracer returned, whatever their order."""
        first, second = Recording(), Recording()
        _run(Sinks(sinks=(first, second), tracer=RecordingTracer()))
        assert first.trace_ids == second.trace_ids == [TRACE_ID]

    def test_without_a_tracer_sinks_get_none(self) -> None:
        """Tracing off: sinks are asked with no trace id."""
        sink = Recording()
        _run(Sinks(sinks=(sink,)))
        assert sink.trace_ids == [None]


class TestHooks:
    """Hooks fire in the documented order; a hook left out is never called."""

    def test_order_of_hooks(self) -> None:
        """upstream_request, response, each event, then finish."""
        tracer = RecordingTracer()
        _run(Sinks(tracer=tracer))
        assert [stage for stage, _ in tracer.sink.calls] == [
            "upstream_request",
            "response",
            "event",
            "event",
            "finish",
        ]

    def test_a_sink_with_only_finish_is_called_only_at_the_end(self) -> None:
        """A finish-only sink is not in the per-event fan-out and sees exactly one call."""
        sink = Recording(finish_only=True)
        _run(Sinks(sinks=(sink,)))
        assert sink.calls == [("finish", None)]


class TestWantsOutputs:
    """The analyzer is asked for per-output events only when a sink that listens wants them."""

    @pytest.mark.parametrize(
        ("hooks", "wanted"),
        [
            ((Hooks(finish=lambda r, e: None),), False),
            ((Hooks(events=lambda e: None, outputs=False),), False),
            ((Hooks(events=lambda e: None, outputs=False), Hooks(events=lambda e: None)), True),
        ],
    )
    def test_wanted_only_by_a_listening_sink(self, hooks: tuple[Hooks, ...], wanted: bool) -> None:
        """A finish-only sink or one that ignores outputs does not want them."""
        assert Fanout([(str(i), h) for i, h in enumerate(hooks)]).wants_outputs is wanted


class TestOutputsOnlyReads:
    """A read of output events alone is held, then reaches only the sinks that take outputs."""

    def test_a_sink_that_ignores_outputs_is_called_only_for_other_events(self) -> None:
        """The outputs-only reads skip it and are held; a read that also carries another event
        reaches it whole, after the held outputs reached the sink that takes them."""
        selective: list[Sequence[SinkEvent]] = []
        taking: list[Sequence[SinkEvent]] = []
        fanout = Fanout(
            [
                ("tracer", Hooks(events=selective.append, outputs=False)),
                ("metrics", Hooks(events=taking.append)),
            ]
        )
        outputs = (OutputReceived(1, None), OutputReceived(2, 1))
        mixed = (OutputReceived(3, 1), FirstTokenReceived(3, 3, "gpt-4o-mini"))
        fanout.emit(outputs)
        assert taking == []
        fanout.emit(mixed)
        assert selective == [mixed]
        assert taking == [list(outputs), mixed]

    def test_after_the_only_sink_taking_outputs_is_dropped(self) -> None:
        """Once the sink that took outputs has raised and is dropped, the other still gets
        every read that carries anything but output events, and no outputs-only read."""
        selective: list[Sequence[SinkEvent]] = []

        def raising(events: Sequence[SinkEvent]) -> None:
            raise RuntimeError("sink fault")

        fanout = Fanout(
            [
                ("tracer", Hooks(events=selective.append, outputs=False)),
                ("metrics", Hooks(events=raising)),
            ]
        )
        stall = (StallStarted(5, 1, StallPhase.MID_STREAM),)
        fanout.emit((OutputReceived(1, None),))
        fanout.emit(stall)
        fanout.emit((OutputReceived(6, 5),))
        assert selective == [stall]


class TestHeldOutputs:
    """Output events are delivered in order, at most HELD_OUTPUTS at a time, by the watchdog's
    flush or before the request's finish."""

    def test_flush_delivers_what_is_held_once(self) -> None:
        """Reads of outputs arrive together, in order, at the flush; a second flush is silent."""
        taking: list[Sequence[SinkEvent]] = []
        fanout = Fanout([("metrics", Hooks(events=taking.append))])
        reads = [(OutputReceived(t, 1),) for t in range(1, 4)]
        for read in reads:
            fanout.emit(read)
        fanout.flush()
        fanout.flush()
        assert taking == [[event for read in reads for event in read]]

    def test_the_bound_delivers_without_a_flush(self) -> None:
        """The HELD_OUTPUTS-th held event delivers the batch: memory stays bounded between ticks."""
        taking: list[Sequence[SinkEvent]] = []
        fanout = Fanout([("metrics", Hooks(events=taking.append))])
        for t in range(HELD_OUTPUTS + 1):
            fanout.emit((OutputReceived(t, 1),))
        assert [len(batch) for batch in taking] == [HELD_OUTPUTS]

    def test_finish_delivers_them_first(self) -> None:
        """A request's held outputs reach the sink before its finish hook."""
        calls: list[str] = []
        fanout = Fanout(
            [
                (
                    "metrics",
                    Hooks(
                        events=lambda events: calls.append(f"events {len(events)}"),
                        finish=lambda record, kind: calls.append("finish"),
                    ),
                )
            ]
        )
        fanout.emit((OutputReceived(1, None), OutputReceived(2, 1)))
        fanout.finish(None, None)
        assert calls == ["events 2", "finish"]


class TestFaultIsolation:
    """A sink that raises is dropped for the rest of the request; the others carry on."""

    @pytest.mark.parametrize("stage", ["upstream_request", "response", "event", "finish"])
    def test_raising_sink_is_dropped_others_continue(self, stage: str) -> None:
        """After its fault the sink gets no further hook; its neighbour gets every hook."""
        faulty, healthy = Recording(fail_in=stage), Recording()
        _run(Sinks(sinks=(faulty, healthy)))
        stages = [s for s, _ in faulty.calls]
        assert stages[-1] == stage
        assert stages.count(stage) == 1
        assert [s for s, _ in healthy.calls] == [
            "upstream_request",
            "response",
            "event",
            "event",
            "finish",
        ]

    def test_fault_is_per_request(self) -> None:
        """The next request asks the faulty sink again."""
        faulty = Recording(fail_in="response")
        sinks = Sinks(sinks=(faulty,))
        _run(sinks)
        _run(sinks)
        assert [s for s, _ in faulty.calls].count("response") == 2

    def test_a_sink_that_cannot_watch_is_skipped(self) -> None:
        """A sink whose ``watch`` raises is left out of that request; the others are asked."""

        class Broken:
            def watch(self, exchange: Exchange, trace_id: str | None) -> Hooks:
                raise RuntimeError("cannot watch")

        healthy = Recording()
        _run(Sinks(sinks=(Broken(), healthy)))
        assert [s for s, _ in healthy.calls][-1] == "finish"
