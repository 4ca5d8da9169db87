"""Did a stream meet its service-level objectives? The goodput verdict, from the record alone.

Goodput as serving research defines it: a stream counts only if it completed and met both its
time-to-first-token and its time-per-output-token objective (and, if asked, never stalled). TPOT
is (duration - TTFT) / (output tokens - 1), so it needs two output tokens; a stream with fewer is
judged on the rest. One verdict per stream: ``met``, or the first objective missed, in this order.
Which objectives judge a stream: its model's if the config names that model, else its route's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from streamwatch.core.record import Outcome, StreamRecord

MET: Final = "met"
MISSED_OUTCOME: Final = "outcome"  # did not complete (truncated, error frame, reset, ...)
MISSED_TTFT: Final = "ttft"
MISSED_TPOT: Final = "tpot"
MISSED_STALL: Final = "stall"
MISS_REASONS: Final = (MISSED_OUTCOME, MISSED_TTFT, MISSED_TPOT, MISSED_STALL)


@dataclass(frozen=True, slots=True)
class Objectives:
    """A route's objectives; ``None`` leaves a dimension unjudged."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    no_stall: bool = False

    @property
    def active(self) -> bool:
        """Whether any objective is set (else streams are not judged at all)."""
        return self.ttft_s is not None or self.tpot_s is not None or self.no_stall


@dataclass(frozen=True, slots=True)
class Goodput:
    """The objectives of every route and of the models that have their own (``slo_models``)."""

    routes: Mapping[str, Objectives]
    models: Mapping[str, Objectives] = field(default_factory=dict)

    def objectives(self, route: str, record: StreamRecord) -> Objectives | None:
        """What ``record`` is judged by: the objectives of its response model, else of its
        request model (an alias the provider answered under a dated name), else of its route;
        ``None`` when none are set."""
        for model in (record.response_model, record.request_model):
            found = self.models.get(model) if model else None
            if found is not None:
                return found
        found = self.routes.get(route)
        return found if found is not None and found.active else None


def verdict(record: StreamRecord, objectives: Objectives) -> str:
    """``met``, or the first objective the stream missed."""
    if record.outcome is not Outcome.COMPLETED:
        return MISSED_OUTCOME
    ttft_ns = record.ttft_ns
    if objectives.ttft_s is not None and (ttft_ns is None or ttft_ns > objectives.ttft_s * 1e9):
        return MISSED_TTFT
    if objectives.tpot_s is not None and ttft_ns is not None and record.output_tokens >= 2:
        tpot_ns = (record.duration_ns - ttft_ns) / (record.output_tokens - 1)
        if tpot_ns > objectives.tpot_s * 1e9:
            return MISSED_TPOT
    if objectives.no_stall and record.stalls:
        return MISSED_STALL
    return MET
