"""Pure scenario generation: exact frames, timing, interruptions and determinism."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streamwatch.simulator.scenario import (
    APIS,
    TIMESTAMP_FIELD,
    Api,
    Close,
    Reset,
    Scenario,
    Send,
    plan,
    response_body,
    steps,
)


def _events(scenario: Scenario) -> list[bytes]:
    return [step.render(1) for step in steps(scenario) if isinstance(step, Send)]


def _payloads(scenario: Scenario) -> list[dict[str, Any]]:
    out = []
    for event in _events(scenario):
        data = event.split(b"data: ", 1)[1].strip()
        if data != b"[DONE]":
            out.append(json.loads(data))
    return out


class TestDeterminism:
    """The same scenario and seed give the same bytes and delays; another seed changes content."""

    @pytest.mark.parametrize("api", APIS)
    def test_same_seed_same_steps(self, api: Api) -> None:
        scenario = Scenario(api=api, model="m", gap_mean_s=0.01, gap_jitter_s=0.005, seed=3)
        assert list(steps(scenario)) == list(steps(scenario))

    def test_other_seed_other_text(self) -> None:
        assert (
            plan(Scenario("openai_chat", "m", seed=1)).text
            != plan(Scenario("openai_chat", "m", seed=2)).text
        )

    def test_timing_does_not_change_content(self) -> None:
        slow = Scenario("anthropic_messages", "m", gap_mean_s=1.0, gap_jitter_s=0.5, seed=4)
        fast = Scenario("anthropic_messages", "m", seed=4)
        assert _events(slow) == _events(fast)


class TestTiming:
    """The first output event waits ttft, later ones a jittered gap, the stalled one stall_s more."""

    def test_delays(self) -> None:
        scenario = Scenario(
            "openai_chat", "m", output_tokens=5, ttft_s=0.5, gap_mean_s=0.1, gap_jitter_s=0.05,
            stall_after=3, stall_s=2.0,
        )  # fmt: skip
        sends = [s for s in steps(scenario) if isinstance(s, Send)]
        output = [
            s.delay_s for s in sends if b'"content":"' in s.data and b'"content":""' not in s.data
        ]
        assert output[0] == 0.5
        assert all(0.05 <= d <= 0.15 for d in output[1:3] + output[4:])
        assert 2.05 <= output[3] <= 2.15
        assert all(s.delay_s == 0 for s in sends if s.delay_s not in output)

    # APIs whose tool arguments stream in deltas after the frame naming the tool (Bedrock invoke
    # is Anthropic's frames, base64 inside event-stream messages; legacy completions has no tools).
    @pytest.mark.parametrize(
        "api",
        ["openai_chat", "openai_responses", "anthropic_messages", "bedrock_converse", "cohere_v2"],
    )
    def test_tool_name_waits_ttft(self, api: Api) -> None:
        """Issue 11 finding 7: the frame naming the tool is the first output, so it waits ttft."""
        scenario = Scenario(api, "m", tool_call=True, output_tokens=6, ttft_s=0.5, gap_mean_s=0.1)
        sends = [s for s in steps(scenario) if isinstance(s, Send)]
        named = [s for s in sends if b'"get_weather"' in s.data]
        assert named[0].delay_s == 0.5
        assert sum(s.delay_s for s in sends[: sends.index(named[0])]) == 0
        arguments = sends[sends.index(named[0]) + 1 :]
        assert [s.delay_s for s in arguments if s.delay_s][:1] == [0.1]  # then one gap

    @pytest.mark.parametrize("api", ["gemini", "gemini_json", "ollama_chat", "ollama_generate"])
    def test_whole_tool_call_waits_ttft(self, api: Api) -> None:
        """Gemini and Ollama send a call whole: that one frame is the first output."""
        scenario = Scenario(api, "m", tool_call=True, output_tokens=6, ttft_s=0.5, gap_mean_s=0.1)
        sends = [s for s in steps(scenario) if isinstance(s, Send)]
        named = [s for s in sends if b'"get_weather"' in s.data]
        assert [s.delay_s for s in named] == [0.5]
        assert sum(s.delay_s for s in sends) == 0.5


class TestOpenAIChatFrames:
    """Chat chunks carry the recorded fields, role chunk first, usage chunk, then [DONE]."""

    def test_shape(self) -> None:
        scenario = Scenario("openai_chat", "gpt-x", output_tokens=3, created=1700000000)
        payloads = _payloads(scenario)
        first = payloads[0]
        assert list(first) == [
            "id",
            "object",
            "created",
            "model",
            "system_fingerprint",
            "choices",
            "usage",
        ]
        assert first["choices"] == [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": "", "refusal": None},
                "logprobs": None,
                "finish_reason": None,
            }
        ]
        assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
        assert payloads[-1]["choices"] == []
        assert payloads[-1]["usage"]["completion_tokens"] == 3
        assert _events(scenario)[-1] == b"data: [DONE]\n\n"

    def test_no_usage_unless_requested(self) -> None:
        payloads = _payloads(Scenario("openai_chat", "m", include_usage=False))
        assert all("usage" not in p for p in payloads)

    def test_reasoning_is_counted_not_streamed(self) -> None:
        scenario = Scenario("openai_chat", "m", output_tokens=4, reasoning=True, reasoning_tokens=9)
        usage = _payloads(scenario)[-1]["usage"]
        assert usage["completion_tokens_details"]["reasoning_tokens"] == 9
        assert usage["completion_tokens"] == 13

    def test_error_frame_is_the_documented_one(self) -> None:
        events = _events(Scenario("openai_chat", "m", output_tokens=6, error_after=2))
        assert events[-1] == (
            b'data: {"error": {"message": "The server had an error while processing your request. '
            b'Sorry about that!", "type": "server_error", "param": null, "code": null}}\n\n'
        )
        assert len(events) == 4  # role, two tokens, error
        assert isinstance(list(steps(Scenario("openai_chat", "m", error_after=2)))[-1], Close)

    def test_length_cut(self) -> None:
        scenario = Scenario("openai_chat", "m", output_tokens=10, max_tokens=4)
        payloads = _payloads(scenario)
        assert payloads[-2]["choices"][0]["finish_reason"] == "length"
        assert len(plan(scenario).text) == 4


class TestResponsesFrames:
    """Every Responses event names its type and numbers itself; the terminal event ends it."""

    @pytest.mark.parametrize(
        "kwargs", [{}, {"tool_call": True}, {"reasoning": True}, {"max_tokens": 2}]
    )
    def test_event_names_and_sequence(self, kwargs: dict[str, Any]) -> None:
        events = _events(Scenario("openai_responses", "m", output_tokens=6, **kwargs))
        for number, event in enumerate(events):
            name = event.split(b"\n", 1)[0].removeprefix(b"event: ").decode()
            payload = json.loads(event.split(b"data: ", 1)[1])
            assert payload["type"] == name
            assert payload["sequence_number"] == number
        terminal = json.loads(events[-1].split(b"data: ", 1)[1])
        if "max_tokens" in kwargs:
            assert terminal["type"] == "response.incomplete"
            assert terminal["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
        else:
            assert terminal["type"] == "response.completed"
            assert terminal["response"]["usage"]["input_tokens_details"] == {"cached_tokens": 0}

    def test_error_event_then_stop(self) -> None:
        events = _events(Scenario("openai_responses", "m", output_tokens=6, error_after=1))
        assert events[-1].startswith(b"event: error\ndata: ")
        payload = json.loads(events[-1].split(b"data: ", 1)[1])
        assert payload["type"] == "error"
        assert payload["code"] == "server_error"
        assert payload["sequence_number"] == len(events) - 1


class TestAnthropicFrames:
    """Anthropic streams follow message_start, blocks with a ping, message_delta, message_stop."""

    def test_thinking_then_tool(self) -> None:
        scenario = Scenario(
            "anthropic_messages",
            "claude",
            output_tokens=6,
            reasoning=True,
            reasoning_tokens=3,
            tool_call=True,
        )
        kinds = [p["type"] for p in _payloads(scenario)]
        assert kinds[:3] == ["message_start", "content_block_start", "ping"]
        assert kinds[-2:] == ["message_delta", "message_stop"]
        deltas = [
            p["delta"]["type"] for p in _payloads(scenario) if p["type"] == "content_block_delta"
        ]
        assert deltas == ["thinking_delta"] * 3 + ["signature_delta"] + ["input_json_delta"] * 7
        assert _payloads(scenario)[-2]["usage"] == {"output_tokens": 9}

    def test_error_frame(self) -> None:
        events = _events(Scenario("anthropic_messages", "m", error_after=0))
        assert events[-1] == (
            b"event: error\n"
            b'data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
        )

    def test_max_tokens_tool_json_is_partial(self) -> None:
        scenario = Scenario(
            "anthropic_messages", "m", output_tokens=10, max_tokens=6, tool_call=True
        )
        with pytest.raises(json.JSONDecodeError):
            json.loads("".join(plan(scenario).tool_arguments))
        assert _payloads(scenario)[-2]["delta"]["stop_reason"] == "max_tokens"


class TestInterruptions:
    """The earliest interruption wins; truncation ends cleanly without a terminal frame; reset resets."""

    @pytest.mark.parametrize("api", APIS)
    def test_truncate(self, api: Api) -> None:
        all_steps = list(steps(Scenario(api, "m", output_tokens=5, truncate_after=2)))
        assert isinstance(all_steps[-1], Close)
        tail = all_steps[-2]
        assert isinstance(tail, Send)
        for terminal in (b"[DONE]", b"message_stop", b"response.completed"):
            assert terminal not in tail.data

    def test_reset(self) -> None:
        assert isinstance(list(steps(Scenario("openai_chat", "m", reset_after=1)))[-1], Reset)

    def test_precedence(self) -> None:
        assert Scenario("openai_chat", "m", error_after=3, reset_after=1).interruption == (
            "reset",
            1,
        )
        assert Scenario("openai_chat", "m", error_after=2, truncate_after=2).interruption == (
            "error",
            2,
        )

    def test_beyond_the_end_means_after_the_last_token(self) -> None:
        events = _events(
            Scenario("openai_chat", "m", output_tokens=3, include_usage=False, truncate_after=99)
        )
        assert len(events) == 4  # role + three tokens, no finish chunk, no [DONE]


class TestTimestamps:
    """Timestamped output events carry the send time the server inserts; others do not."""

    def test_render_inserts_send_time(self) -> None:
        scenario = Scenario("openai_responses", "m", output_tokens=2, timestamps=True)
        stamped = [s for s in steps(scenario) if isinstance(s, Send) and s.stamp_at is not None]
        assert len(stamped) == 2
        payload = json.loads(stamped[0].render(123456789).split(b"data: ", 1)[1])
        assert payload[TIMESTAMP_FIELD] == 123456789
        assert payload["type"] == "response.output_text.delta"


class TestNonStreamingBody:
    """Non-streaming bodies hold the same content as the stream."""

    def test_chat_tool_call(self) -> None:
        scenario = Scenario("openai_chat", "m", tool_call=True, tool_name="lookup")
        body = json.loads(response_body(scenario))
        call = body["choices"][0]["message"]["tool_calls"][0]
        assert call["function"] == {
            "name": "lookup",
            "arguments": "".join(plan(scenario).tool_arguments),
        }
        assert body["choices"][0]["finish_reason"] == "tool_calls"

    def test_invalid_scenario(self) -> None:
        with pytest.raises(ValueError, match="output_tokens"):
            Scenario("openai_chat", "m", output_tokens=-1)
