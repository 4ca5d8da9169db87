"""Scenario selection: seeded behaviour mix, request fields, and x-sim-* overrides."""

from __future__ import annotations

import random

import pytest

from streamwatch.simulator.profile import Behaviour, Profile, parse_weights, scenario_for
from streamwatch.simulator.scenario import Scenario


def _pick(
    profile: Profile, rng: random.Random, headers: dict[str, str] | None = None, **body: object
) -> Scenario:
    return scenario_for("openai_chat", body, headers or {}, profile, rng, created=0, input_tokens=5)


class TestMix:
    """A seeded profile replays the same scenarios; a single behaviour always applies."""

    def test_seeded_profile_replays(self) -> None:
        profile = Profile(seed=3)
        first, second = profile.rng(), profile.rng()
        assert [_pick(profile, first) for _ in range(50)] == [
            _pick(profile, second) for _ in range(50)
        ]

    @pytest.mark.parametrize(
        ("behaviour", "field"),
        [
            ("error", "error_after"),
            ("truncate", "truncate_after"),
            ("reset", "reset_after"),
            ("stall", "stall_after"),
        ],
    )
    def test_failure_in_the_middle(self, behaviour: Behaviour, field: str) -> None:
        profile = Profile(weights={behaviour: 1.0}, output_tokens=40)
        assert getattr(_pick(profile, profile.rng()), field) == 20

    def test_max_tokens_behaviour_cuts(self) -> None:
        profile = Profile(weights={"max_tokens": 1.0}, output_tokens=40)
        assert _pick(profile, profile.rng()).cut

    def test_unknown_behaviour(self) -> None:
        with pytest.raises(ValueError, match="unknown behaviours"):
            Profile(weights={"chaos": 1.0})  # type: ignore[dict-item]

    def test_parse_weights(self) -> None:
        assert parse_weights("normal=0.9, stall=0.1") == {"normal": 0.9, "stall": 0.1}
        with pytest.raises(ValueError, match="unknown behaviour"):
            parse_weights("sleepy=1")


class TestRequestAndHeaders:
    """The request body sets model, budget, tools and usage; headers override the profile."""

    def test_request_fields(self) -> None:
        profile = Profile(weights={"normal": 1.0})
        scenario = _pick(
            profile,
            profile.rng(),
            model="gpt-x",
            max_tokens=7,
            stream_options={"include_usage": True},
            tools=[{"type": "function", "function": {"name": "lookup"}}],
        )
        assert (scenario.model, scenario.max_tokens, scenario.include_usage, scenario.tool_name) == (
            "gpt-x", 7, True, "lookup"
        )  # fmt: skip

    def test_headers(self) -> None:
        profile = Profile(weights={"normal": 1.0})
        headers = {
            "x-sim-tokens": "3", "x-sim-ttft-ms": "250", "x-sim-gap-ms": "5", "x-sim-seed": "9",
            "x-sim-error-after": "1", "x-sim-tool-call": "1", "x-sim-timestamps": "1",
        }  # fmt: skip
        scenario = _pick(profile, profile.rng(), headers)
        assert scenario.output_tokens == 3
        assert scenario.ttft_s == 0.25
        assert scenario.gap_mean_s == 0.005
        assert scenario.seed == 9
        assert scenario.interruption == ("error", 1)
        assert scenario.tool_call
        assert scenario.timestamps

    def test_negative_header(self) -> None:
        profile = Profile()
        with pytest.raises(ValueError, match="x-sim-gap-ms"):
            _pick(profile, profile.rng(), {"x-sim-gap-ms": "-1"})
