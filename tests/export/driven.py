"""Drive a metrics sink through the port's real hooks with real analyzer events."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from streamwatch.core.api import Api
from streamwatch.core.events import (
    ErrorFrameReceived,
    FirstByteReceived,
    FirstTokenReceived,
    MalformedFrameReceived,
    OutputReceived,
    OversizeEventDropped,
    StallEnded,
    StallPhase,
    StallStarted,
)
from streamwatch.core.record import StreamRecord
from streamwatch.sinks import AnalysisStopped, Exchange, Sink

PATHS = {
    Api.OPENAI_CHAT: "/v1/chat/completions",
    Api.OPENAI_RESPONSES: "/v1/responses",
    Api.ANTHROPIC_MESSAGES: "/v1/messages",
    Api.SSE: "/v1/events",
}


def s_to_ns(seconds: float) -> int:
    return round(seconds * 1e9)


class Driven:
    """One streamed request as the proxy reports it: response headers at once, then events."""

    def __init__(
        self,
        sink: Sink,
        api: Api | str = Api.OPENAI_CHAT,
        model: str | None = "gpt-4o",
        *,
        route: str = "default",
        trace_id: str | None = None,
        status: int = 200,
    ) -> None:
        api = Api(api)
        self.exchange = Exchange(
            request_id="req-1",
            route=route,
            method="POST",
            path=PATHS[api],
            api=api,
            request_model=model,
            stream_requested=True,
            t_request_ns=0,
            headers=CIMultiDictProxy(CIMultiDict()),
            status=status,
        )
        hooks = sink.watch(self.exchange, trace_id)
        assert hooks is not None
        self.hooks = hooks
        assert hooks.response is not None
        hooks.response(status, api)

    def _event(self, event: object) -> None:
        assert self.hooks.events is not None
        self.hooks.events((event,))  # type: ignore[arg-type]

    def first_byte(self, seconds: float) -> None:
        self._event(FirstByteReceived(at_ns=s_to_ns(seconds), ttfb_ns=s_to_ns(seconds)))

    def first_token(self, seconds: float, model: str | None = None) -> None:
        ns = s_to_ns(seconds)
        self._event(FirstTokenReceived(at_ns=ns, ttft_ns=ns, model=model))

    def output(self, gap_s: float | None) -> None:
        self._event(OutputReceived(at_ns=0, gap_ns=None if gap_s is None else s_to_ns(gap_s)))

    def read(self, *gaps_s: float | None) -> None:
        """One upstream read carrying several output events: one ``events`` call for all."""
        assert self.hooks.events is not None
        self.hooks.events(
            tuple(OutputReceived(at_ns=0, gap_ns=None if g is None else s_to_ns(g)) for g in gaps_s)
        )

    def error_frame(self, error_type: str) -> None:
        self._event(ErrorFrameReceived(at_ns=0, event_index=1, error_type=error_type, message=""))

    def stall_started(self, phase: StallPhase) -> None:
        self._event(StallStarted(at_ns=0, since_ns=0, phase=phase))

    def stall_ended(self, phase: StallPhase = StallPhase.MID_STREAM) -> None:
        self._event(StallEnded(at_ns=0, since_ns=0, phase=phase))

    def malformed(self) -> None:
        self._event(MalformedFrameReceived(at_ns=0, event_index=1, reason="not json"))

    def oversize(self) -> None:
        self._event(OversizeEventDropped(at_ns=0, size=1 << 20))

    def analysis_stopped(self) -> None:
        self._event(AnalysisStopped(at_ns=0, stage="analyzer"))

    def finish(self, record: StreamRecord | None = None, error_kind: str | None = None) -> None:
        assert self.hooks.finish is not None
        self.hooks.finish(record, error_kind)
