"""The goodput verdict: a stream counts only if it completed and met every objective."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from streamwatch.core.api import Api
from streamwatch.core.events import StallPhase
from streamwatch.core.record import (
    CloseCause,
    Outcome,
    StallEpisode,
    StreamRecord,
    unanalyzed_record,
)
from streamwatch.core.slo import Objectives, verdict

S = 1_000_000_000
STALL = StallEpisode(phase=StallPhase.MID_STREAM, start_ns=S, end_ns=None)


def record(**changes: Any) -> StreamRecord:
    """A completed stream: first token at 1 s, 11 output tokens, ended at 2 s (TPOT 0.1 s)."""
    base = unanalyzed_record(
        api=Api.OPENAI_CHAT,
        request_model="m",
        t_request_ns=0,
        t_end_ns=2 * S,
        cause=CloseCause.UPSTREAM_EOF,
        body_bytes=10,
    )
    values: dict[str, Any] = {
        "outcome": Outcome.COMPLETED,
        "analysis_failed": False,
        "ttft_ns": 1 * S,
        "output_tokens": 11,
        **changes,
    }
    return dataclasses.replace(base, **values)


class TestVerdict:
    """One verdict per stream: met, or the first objective missed (outcome, ttft, tpot, stall)."""

    def test_met(self) -> None:
        """Within TTFT and TPOT, completed, no stall: met."""
        assert verdict(record(), Objectives(ttft_s=1.0, tpot_s=0.1, no_stall=True)) == "met"

    @pytest.mark.parametrize(
        ("changes", "objectives", "expected"),
        [
            ({"outcome": Outcome.TRUNCATED}, Objectives(ttft_s=5.0), "outcome"),
            ({"ttft_ns": 3 * S, "t_end_ns": 4 * S}, Objectives(ttft_s=2.0), "ttft"),
            ({"ttft_ns": None}, Objectives(ttft_s=2.0), "ttft"),
            ({}, Objectives(tpot_s=0.05), "tpot"),
            ({"stalls": (STALL,)}, Objectives(no_stall=True), "stall"),
        ],
    )
    def test_first_miss(
        self, changes: dict[str, Any], objectives: Objectives, expected: str
    ) -> None:
        """Each objective is judged, outcome first."""
        assert verdict(record(**changes), objectives) == expected

    def test_tpot_needs_two_tokens(self) -> None:
        """A one-token stream is not judged on TPOT."""
        assert verdict(record(output_tokens=1), Objectives(tpot_s=0.001)) == "met"

    def test_inactive_objectives(self) -> None:
        """No objective set: nothing to judge by."""
        assert not Objectives().active
        assert Objectives(no_stall=True).active
