"""Durations announced in response headers: known headers only, validated, never raising."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwatch.core.announced import HEADER_TIMINGS, MAX_VALUE_BYTES, header_timings
from streamwatch.core.record import MAX_REPORTED_NS


class TestHeaderTimings:
    """Known headers become fixed names in ns; anything else, or any doubtful value, is dropped."""

    def test_known_headers(self) -> None:
        """Envoy's integer, OpenAI's and LiteLLM's (fractional) milliseconds, any header case."""
        got = header_timings(
            [
                (b"X-Envoy-Upstream-Service-Time", b"120"),
                (b"openai-processing-ms", b" 85 "),
                (b"x-litellm-overhead-duration-ms", b"3.25"),
                (b"x-litellm-response-duration-ms", b"412.5"),
                (b"x-litellm-callback-duration-ms", b"0.1"),
                (b"server-timing", b"upstream;dur=5"),  # not a known header: ignored
                (b"content-type", b"text/event-stream"),
            ]
        )
        assert dict(got) == {
            "envoy_upstream_service": 120_000_000,
            "openai_processing": 85_000_000,
            "litellm_overhead": 3_250_000,
            "litellm_response": 412_500_000,
            "litellm_callback": 100_000,
        }

    @pytest.mark.parametrize(
        "value",
        [b"-1", b"+5", b"1e3", b"inf", b"nan", b"NaN", b"", b"5ms", b"5,0", b"0x10", b"1.",
         b".5", b"1" * (MAX_VALUE_BYTES + 1), b"86400001", b"\xff"],
    )  # fmt: skip
    def test_doubtful_values_dropped(self, value: bytes) -> None:
        """Signs, exponents, units, non-numbers, overlong values and more than a day are dropped."""
        assert header_timings([(b"openai-processing-ms", value)]) == ()

    def test_first_occurrence_decides(self) -> None:
        """A repeated header counts once: its first value, even when that one is invalid."""
        assert dict(
            header_timings([(b"openai-processing-ms", b"7"), (b"openai-processing-ms", b"9")])
        ) == {"openai_processing": 7_000_000}
        assert (
            header_timings([(b"openai-processing-ms", b"x"), (b"openai-processing-ms", b"9")]) == ()
        )

    @given(st.lists(st.tuples(st.sampled_from([*HEADER_TIMINGS, b"x"]), st.binary(max_size=40))))
    def test_hostile_values_never_raise(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Any bytes: known names only, values within a day, never an exception."""
        for name, ns in header_timings(headers):
            assert name in HEADER_TIMINGS.values()
            assert 0 <= ns <= MAX_REPORTED_NS
