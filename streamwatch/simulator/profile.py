"""Which scenario a request gets: the server's weighted behaviour mix, the request body, `x-sim-*`.

Pure: the caller passes the random generator and the wall-clock `created`, so a seeded profile
replays the same sequence of scenarios for the same sequence of requests.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

from streamwatch.simulator.scenario import Api, Scenario

Behaviour = Literal[
    "normal", "tool_call", "reasoning", "max_tokens", "error", "truncate", "reset", "stall"
]
BEHAVIOURS: tuple[Behaviour, ...] = get_args(Behaviour)

# Mostly healthy traffic with every failure mode present, so a demo moves every metric.
DEFAULT_WEIGHTS: Mapping[Behaviour, float] = {
    "normal": 0.70,
    "tool_call": 0.08,
    "reasoning": 0.08,
    "max_tokens": 0.04,
    "error": 0.03,
    "truncate": 0.03,
    "reset": 0.02,
    "stall": 0.02,
}

HEADER_PREFIX = "x-sim-"


@dataclass(frozen=True, slots=True)
class Profile:
    """Server defaults: the behaviour mix and the timing every scenario starts from."""

    weights: Mapping[Behaviour, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    seed: int | None = None  # None: a different mix on every run
    output_tokens: int = 40
    reasoning_tokens: int = 16
    ttft_s: float = 0.15
    gap_mean_s: float = 0.02
    gap_jitter_s: float = 0.01
    stall_s: float = 12.0  # above streamwatch's default 10 s stall threshold, so stalls register

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(BEHAVIOURS)
        if unknown:
            raise ValueError(f"unknown behaviours {sorted(unknown)}; known: {list(BEHAVIOURS)}")
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError("behaviour weights must be >= 0 with a positive sum")

    def rng(self) -> random.Random:
        """The generator that draws behaviours and per-request seeds for this profile."""
        return random.Random(self.seed)  # noqa: S311 - simulation, not crypto


def parse_weights(text: str) -> dict[Behaviour, float]:
    """`normal=0.9,stall=0.1` -> weights; behaviours left out get weight 0."""
    weights: dict[Behaviour, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        behaviour = _behaviour(name.strip())
        if not sep:
            raise ValueError(f"expected behaviour=weight, got {item!r}")
        weights[behaviour] = float(value)
    return weights


def _behaviour(name: str) -> Behaviour:
    for behaviour in BEHAVIOURS:
        if behaviour == name:
            return behaviour
    raise ValueError(f"unknown behaviour {name!r}; known: {', '.join(BEHAVIOURS)}")


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(HEADER_PREFIX + name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{HEADER_PREFIX}{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{HEADER_PREFIX}{name} must be >= 0, got {value}")
    return value


def _ms_header(headers: Mapping[str, str], name: str, default_s: float) -> float:
    value = _int_header(headers, name)
    return default_s if value is None else value / 1000


def _flag_header(headers: Mapping[str, str], name: str) -> bool:
    return headers.get(HEADER_PREFIX + name, "").lower() in {"1", "true", "yes"}


def _request_fields(api: Api, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the request itself says about the response: model, budget, tool, usage, reasoning."""
    fields: dict[str, Any] = {}
    if isinstance(model := body.get("model"), str) and model:
        fields["model"] = model
    budget_keys = {
        "openai_chat": ("max_completion_tokens", "max_tokens"),
        "openai_responses": ("max_output_tokens",),
        "anthropic_messages": ("max_tokens",),
    }[api]
    for key in budget_keys:
        if isinstance(budget := body.get(key), int) and not isinstance(budget, bool):
            fields["max_tokens"] = budget
            break
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], Mapping):
        tool = tools[0].get("function", tools[0])
        if isinstance(tool, Mapping) and isinstance(name := tool.get("name"), str):
            fields["tool_name"] = name
    if api == "openai_chat":
        options = body.get("stream_options")
        fields["include_usage"] = isinstance(options, Mapping) and bool(
            options.get("include_usage")
        )
        fields["reasoning"] = body.get("reasoning_effort") not in {None, "none", "minimal"}
    elif api == "openai_responses":
        reasoning = body.get("reasoning")
        fields["reasoning"] = isinstance(reasoning, Mapping) and bool(reasoning.get("summary"))
    else:
        thinking = body.get("thinking")
        fields["reasoning"] = isinstance(thinking, Mapping) and thinking.get("type") == "enabled"
    return fields


def scenario_for(
    api: Api,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    profile: Profile,
    rng: random.Random,
    *,
    created: int,
    input_tokens: int,
) -> Scenario:
    """The scenario for one request: profile defaults, then the request body, then `x-sim-*`.

    Raises ValueError naming the header when an `x-sim-*` value is invalid.
    """
    name = headers.get(HEADER_PREFIX + "scenario")
    if name is None:
        names = list(profile.weights)
        behaviour = rng.choices(names, weights=[profile.weights[n] for n in names])[0]
    else:
        behaviour = _behaviour(name)
    drawn_seed = rng.getrandbits(32)
    seed = _int_header(headers, "seed")
    tokens = _int_header(headers, "tokens")
    reasoning_tokens = _int_header(headers, "reasoning-tokens")
    scenario = Scenario(
        api=api,
        model="sim-model",
        output_tokens=profile.output_tokens if tokens is None else tokens,
        reasoning_tokens=profile.reasoning_tokens if reasoning_tokens is None else reasoning_tokens,
        ttft_s=_ms_header(headers, "ttft-ms", profile.ttft_s),
        gap_mean_s=_ms_header(headers, "gap-ms", profile.gap_mean_s),
        gap_jitter_s=_ms_header(headers, "jitter-ms", profile.gap_jitter_s),
        stall_s=_ms_header(headers, "stall-ms", profile.stall_s),
        timestamps=_flag_header(headers, "timestamps"),
        input_tokens=input_tokens,
        created=created,
        seed=drawn_seed if seed is None else seed,
    )
    scenario = replace(scenario, **_request_fields(api, body))
    middle = scenario.output_tokens // 2
    if behaviour == "tool_call" or _flag_header(headers, "tool-call"):
        scenario = replace(scenario, tool_call=True)
    if behaviour == "reasoning" or _flag_header(headers, "reasoning"):
        scenario = replace(scenario, reasoning=True)
    if behaviour == "max_tokens":
        scenario = replace(scenario, max_tokens=min(scenario.max_tokens or middle, middle))

    def after(header: str, default_for: Behaviour) -> int | None:
        explicit = _int_header(headers, header)
        if explicit is not None:
            return explicit
        return middle if behaviour == default_for else None

    return replace(
        scenario,
        error_after=after("error-after", "error"),
        truncate_after=after("truncate-after", "truncate"),
        reset_after=after("reset-after", "reset"),
        stall_after=after("stall-after", "stall"),
    )
