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


def _path(body: Mapping[str, Any], *keys: str) -> Any:
    """``body[k1][k2]…``, or None where a level is missing or not a mapping."""
    value: Any = body
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


# Where each API's request names its output budget (the first one present wins).
_BUDGETS: Mapping[Api, tuple[tuple[str, ...], ...]] = {
    "openai_chat": (("max_completion_tokens",), ("max_tokens",)),
    "openai_responses": (("max_output_tokens",),),
    "anthropic_messages": (("max_tokens",),),
    "openai_completions": (("max_tokens",),),
    "gemini": (("generationConfig", "maxOutputTokens"),),
    "gemini_json": (("generationConfig", "maxOutputTokens"),),
    "bedrock_converse": (("inferenceConfig", "maxTokens"),),
    "bedrock_invoke": (("max_tokens",),),  # an Anthropic body
    "ollama_chat": (("options", "num_predict"),),
    "ollama_generate": (("options", "num_predict"),),
    "cohere_v2": (("max_tokens",),),
}


def _tool_name(api: Api, body: Mapping[str, Any]) -> str | None:
    if api in ("gemini", "gemini_json"):
        name = None
        tools = body.get("tools")
        if isinstance(tools, list) and tools and isinstance(tools[0], Mapping):
            declarations = tools[0].get("functionDeclarations")
            if isinstance(declarations, list) and declarations:
                name = _path(declarations[0], "name")
        return name if isinstance(name, str) else None
    tools = _path(body, "toolConfig", "tools") if api == "bedrock_converse" else body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[0], Mapping):
        tool = tools[0].get("toolSpec") or tools[0].get("function", tools[0])
        if isinstance(tool, Mapping) and isinstance(name := tool.get("name"), str):
            return name
    return None


def _reasoning(api: Api, body: Mapping[str, Any]) -> bool:
    """Whether the request asks to see the model's reasoning, in its API's words."""
    if api == "openai_chat":
        return body.get("reasoning_effort") not in {None, "none", "minimal"}
    if api == "openai_responses":
        return bool(_path(body, "reasoning", "summary"))
    if api in ("gemini", "gemini_json"):
        return _path(body, "generationConfig", "thinkingConfig", "includeThoughts") is True
    if api in ("ollama_chat", "ollama_generate"):
        return body.get("think") is True
    if api == "openai_completions":
        return False
    if api == "bedrock_converse":
        return bool(_path(body, "additionalModelRequestFields", "thinking", "type") == "enabled")
    return bool(_path(body, "thinking", "type") == "enabled")  # Anthropic, invoke, Cohere


def _request_fields(api: Api, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the request itself says about the response: model, budget, tool, usage, reasoning."""
    fields: dict[str, Any] = {}
    if isinstance(model := body.get("model"), str) and model:
        fields["model"] = model
    for keys in _BUDGETS[api]:
        budget = _path(body, *keys)
        if isinstance(budget, int) and not isinstance(budget, bool):
            fields["max_tokens"] = budget
            break
    if (name := _tool_name(api, body)) is not None:
        fields["tool_name"] = name
    if api in ("openai_chat", "openai_completions"):
        fields["include_usage"] = bool(_path(body, "stream_options", "include_usage"))
    fields["reasoning"] = _reasoning(api, body)
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
    model: str | None = None,
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
    if model:  # named by the path (Gemini, Bedrock), not the body
        scenario = replace(scenario, model=model)
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
