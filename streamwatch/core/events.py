"""What the stream analyzer reports while a stream is open: small frozen facts, named in the past tense.

Times are monotonic nanoseconds from the caller's clock; durations are nanoseconds. The proxy hands
these to the sinks as they happen (metric observations, span events), so live dashboards do not wait
for a stream to end. Only the analyzer emits them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple


class StallPhase(StrEnum):
    """Whether a stall began before the first output event or between two of them."""

    BEFORE_FIRST_TOKEN = "before_first_token"
    MID_STREAM = "mid_stream"


@dataclass(frozen=True, slots=True)
class FirstByteReceived:
    """The first response body byte arrived (TTFB = ``ttfb_ns``)."""

    at_ns: int
    ttfb_ns: int


@dataclass(frozen=True, slots=True)
class FirstTokenReceived:
    """The first output event arrived (TTFT = ``ttft_ns``); ``model`` as the stream named it."""

    at_ns: int
    ttft_ns: int
    model: str | None = None


class OutputReceived(NamedTuple):
    """One output event (text, reasoning, refusal or tool-call delta) arrived.

    ``gap_ns`` is the time since the previous output event, None for the first one.

    A ``NamedTuple`` rather than a frozen dataclass like its siblings: one is built per output
    event of every stream, and ``new_output`` (``tuple.__new__``) builds it for a third of what
    the cheapest frozen-dataclass ``__init__`` costs. It is as immutable; unlike a dataclass it
    also equals a plain tuple of the same values, which no caller compares it with.
    """

    at_ns: int
    gap_ns: int | None


#: ``OutputReceived(at_ns, gap_ns)`` without the generated Python ``__new__``'s call: the same
#: instance, built by ``tuple.__new__`` from a tuple of the two fields.
new_output: Callable[[type[OutputReceived], tuple[int, int | None]], OutputReceived] = tuple.__new__


@dataclass(frozen=True, slots=True)
class ErrorFrameReceived:
    """A mid-stream error event: ``error_type`` as the provider named it, ``message`` capped."""

    at_ns: int
    event_index: int
    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class TerminalFrameReceived:
    """The protocol's end-of-stream frame (``[DONE]``, ``message_stop``, ``response.completed``...)."""

    at_ns: int
    marker: str


@dataclass(frozen=True, slots=True)
class MalformedFrameReceived:
    """An SSE event the interpreter could not read (bad JSON, wrong shape); it was forwarded anyway."""

    at_ns: int
    event_index: int
    reason: str


@dataclass(frozen=True, slots=True)
class OversizeEventDropped:
    """An SSE event passed the decoder's cap and was not analyzed (it was still forwarded): the
    decoder's :class:`~streamwatch.core.sse.OversizeEventDropped`, timed."""

    at_ns: int
    size: int


@dataclass(frozen=True, slots=True)
class StallStarted:
    """Silence passed the threshold: ``since_ns`` is when the silence began, ``at_ns`` when noticed."""

    at_ns: int
    since_ns: int
    phase: StallPhase


@dataclass(frozen=True, slots=True)
class StallEnded:
    """Output resumed (or the stream ended) after a stall that began at ``since_ns``."""

    at_ns: int
    since_ns: int
    phase: StallPhase


StreamEvent = (
    FirstByteReceived
    | FirstTokenReceived
    | OutputReceived
    | ErrorFrameReceived
    | TerminalFrameReceived
    | MalformedFrameReceived
    | OversizeEventDropped
    | StallStarted
    | StallEnded
)
