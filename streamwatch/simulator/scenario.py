"""What one simulated LLM response looks like, byte for byte, and when each byte is due.

Pure and deterministic: no I/O and no clock. A `Scenario` plus its seed always yields the same
`Step`s, so a test can compare a client's parse with `plan(scenario)` and a benchmark can replay the
exact stream. Wall-clock values (`created`, per-chunk send timestamps) come from the caller: the
scenario carries `created`, and a timestamped `Send` says where the server inserts the send time.

Payload shapes follow recorded provider streams (OpenAI Chat Completions, Responses and legacy
completions, Anthropic Messages, Gemini, Bedrock ConverseStream and InvokeModelWithResponseStream,
Ollama, Cohere v2); the mid-stream error frames are the ones listed in the corpus' ERROR_FRAMES.md.
Send-time stamps (``timestamps``) exist for the three original SSE APIs only.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import orjson

from streamwatch.simulator import eventstream

Api = Literal[
    "openai_chat",
    "openai_responses",
    "anthropic_messages",
    "openai_completions",
    "gemini",
    "gemini_json",
    "bedrock_converse",
    "bedrock_invoke",
    "ollama_chat",
    "ollama_generate",
    "cohere_v2",
]
APIS: tuple[Api, ...] = get_args(Api)
Interruption = Literal["error", "truncate", "reset"]

# Top-level JSON field that carries the send time (monotonic ns) of a timestamped output event.
# SDK models accept unknown fields, so clients parse stamped streams unchanged.
TIMESTAMP_FIELD = "sim_sent_ns"

_WORDS = (
    "the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "streams", "of",
    "tokens", "arrive", "at", "a", "steady", "pace", "through", "the", "proxy", "and", "every",
    "gap", "between", "them", "is", "measured", "counted", "and", "kept", "in", "a", "histogram",
    "so", "that", "slow", "models", "stalls", "and", "truncations", "show", "up", "on", "the",
    "dashboard",
)  # fmt: skip

_OPENAI_SERVER_ERROR: dict[str, str | None] = {
    "message": "The server had an error while processing your request. Sorry about that!",
    "type": "server_error",
    "param": None,
    "code": None,
}


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything that decides one response; interruption indexes count output events sent."""

    api: Api
    model: str
    output_tokens: int = 20  # text (or tool-argument) deltas in a complete answer
    reasoning: bool = False
    reasoning_tokens: int = 16  # reasoning deltas (or, for OpenAI chat, reported tokens only)
    tool_call: bool = False
    tool_name: str = "get_weather"
    ttft_s: float = 0.0  # from the start of the body to the first output event
    gap_mean_s: float = 0.0
    gap_jitter_s: float = 0.0  # gaps are uniform in mean ± jitter, never negative
    stall_after: int | None = None  # extra `stall_s` pause after this many output events
    stall_s: float = 0.0
    error_after: int | None = None  # provider error frame, then a clean end of the body
    truncate_after: int | None = None  # clean end of the body without the terminal frame
    reset_after: int | None = None  # transport reset mid-body
    max_tokens: int | None = None  # the request's output budget; a smaller answer is cut
    include_usage: bool = True  # OpenAI chat only: the request's stream_options.include_usage
    timestamps: bool = False
    input_tokens: int = 12
    cached_tokens: int = 0
    created: int = 0  # unix seconds, supplied by the caller
    seed: int = 0

    def __post_init__(self) -> None:
        if self.api not in APIS:
            raise ValueError(f"unknown api {self.api!r}")
        for name in ("output_tokens", "reasoning_tokens", "input_tokens", "cached_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("ttft_s", "gap_mean_s", "gap_jitter_s", "stall_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def interruption(self) -> tuple[Interruption, int] | None:
        """The interruption that ends the stream early and its index: the earliest one set; on a
        tie the error frame beats the truncation, which beats the reset."""
        kinds: tuple[tuple[Interruption, int | None], ...] = (
            ("error", self.error_after),
            ("truncate", self.truncate_after),
            ("reset", self.reset_after),
        )
        candidates = [(after, rank) for rank, (_, after) in enumerate(kinds) if after is not None]
        if not candidates:
            return None
        after, rank = min(candidates)
        return kinds[rank][0], after

    @property
    def cut(self) -> bool:
        """Whether the answer is cut by the output budget (finish_reason `length` and friends)."""
        return self.max_tokens is not None and self.max_tokens < self.output_tokens


@dataclass(frozen=True, slots=True)
class Plan:
    """The content a scenario streams, for building frames and for checking what clients parsed."""

    reasoning: tuple[str, ...]  # reasoning deltas (empty for OpenAI chat: hidden, only counted)
    text: tuple[str, ...]  # text deltas (empty for a tool call)
    tool_arguments: tuple[str, ...]  # argument deltas (empty unless a tool call)
    reasoning_token_count: int  # reasoning tokens reported in usage
    ids: dict[str, str]

    @property
    def output_token_count(self) -> int:
        """Output tokens reported in usage: visible deltas plus reasoning tokens."""
        return len(self.text) + len(self.tool_arguments) + self.reasoning_token_count


@dataclass(frozen=True, slots=True)
class Send:
    """Wait `delay_s` after the previous step, then write `data` as one write."""

    delay_s: float
    data: bytes
    stamp_at: int | None = None  # offset where the server inserts the send time in decimal ns

    def render(self, sent_ns: int) -> bytes:
        """The bytes to write, with the send time inserted when this event is timestamped."""
        if self.stamp_at is None:
            return self.data
        return self.data[: self.stamp_at] + str(sent_ns).encode() + self.data[self.stamp_at :]


@dataclass(frozen=True, slots=True)
class Close:
    """Wait `delay_s`, then end the response body cleanly (a truncation if no terminal frame)."""

    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Reset:
    """Wait `delay_s`, then abort the TCP connection mid-body (RST, no end of chunked body)."""

    delay_s: float = 0.0


Step = Send | Close | Reset


def _rng(scenario: Scenario, purpose: str) -> random.Random:
    """A seeded generator per purpose, so timing settings never change the generated content."""
    return random.Random(f"{scenario.seed}:{purpose}")  # noqa: S311 - simulation, not crypto


def _token(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


_ALNUM = string.ascii_letters + string.digits
_HEX = "0123456789abcdef"


def plan(scenario: Scenario) -> Plan:
    """The deterministic content of a scenario (independent of timing and interruptions)."""
    rng = _rng(scenario, "content")
    count = min(scenario.output_tokens, scenario.max_tokens or scenario.output_tokens)
    words = [rng.choice(_WORDS) for _ in range(max(count, 1))]
    text: tuple[str, ...] = ()
    arguments: tuple[str, ...] = ()
    if scenario.tool_call:
        # {"query":"w1 w2 ..."} in `count` deltas (at least five); a budget cut drops the closing
        # '"}', leaving the partial JSON a real cut leaves.
        n_words = max(count - 4, 1)
        pieces = ['{"', "query", '":"', words[0], *(" " + w for w in words[1:n_words]), '"}']
        arguments = tuple(pieces[:-1] if scenario.cut else pieces)
    else:
        text = tuple(w if i == 0 else " " + w for i, w in enumerate(words[:count]))
    reasoning: tuple[str, ...] = ()
    reasoning_count = 0
    if scenario.reasoning:
        reasoning_count = scenario.reasoning_tokens
        if scenario.api != "openai_chat":
            thoughts = [rng.choice(_WORDS) for _ in range(reasoning_count)]
            reasoning = tuple(w if i == 0 else " " + w for i, w in enumerate(thoughts))
    ids = {
        "chat": "chatcmpl-" + _token(rng, _ALNUM, 29),
        "fingerprint": "fp_" + _token(rng, _HEX, 10),
        "response": "resp_" + _token(rng, _HEX, 50),
        "message": "msg_" + _token(rng, _HEX, 50),
        "reasoning": "rs_" + _token(rng, _HEX, 50),
        "function": "fc_" + _token(rng, _HEX, 50),
        "call": "call_" + _token(rng, _ALNUM, 24),
        "anthropic_message": "msg_01" + _token(rng, _ALNUM, 22),
        "tool_use": "toolu_01" + _token(rng, _ALNUM, 22),
        "signature": base64.b64encode(rng.randbytes(96)).decode(),
    }
    return Plan(reasoning, text, arguments, reasoning_count, ids)


@dataclass(frozen=True, slots=True)
class _Frame:
    """One SSE event as the renderer produced it; `output` frames are the ones timed and counted.

    `names_tool` marks the frame that names a tool call: a real model sends it when it has decided
    to call the tool, so it is timed like output (TTFT before it, a gap after it), though it is not
    a token and not counted in interruption indexes.
    """

    data: bytes
    output: bool = False
    stamp_at: int | None = None
    names_tool: bool = False


def _dumps(payload: Any) -> bytes:
    return orjson.dumps(payload)


def _frame(
    event: str | None,
    payload: dict[str, Any],
    *,
    output: bool = False,
    stamp: bool = False,
    names_tool: bool = False,
) -> _Frame:
    head = b"" if event is None else b"event: " + event.encode() + b"\n"
    body = _dumps(payload)
    if not (output and stamp):
        return _Frame(head + b"data: " + body + b"\n\n", output, names_tool=names_tool)
    prefix = head + b"data: " + body[:-1] + b',"' + TIMESTAMP_FIELD.encode() + b'":'
    return _Frame(prefix + b"}\n\n", output, len(prefix))


class _Chat:
    """OpenAI Chat Completions chunks, as in the recorded gpt-4o / gpt-5 streams."""

    def __init__(self, scenario: Scenario, content: Plan) -> None:
        self.s = scenario
        self.p = content

    def _chunk(
        self,
        delta: dict[str, Any],
        finish: str | None = None,
        *,
        output: bool = False,
        names_tool: bool = False,
    ) -> _Frame:
        payload: dict[str, Any] = {
            "id": self.p.ids["chat"],
            "object": "chat.completion.chunk",
            "created": self.s.created,
            "model": self.s.model,
            "system_fingerprint": self.p.ids["fingerprint"],
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.s.include_usage:
            payload["usage"] = None
        return _frame(None, payload, output=output, stamp=self.s.timestamps, names_tool=names_tool)

    def _finish_reason(self) -> str:
        if self.s.cut:
            return "length"
        return "tool_calls" if self.s.tool_call else "stop"

    def usage(self) -> dict[str, Any]:
        output = self.p.output_token_count
        return {
            "prompt_tokens": self.s.input_tokens,
            "completion_tokens": output,
            "total_tokens": self.s.input_tokens + output,
            "prompt_tokens_details": {"cached_tokens": self.s.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.p.reasoning_token_count,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def frames(self) -> Iterator[_Frame]:
        if self.s.tool_call:
            call = {
                "index": 0,
                "id": self.p.ids["call"],
                "type": "function",
                "function": {"name": self.s.tool_name, "arguments": ""},
            }
            role = {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None}
            yield self._chunk(role, names_tool=True)
            for piece in self.p.tool_arguments:
                args = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                yield self._chunk(args, output=True)
        else:
            yield self._chunk({"role": "assistant", "content": "", "refusal": None})
            for piece in self.p.text:
                yield self._chunk({"content": piece}, output=True)
        yield self._chunk({}, self._finish_reason())
        if self.s.include_usage:
            usage = _dumps(
                {
                    "id": self.p.ids["chat"],
                    "object": "chat.completion.chunk",
                    "created": self.s.created,
                    "model": self.s.model,
                    "system_fingerprint": self.p.ids["fingerprint"],
                    "choices": [],
                    "usage": self.usage(),
                }
            )
            yield _Frame(b"data: " + usage + b"\n\n")
        yield _Frame(b"data: [DONE]\n\n")

    def error_frame(self, sequence_number: int) -> bytes:
        # Spaced JSON exactly as in ERROR_FRAMES.md (the API does not emit it compactly).
        return b"data: " + json.dumps({"error": _OPENAI_SERVER_ERROR}).encode() + b"\n\n"

    def body(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if self.s.tool_call else "".join(self.p.text),
            "refusal": None,
            "annotations": [],
        }
        if self.s.tool_call:
            function = {"name": self.s.tool_name, "arguments": "".join(self.p.tool_arguments)}
            message["tool_calls"] = [
                {"id": self.p.ids["call"], "type": "function", "function": function}
            ]
        return {
            "id": self.p.ids["chat"],
            "object": "chat.completion",
            "created": self.s.created,
            "model": self.s.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish_reason(),
                }
            ],
            "usage": self.usage(),
            "service_tier": "default",
            "system_fingerprint": self.p.ids["fingerprint"],
        }


class _Responses:
    """OpenAI Responses API events: `event:` equals `type`, every payload has `sequence_number`."""

    def __init__(self, scenario: Scenario, content: Plan) -> None:
        self.s = scenario
        self.p = content
        self.seq = 0

    def _event(
        self, kind: str, fields: dict[str, Any], *, output: bool = False, names_tool: bool = False
    ) -> _Frame:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return _frame(kind, payload, output=output, stamp=self.s.timestamps, names_tool=names_tool)

    def _items(self) -> list[dict[str, Any]]:
        """The finished output items, in output order."""
        status = "incomplete" if self.s.cut else "completed"
        items: list[dict[str, Any]] = []
        if self.s.reasoning:
            summary = [{"type": "summary_text", "text": "".join(self.p.reasoning)}]
            items.append({"id": self.p.ids["reasoning"], "type": "reasoning", "summary": summary})
        if self.s.tool_call:
            items.append(
                {
                    "id": self.p.ids["function"],
                    "type": "function_call",
                    "status": status,
                    "arguments": "".join(self.p.tool_arguments),
                    "call_id": self.p.ids["call"],
                    "name": self.s.tool_name,
                }
            )
        else:
            part = {
                "type": "output_text",
                "annotations": [],
                "logprobs": [],
                "text": "".join(self.p.text),
            }
            items.append(
                {
                    "id": self.p.ids["message"],
                    "type": "message",
                    "status": status,
                    "content": [part],
                    "role": "assistant",
                }
            )
        return items

    def response(self, status: str) -> dict[str, Any]:
        done = status != "in_progress"
        output = self.p.output_token_count
        usage = {
            "input_tokens": self.s.input_tokens,
            "input_tokens_details": {"cached_tokens": self.s.cached_tokens},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": self.p.reasoning_token_count},
            "total_tokens": self.s.input_tokens + output,
        }
        return {
            "id": self.p.ids["response"],
            "object": "response",
            "created_at": self.s.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "instructions": None,
            "max_output_tokens": self.s.max_tokens,
            "max_tool_calls": None,
            "model": self.s.model,
            "output": self._items() if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "prompt_cache_key": None,
            "prompt_cache_retention": None,
            "reasoning": {"effort": "medium" if self.s.reasoning else None, "summary": None},
            "safety_identifier": None,
            "service_tier": "default" if done else "auto",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_logprobs": 0,
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage if done else None,
            "user": None,
            "metadata": {},
        }

    def frames(self) -> Iterator[_Frame]:
        yield self._event("response.created", {"response": self.response("in_progress")})
        yield self._event("response.in_progress", {"response": self.response("in_progress")})
        for index, item in enumerate(self._items()):
            if item["type"] == "reasoning":
                yield from self._reasoning(index, item)
            elif item["type"] == "function_call":
                yield from self._function_call(index, item)
            else:
                yield from self._message(index, item)
        terminal = "incomplete" if self.s.cut else "completed"
        yield self._event(f"response.{terminal}", {"response": self.response(terminal)})

    def _reasoning(self, index: int, item: dict[str, Any]) -> Iterator[_Frame]:
        where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
        text = item["summary"][0]["text"]
        yield self._event(
            "response.output_item.added", {"output_index": index, "item": {**item, "summary": []}}
        )
        part = {"type": "summary_text", "text": ""}
        yield self._event("response.reasoning_summary_part.added", {**where, "part": part})
        for piece in self.p.reasoning:
            yield self._event(
                "response.reasoning_summary_text.delta", {**where, "delta": piece}, output=True
            )
        yield self._event("response.reasoning_summary_text.done", {**where, "text": text})
        part = {"type": "summary_text", "text": text}
        yield self._event("response.reasoning_summary_part.done", {**where, "part": part})
        yield self._event("response.output_item.done", {"output_index": index, "item": item})

    def _function_call(self, index: int, item: dict[str, Any]) -> Iterator[_Frame]:
        where = {"item_id": item["id"], "output_index": index}
        added = {**item, "status": "in_progress", "arguments": ""}
        yield self._event(
            "response.output_item.added", {"output_index": index, "item": added}, names_tool=True
        )
        for piece in self.p.tool_arguments:
            yield self._event(
                "response.function_call_arguments.delta", {**where, "delta": piece}, output=True
            )
        yield self._event(
            "response.function_call_arguments.done", {**where, "arguments": item["arguments"]}
        )
        yield self._event("response.output_item.done", {"output_index": index, "item": item})

    def _message(self, index: int, item: dict[str, Any]) -> Iterator[_Frame]:
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        part = item["content"][0]
        added = {**item, "status": "in_progress", "content": []}
        yield self._event("response.output_item.added", {"output_index": index, "item": added})
        yield self._event("response.content_part.added", {**where, "part": {**part, "text": ""}})
        for piece in self.p.text:
            delta = {**where, "delta": piece, "logprobs": []}
            yield self._event("response.output_text.delta", delta, output=True)
        yield self._event(
            "response.output_text.done", {**where, "text": part["text"], "logprobs": []}
        )
        yield self._event("response.content_part.done", {**where, "part": part})
        yield self._event("response.output_item.done", {"output_index": index, "item": item})

    def error_frame(self, sequence_number: int) -> bytes:
        payload = {
            "type": "error",
            "code": "server_error",
            "message": _OPENAI_SERVER_ERROR["message"],
            "param": None,
            "sequence_number": sequence_number,
        }
        return b"event: error\ndata: " + _dumps(payload) + b"\n\n"

    def body(self) -> dict[str, Any]:
        return self.response("incomplete" if self.s.cut else "completed")


class _Messages:
    """Anthropic Messages events: thinking, text or tool_use blocks, ping after the first start."""

    PING = True

    def __init__(self, scenario: Scenario, content: Plan) -> None:
        self.s = scenario
        self.p = content

    def _event(
        self, kind: str, fields: dict[str, Any], *, output: bool = False, names_tool: bool = False
    ) -> _Frame:
        payload = {"type": kind, **fields}
        return _frame(kind, payload, output=output, stamp=self.s.timestamps, names_tool=names_tool)

    def _stop_reason(self) -> str:
        if self.s.cut:
            return "max_tokens"
        return "tool_use" if self.s.tool_call else "end_turn"

    def _blocks(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.s.reasoning:
            thinking = "".join(self.p.reasoning)
            blocks.append(
                {"type": "thinking", "thinking": thinking, "signature": self.p.ids["signature"]}
            )
        if self.s.tool_call:
            arguments = "".join(self.p.tool_arguments)
            # A budget cut leaves partial JSON; the finished message then carries no parsed input.
            tool_input = {} if self.s.cut else json.loads(arguments)
            blocks.append(
                {
                    "type": "tool_use",
                    "id": self.p.ids["tool_use"],
                    "name": self.s.tool_name,
                    "input": tool_input,
                }
            )
        else:
            blocks.append({"type": "text", "text": "".join(self.p.text)})
        return blocks

    def _message(self, content: list[dict[str, Any]], output_tokens: int) -> dict[str, Any]:
        return {
            "id": self.p.ids["anthropic_message"],
            "type": "message",
            "role": "assistant",
            "model": self.s.model,
            "content": content,
            "stop_reason": None if not content else self._stop_reason(),
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.s.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": self.s.cached_tokens,
                "output_tokens": output_tokens,
            },
        }

    def frames(self) -> Iterator[_Frame]:
        yield self._event("message_start", {"message": self._message([], 1)})
        for index, block in enumerate(self._blocks()):
            if block["type"] == "thinking":
                start: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [
                    ({"type": "thinking_delta", "thinking": p}, True) for p in self.p.reasoning
                ]
                deltas.append(({"type": "signature_delta", "signature": block["signature"]}, False))
            elif block["type"] == "tool_use":
                start = {**block, "input": {}}
                deltas = [({"type": "input_json_delta", "partial_json": ""}, False)]
                deltas += [
                    ({"type": "input_json_delta", "partial_json": p}, True)
                    for p in self.p.tool_arguments
                ]
            else:
                start = {"type": "text", "text": ""}
                deltas = [({"type": "text_delta", "text": p}, True) for p in self.p.text]
            yield self._event(
                "content_block_start",
                {"index": index, "content_block": start},
                names_tool=block["type"] == "tool_use",
            )
            if index == 0 and self.PING:
                yield _Frame(b'event: ping\ndata: {"type": "ping"}\n\n')
            for delta, output in deltas:
                yield self._event(
                    "content_block_delta", {"index": index, "delta": delta}, output=output
                )
            yield self._event("content_block_stop", {"index": index})
        stop = {"stop_reason": self._stop_reason(), "stop_sequence": None}
        usage = {"output_tokens": self.p.output_token_count}
        yield self._event("message_delta", {"delta": stop, "usage": usage})
        yield self._event("message_stop", {})

    def error_frame(self, sequence_number: int) -> bytes:
        payload = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return b"event: error\ndata: " + _dumps(payload) + b"\n\n"

    def body(self) -> dict[str, Any]:
        return self._message(self._blocks(), self.p.output_token_count)


def _sse(
    payload: Any, *, output: bool = False, event: str | None = None, crlf: bool = False
) -> _Frame:
    """An SSE event without a timestamp (the formats below are not used for send-time replays)."""
    nl = b"\r\n" if crlf else b"\n"
    head = b"" if event is None else b"event: " + event.encode() + nl
    return _Frame(head + b"data: " + _dumps(payload) + nl + nl, output)


def _whole_arguments(scenario: Scenario, content: Plan) -> dict[str, Any]:
    """A tool call's arguments as one object, for APIs that send a call whole (Gemini, Ollama); a
    budget cut still sends an object, with the text it had."""
    text = "".join(content.tool_arguments)
    parsed = json.loads(text if not scenario.cut else text + '"}')
    return parsed if isinstance(parsed, dict) else {}


class _Completions:
    """OpenAI legacy completions: ``text_completion`` chunks, as in the recorded babbage/vLLM streams.

    No tools and no reasoning in this API: a tool-call or reasoning scenario streams text."""

    def __init__(self, scenario: Scenario, content: Plan) -> None:
        self.s = scenario
        self.p = content

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": "cmpl-" + self.p.ids["call"][5:],
            "object": "text_completion",
            "created": self.s.created,
            "model": self.s.model,
            "choices": choices,
            **extra,
        }

    def _texts(self) -> tuple[str, ...]:
        return self.p.text or tuple(self.p.tool_arguments)

    def _usage(self) -> dict[str, int]:
        output = len(self._texts())
        return {
            "prompt_tokens": self.s.input_tokens,
            "completion_tokens": output,
            "total_tokens": self.s.input_tokens + output,
        }

    def body(self) -> dict[str, Any]:
        finish = "length" if self.s.cut else "stop"
        choice = {
            "text": "".join(self._texts()),
            "index": 0,
            "logprobs": None,
            "finish_reason": finish,
        }
        return self._chunk([choice], usage=self._usage())

    def frames(self) -> Iterator[_Frame]:
        for piece in self._texts():
            choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": None}
            yield _sse(self._chunk([choice]), output=True)
        finish = "length" if self.s.cut else "stop"
        yield _sse(
            self._chunk([{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}])
        )
        if self.s.include_usage:
            yield _sse(self._chunk([], usage=self._usage()))
        yield _Frame(b"data: [DONE]\n\n")

    def error_frame(self, sequence_number: int) -> bytes:
        return b"data: " + json.dumps({"error": _OPENAI_SERVER_ERROR}).encode() + b"\n\n"


class _Gemini:
    """Gemini ``streamGenerateContent``: SSE (``alt=sse``, CRLF) or one JSON array written element
    by element (``[{…}``, ``,\\r\\n{…}``, ``]``), as in the recorded gemini-2.x streams."""

    def __init__(self, scenario: Scenario, content: Plan, *, array: bool) -> None:
        self.s = scenario
        self.p = content
        self.array = array
        self.count = 0

    def _frame(self, payload: dict[str, Any], *, output: bool = False) -> _Frame:
        if not self.array:
            return _sse(payload, output=output, crlf=True)
        head = b"[" if self.count == 0 else b",\r\n"
        self.count += 1
        return _Frame(head + _dumps(payload), output)

    def _chunk(self, parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        payload: dict[str, Any] = {
            "candidates": [candidate],
            "modelVersion": self.s.model,
            "responseId": self.p.ids["call"],
        }
        if finish is not None:
            visible = len(self.p.text) + (1 if self.s.tool_call else 0)
            usage = {
                "promptTokenCount": self.s.input_tokens,
                "candidatesTokenCount": visible,
                "totalTokenCount": self.s.input_tokens + visible + self.p.reasoning_token_count,
            }
            if self.p.reasoning_token_count:
                usage["thoughtsTokenCount"] = self.p.reasoning_token_count
            payload["usageMetadata"] = usage
        return payload

    def frames(self) -> Iterator[_Frame]:
        for piece in self.p.reasoning:
            yield self._frame(self._chunk([{"text": piece, "thought": True}]), output=True)
        if self.s.tool_call:
            call = {"name": self.s.tool_name, "args": _whole_arguments(self.s, self.p)}
            yield self._frame(self._chunk([{"functionCall": call}]), output=True)
        for piece in self.p.text:
            yield self._frame(self._chunk([{"text": piece}]), output=True)
        finish = "MAX_TOKENS" if self.s.cut else "STOP"
        yield self._frame(self._chunk([{"text": ""}], finish))
        if self.array:
            yield _Frame(b"]")

    def error_frame(self, sequence_number: int) -> bytes:
        error = {
            "error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}
        }
        if self.array:
            return (b"[" if self.count == 0 else b",\r\n") + _dumps(error)
        return _sse(error, crlf=True).data


class _Converse:
    """Bedrock ConverseStream: AWS event-stream messages, as in the recorded Claude/Titan streams."""

    def __init__(self, scenario: Scenario, content: Plan) -> None:
        self.s = scenario
        self.p = content

    def frames(self) -> Iterator[_Frame]:
        yield _Frame(eventstream.event("messageStart", {"role": "assistant"}))
        block = 0
        if self.p.reasoning:
            for piece in self.p.reasoning:
                delta = {"reasoningContent": {"text": piece}}
                body = {"contentBlockIndex": block, "delta": delta}
                yield _Frame(eventstream.event("contentBlockDelta", body), output=True)
            signature = {"reasoningContent": {"signature": self.p.ids["signature"]}}
            body = {"contentBlockIndex": block, "delta": signature}
            yield _Frame(eventstream.event("contentBlockDelta", body))
            yield _Frame(eventstream.event("contentBlockStop", {"contentBlockIndex": block}))
            block += 1
        if self.s.tool_call:
            tool = {"toolUse": {"toolUseId": self.p.ids["tool_use"], "name": self.s.tool_name}}
            start = {"contentBlockIndex": block, "start": tool}
            yield _Frame(eventstream.event("contentBlockStart", start), names_tool=True)
            for piece in self.p.tool_arguments:
                body = {"contentBlockIndex": block, "delta": {"toolUse": {"input": piece}}}
                yield _Frame(eventstream.event("contentBlockDelta", body), output=True)
        else:
            for piece in self.p.text:
                body = {"contentBlockIndex": block, "delta": {"text": piece}}
                yield _Frame(eventstream.event("contentBlockDelta", body), output=True)
        yield _Frame(eventstream.event("contentBlockStop", {"contentBlockIndex": block}))
        stop = "max_tokens" if self.s.cut else "tool_use" if self.s.tool_call else "end_turn"
        yield _Frame(eventstream.event("messageStop", {"stopReason": stop}))
        output = self.p.output_token_count
        usage = {
            "inputTokens": self.s.input_tokens,
            "outputTokens": output,
            "totalTokens": self.s.input_tokens + output,
        }
        latency = int(self.s.ttft_s * 1000 + output * self.s.gap_mean_s * 1000)
        metadata = {"usage": usage, "metrics": {"latencyMs": latency}}
        yield _Frame(eventstream.event("metadata", metadata))

    def error_frame(self, sequence_number: int) -> bytes:
        return eventstream.exception(
            "modelStreamErrorException", "The model stream failed: an internal error occurred."
        )


class _Ollama:
    """Ollama ``/api/chat`` and ``/api/generate`` NDJSON, as in the recorded llama3 streams."""

    def __init__(self, scenario: Scenario, content: Plan, *, chat: bool) -> None:
        self.s = scenario
        self.p = content
        self.chat = chat

    def _line(self, fields: dict[str, Any], *, output: bool = False, done: bool = False) -> _Frame:
        created = datetime.fromtimestamp(self.s.created, UTC).isoformat().replace("+00:00", "Z")
        payload = {"model": self.s.model, "created_at": created, **fields, "done": done}
        return _Frame(_dumps(payload) + b"\n", output)

    def _output(self, content: str = "", **extra: Any) -> dict[str, Any]:
        if self.chat:
            return {"message": {"role": "assistant", "content": content, **extra}}
        return {"response": content, **extra}

    def _call(self) -> dict[str, Any]:
        return {
            "function": {"name": self.s.tool_name, "arguments": _whole_arguments(self.s, self.p)}
        }

    def _final(self) -> dict[str, Any]:
        output = self.p.output_token_count
        gap_ns = int(self.s.gap_mean_s * 1e9)
        return {
            "done_reason": "length" if self.s.cut else "stop",
            "total_duration": int(self.s.ttft_s * 1e9) + output * gap_ns,
            "load_duration": 1_000_000,
            "prompt_eval_count": self.s.input_tokens,
            "prompt_eval_duration": int(self.s.ttft_s * 1e9),
            "eval_count": output,
            "eval_duration": output * gap_ns,
        }

    def body(self) -> dict[str, Any]:
        """``"stream": false``: one object, the final line with the whole answer."""
        extra: dict[str, Any] = {}
        if self.p.reasoning:
            extra["thinking"] = "".join(self.p.reasoning)
        if self.s.tool_call:
            extra["tool_calls"] = [self._call()]
        created = datetime.fromtimestamp(self.s.created, UTC).isoformat().replace("+00:00", "Z")
        output = self._output("".join(self.p.text), **extra)
        return {
            "model": self.s.model,
            "created_at": created,
            **output,
            "done": True,
            **self._final(),
        }

    def frames(self) -> Iterator[_Frame]:
        for piece in self.p.reasoning:
            yield self._line(self._output(thinking=piece), output=True)
        if self.s.tool_call:
            yield self._line(self._output(tool_calls=[self._call()]), output=True)
        for piece in self.p.text:
            yield self._line(self._output(piece), output=True)
        yield self._line({**self._output(), **self._final()}, done=True)

    def error_frame(self, sequence_number: int) -> bytes:
        return b'{"error":"an error was encountered while running the model: unexpected EOF"}\n'


class _Cohere:
    """Cohere v2 chat events, as in the recorded command-r streams."""

    def __init__(self, scenario: Scenario, content: Plan) -> None:
        self.s = scenario
        self.p = content

    @staticmethod
    def _event(
        kind: str, fields: dict[str, Any], *, output: bool = False, names_tool: bool = False
    ) -> _Frame:
        frame = _sse({"type": kind, **fields}, output=output, event=kind)
        return _Frame(frame.data, output, names_tool=names_tool)

    @staticmethod
    def _message(**fields: Any) -> dict[str, Any]:
        return {"delta": {"message": fields}}

    def frames(self) -> Iterator[_Frame]:
        start = self._message(
            role="assistant", content=[], tool_plan="", tool_calls=[], citations=[]
        )
        yield self._event("message-start", {"id": self.p.ids["message"], **start})
        index = 0
        if self.p.reasoning:
            yield self._event(
                "content-start",
                {"index": index, **self._message(content={"type": "thinking", "thinking": ""})},
            )
            for piece in self.p.reasoning:
                delta = self._message(content={"thinking": piece})
                yield self._event("content-delta", {"index": index, **delta}, output=True)
            yield self._event("content-end", {"index": index})
            index += 1
        if self.s.tool_call:
            call = {
                "id": self.p.ids["call"],
                "type": "function",
                "function": {"name": self.s.tool_name, "arguments": ""},
            }
            start = {"index": 0, **self._message(tool_calls=call)}
            yield self._event("tool-call-start", start, names_tool=True)
            for piece in self.p.tool_arguments:
                delta = self._message(tool_calls={"function": {"arguments": piece}})
                yield self._event("tool-call-delta", {"index": 0, **delta}, output=True)
            yield self._event("tool-call-end", {"index": 0})
        else:
            yield self._event(
                "content-start",
                {"index": index, **self._message(content={"type": "text", "text": ""})},
            )
            for piece in self.p.text:
                delta = self._message(content={"text": piece})
                yield self._event("content-delta", {"index": index, **delta}, output=True)
            yield self._event("content-end", {"index": index})
        yield self._event(
            "message-end", {"delta": {"finish_reason": self._finish(), "usage": self._usage()}}
        )
        yield _Frame(b"data: [DONE]\n\n")

    def _finish(self) -> str:
        return "MAX_TOKENS" if self.s.cut else "TOOL_CALL" if self.s.tool_call else "COMPLETE"

    def _usage(self) -> dict[str, Any]:
        tokens = {"input_tokens": self.s.input_tokens, "output_tokens": self.p.output_token_count}
        return {"billed_units": tokens, "tokens": tokens}

    def body(self) -> dict[str, Any]:
        """A non-streaming v2 chat response (cohere-py ``ChatResponse``)."""
        content: list[dict[str, Any]] = []
        if self.p.reasoning:
            content.append({"type": "thinking", "thinking": "".join(self.p.reasoning)})
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.s.tool_call:
            function = {"name": self.s.tool_name, "arguments": "".join(self.p.tool_arguments)}
            message["tool_calls"] = [
                {"id": self.p.ids["call"], "type": "function", "function": function}
            ]
        else:
            content.append({"type": "text", "text": "".join(self.p.text)})
        return {"id": self.p.ids["message"], "finish_reason": self._finish(), "message": message,
                "usage": self._usage()}  # fmt: skip

    def error_frame(self, sequence_number: int) -> bytes:
        delta = {"finish_reason": "ERROR", "error": "internal server error during generation"}
        return self._event("message-end", {"delta": delta}).data


class _Invoke(_Messages):
    """Bedrock InvokeModelWithResponseStream with an Anthropic model: each Messages event is the
    base64 body of a ``chunk`` event-stream message; no pings; ``message_stop`` carries Bedrock's
    invocation metrics."""

    PING = False

    def _event(
        self, kind: str, fields: dict[str, Any], *, output: bool = False, names_tool: bool = False
    ) -> _Frame:
        body: dict[str, Any] = {"type": kind, **fields}
        if kind == "message_stop":
            output_tokens = self.p.output_token_count
            body["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": self.s.input_tokens,
                "outputTokenCount": output_tokens,
                "invocationLatency": int(
                    1000 * (self.s.ttft_s + output_tokens * self.s.gap_mean_s)
                ),
                "firstByteLatency": int(1000 * self.s.ttft_s),
            }
        return _Frame(eventstream.chunk(body), output, names_tool=names_tool)

    def error_frame(self, sequence_number: int) -> bytes:
        return eventstream.exception(
            "modelStreamErrorException", "The model stream failed: an internal error occurred."
        )


_Renderer = _Chat | _Responses | _Messages | _Completions | _Gemini | _Converse | _Ollama | _Cohere


def _renderer(scenario: Scenario) -> _Renderer:
    content = plan(scenario)
    api = scenario.api
    if api == "openai_chat":
        return _Chat(scenario, content)
    if api == "openai_responses":
        return _Responses(scenario, content)
    if api == "anthropic_messages":
        return _Messages(scenario, content)
    if api == "openai_completions":
        return _Completions(scenario, content)
    if api in ("gemini", "gemini_json"):
        return _Gemini(scenario, content, array=api == "gemini_json")
    if api == "bedrock_converse":
        return _Converse(scenario, content)
    if api == "bedrock_invoke":
        return _Invoke(scenario, content)
    if api in ("ollama_chat", "ollama_generate"):
        return _Ollama(scenario, content, chat=api == "ollama_chat")
    return _Cohere(scenario, content)


#: The ``Content-Type`` each API streams with (all others: ``text/event-stream``).
MEDIA_TYPES: dict[Api, str] = {
    "gemini_json": "application/json; charset=UTF-8",
    "bedrock_converse": "application/vnd.amazon.eventstream",
    "bedrock_invoke": "application/vnd.amazon.eventstream",
    "ollama_chat": "application/x-ndjson",
    "ollama_generate": "application/x-ndjson",
}


def steps(scenario: Scenario) -> Iterator[Step]:
    """The stream as timed writes, ending in exactly one `Close` or `Reset`.

    Non-output events go out right after the event before them; output event k waits `ttft_s`
    (k = 0) or one jittered gap, plus `stall_s` when k == `stall_after`. The frame naming a tool
    call is timed like an output event (DESIGN counts it as one) but not counted as one. An
    interruption index k takes effect just before output event k, or, for k at or beyond the last
    one, right after the last output event (before the closing events). The earliest interruption
    wins; on a tie the error frame beats the truncation, which beats the reset.
    """
    timing = _rng(scenario, "timing")
    renderer = _renderer(scenario)
    frames = list(renderer.frames())
    outputs = [i for i, frame in enumerate(frames) if frame.output]
    after_last = outputs[-1] + 1 if outputs else len(frames) - 1

    interruption = scenario.interruption
    if interruption is None:
        stop_at = len(frames)
    else:
        after = interruption[1]
        stop_at = outputs[after] if after < len(outputs) else after_last
    delay = scenario.ttft_s
    sent = 0
    for frame in frames[:stop_at]:
        if not (frame.output or frame.names_tool):
            yield Send(0.0, frame.data)
            continue
        if frame.output and sent == scenario.stall_after:
            delay += scenario.stall_s
        yield Send(delay, frame.data, frame.stamp_at)
        sent += frame.output
        jitter = scenario.gap_jitter_s
        delay = max(scenario.gap_mean_s + (timing.uniform(-jitter, jitter) if jitter else 0.0), 0.0)
    if interruption is None:
        yield Close()
    elif interruption[0] == "error":
        yield Send(delay, renderer.error_frame(stop_at))
        yield Close()
    elif interruption[0] == "truncate":
        yield Close(delay)
    else:
        yield Reset(delay)


def response_body(scenario: Scenario) -> bytes:
    """The non-streaming JSON response for the same content (APIs with a non-streaming answer on
    the same path: not Gemini's or Bedrock's streaming endpoints)."""
    renderer = _renderer(scenario)
    if not isinstance(renderer, _Chat | _Responses | _Messages | _Completions | _Ollama | _Cohere):
        raise TypeError(f"{scenario.api}: the simulator streams only")
    return _dumps(renderer.body())
