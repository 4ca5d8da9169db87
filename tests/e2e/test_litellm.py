"""A real gateway in the loop: the official Python SDKs -> ``streamwatch serve`` -> LiteLLM's proxy ->
the simulator.

LiteLLM (``litellm[proxy]==1.108.7``) runs from its own virtualenv, ``.venv-litellm`` (``.ci/run``
installs it; its pins clash with the project's), as a subprocess on a free port with a config the
test writes: ``chat-model`` is an ``openai/`` backend and ``claude-model`` an ``anthropic/`` one, both
the simulator. Every stream's outcome, finish reasons, output events and usage are asserted by
request id against what LiteLLM sends (its re-framing is documented in docs/litellm.md), and the
bytes through streamwatch equal the bytes LiteLLM sends direct once the fields LiteLLM generates per
request (ids, timestamps) are blanked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
import pytest_asyncio
import yaml

from streamwatch.simulator.profile import Profile
from tests.conftest import REPO_ROOT, missing
from tests.harness import (
    LOOPBACK,
    Scrape,
    scrape,
    serve_process,
    simulator,
    until,
)
from tests.reliability.harness.proxy import ProxyProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="module"),
    # LiteLLM's proxy takes from ~15 s (idle box) to minutes (busy one) to import and start.
    pytest.mark.timeout(900),
]

LITELLM = REPO_ROOT / ".venv-litellm" / "bin" / "litellm"
START_WITHIN_S = 600.0
TOKENS = 6  # the simulator's answer length: 6 text (or tool-argument) deltas
MIDDLE = TOKENS // 2  # where the simulator's error, cut and reset scenarios interrupt
BUDGET = 3  # max_tokens of the budget-cut cases
# Output events 5 ms apart, so decode rates are defined and reads interleave as on a real link.
PROFILE = Profile(
    weights={"normal": 1.0}, output_tokens=TOKENS, ttft_s=0.0, gap_mean_s=0.005, gap_jitter_s=0.0
)
MESSAGES: Any = [{"role": "user", "content": "Tell me a story."}]
CHAT_TOOLS: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
ANTHROPIC_TOOLS: Any = [{"name": "lookup", "input_schema": {"type": "object"}}]


def free_port() -> int:
    """A port free right now on loopback (LiteLLM cannot report the port it bound to 0)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Gateway:
    """LiteLLM's proxy in front of the simulator, and streamwatch in front of LiteLLM."""

    litellm_url: str
    key: str
    serve: ProxyProcess

    @property
    def proxy_url(self) -> str:
        return self.serve.proxy_url

    def auth(self, request_id: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}", "x-request-id": request_id, **(extra or {})}

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.proxy_url}/v1", api_key=self.key, max_retries=0)

    def anthropic(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.proxy_url, api_key=self.key, max_retries=0)

    def lines(self) -> dict[str, dict[str, Any]]:
        """The ``stream.<outcome>`` log lines so far, by request id."""
        return {
            line["request_id"]: line
            for line in self.serve.events()
            if str(line.get("event", "")).startswith("stream.")
        }

    async def line(self, request_id: str) -> dict[str, Any]:
        await until(
            lambda: request_id in self.lines(), within=30.0, what=f"log line of {request_id}"
        )
        return self.lines()[request_id]

    async def metrics(self) -> Scrape:
        async def closed() -> bool:
            m = await scrape(self.serve.admin_port)
            return m.value("streamwatch_streams_active") == 0

        await until(closed, within=30.0, what="every stream to be recorded")
        return await scrape(self.serve.admin_port)


def litellm_config(upstream: str, key: str) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "chat-model",
                "litellm_params": {
                    "model": "openai/sim-model",
                    "api_base": f"{upstream}/v1",
                    "api_key": "sk-sim",
                },
            },
            {
                "model_name": "claude-model",
                "litellm_params": {
                    "model": "anthropic/claude-sim",
                    "api_base": upstream,
                    "api_key": "sk-sim",
                },
            },
        ],
        # x-* headers (x-sim-scenario, x-sim-seed) reach the simulator.
        "general_settings": {"master_key": key, "forward_client_headers_to_llm_api": True},
        "litellm_settings": {"drop_params": True},
    }


@contextlib.asynccontextmanager
async def litellm_proxy(
    upstream: str,
    workdir: Path,
    *,
    settings: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[str, str]]:
    """LiteLLM's proxy on a free port, with extra ``litellm_settings`` and environment; yields its
    URL and master key. Stopped on exit."""
    if not LITELLM.is_file():
        missing(f"LiteLLM is not installed in {LITELLM.parent.parent} (.ci/run installs it)")
    key = "sk-streamwatch-e2e-" + secrets.token_hex(16)
    config = workdir / "litellm.yaml"
    document = litellm_config(upstream, key)
    document["litellm_settings"].update(settings or {})
    config.write_text(yaml.safe_dump(document))
    port = free_port()
    log = (workdir / "litellm.log").open("wb")
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the cost map at start-up
        "LITELLM_TELEMETRY": "False",
        "NO_DOCKER": "1",
        **(environ or {}),
    }
    proc = await asyncio.create_subprocess_exec(
        str(LITELLM), "--config", str(config), "--host", LOOPBACK, "--port", str(port),
        stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
        env=env, cwd=workdir, start_new_session=True,
    )  # fmt: skip
    url = f"http://{LOOPBACK}:{port}"
    try:
        async with httpx.AsyncClient() as client:

            async def live() -> bool:
                if proc.returncode is not None:
                    raise AssertionError(
                        "LiteLLM exited at start-up:\n" + (workdir / "litellm.log").read_text()
                    )
                try:
                    return (await client.get(f"{url}/health/liveliness")).status_code == 200
                except httpx.HTTPError:
                    return False

            await until(live, within=START_WITHIN_S, interval=0.25, what="LiteLLM to start")
        yield url, key
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        log.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    workdir = tmp_path_factory.mktemp("litellm")
    async with (
        simulator(PROFILE) as upstream,
        litellm_proxy(upstream, workdir) as (litellm_url, key),
        serve_process("--upstream", litellm_url) as serve,
    ):
        yield Gateway(litellm_url, key, serve)


# -- the cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One stream and the verdict streamwatch must give it, from what LiteLLM sends for it."""

    name: str
    path: str
    body: dict[str, Any]
    outcome: str
    finish: tuple[str, ...]
    events: int  # output events LiteLLM delivers
    reported: int | None  # output tokens of LiteLLM's usage report; None: none, estimated
    scenario: str = "normal"
    error_type: str | None = None
    sdk_raises: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def sim_headers(self, seed: int) -> dict[str, str]:
        return {"x-sim-scenario": self.scenario, "x-sim-seed": str(seed), **self.headers}


CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
MESSAGES_PATH = "/v1/messages"
USAGE = {"stream_options": {"include_usage": True}}
# A reset 50 ms after the last frame: an RST discards what the receiver has not read yet, so a
# reset close behind the last frame would race LiteLLM's read of it.
SLOW_RESET = {"x-sim-gap-ms": "50"}


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "chat-model", "messages": MESSAGES, "stream": True, **extra}


def responses(**extra: Any) -> dict[str, Any]:
    return {"model": "chat-model", "input": "Tell me a story.", "stream": True, **extra}


def messages(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "max_tokens": 512, "stream": True, **extra}


CASES = (
    # Chat Completions through an openai/ backend.
    Case("chat-text-usage", CHAT, chat(**USAGE), "completed", ("stop",), TOKENS, TOKENS),
    Case("chat-text-no-usage", CHAT, chat(), "completed", ("stop",), TOKENS, None),
    # The frame naming the tool is an output event too.
    Case(
        "chat-tool-call", CHAT, chat(tools=CHAT_TOOLS, **USAGE), "completed", ("tool_calls",),
        TOKENS + 1, TOKENS, scenario="tool_call",
    ),
    Case(
        "chat-length", CHAT, chat(max_tokens=BUDGET, **USAGE), "completed", ("length",),
        BUDGET, BUDGET,
    ),
    # LiteLLM replaces the upstream's error frame with one of its own (code "500").
    Case(
        "chat-error-frame", CHAT, chat(**USAGE), "error_frame", (), MIDDLE, None,
        scenario="error", error_type="500", sdk_raises=True,
    ),
    # LiteLLM turns an upstream cut into finish_reason "stop", a usage chunk of its own count and
    # [DONE]: a sidecar in front of it cannot see that truncation (docs/litellm.md).
    Case(
        "chat-cut", CHAT, chat(**USAGE), "completed", ("stop",), MIDDLE, MIDDLE,
        scenario="truncate",
    ),
    # An upstream reset becomes an error frame ("Connection error.") and a clean end.
    Case(
        "chat-reset", CHAT, chat(**USAGE), "error_frame", (), MIDDLE, None,
        scenario="reset", error_type="500", sdk_raises=True, headers=SLOW_RESET,
    ),
    # Responses through the openai/ backend; LiteLLM appends data: [DONE].
    Case("responses-text", RESPONSES, responses(), "completed", ("completed",), TOKENS, TOKENS),
    Case(
        "responses-error-frame", RESPONSES, responses(), "error_frame", ("failed",), MIDDLE, None,
        scenario="error", error_type="server_error",
    ),
    # An upstream cut of a Responses stream becomes response.failed.
    Case(
        "responses-cut", RESPONSES, responses(), "error_frame", ("failed",), MIDDLE, None,
        scenario="truncate", error_type="server_error",
    ),
    # Anthropic Messages translated to an openai/ backend (message_start usage 0 is a placeholder).
    Case(
        "messages-openai-text", MESSAGES_PATH, messages("chat-model"), "completed", ("end_turn",),
        TOKENS, TOKENS,
    ),
    Case(
        "messages-openai-tool-call", MESSAGES_PATH, messages("chat-model", tools=ANTHROPIC_TOOLS),
        "completed", ("tool_use",), TOKENS + 1, TOKENS, scenario="tool_call",
    ),
    Case(
        "messages-openai-error-frame", MESSAGES_PATH, messages("chat-model"), "error_frame", (),
        MIDDLE, None, scenario="error", error_type="api_error", sdk_raises=True,
    ),
    # Anthropic Messages passed through to an anthropic/ backend.
    Case(
        "messages-anthropic-text", MESSAGES_PATH, messages("claude-model"), "completed",
        ("end_turn",), TOKENS, TOKENS,
    ),
    Case(
        "messages-anthropic-length", MESSAGES_PATH, messages("claude-model", max_tokens=BUDGET),
        "completed", ("max_tokens",), BUDGET, BUDGET,
    ),
    Case(
        "messages-anthropic-error-frame", MESSAGES_PATH, messages("claude-model"), "error_frame",
        (), MIDDLE, None, scenario="error", error_type="overloaded_error", sdk_raises=True,
    ),
    # The cut passes through (LiteLLM ends its body cleanly; the SDK returns the partial message
    # without an error): streamwatch sees it.
    Case(
        "messages-anthropic-cut", MESSAGES_PATH, messages("claude-model"), "truncated", (),
        MIDDLE, None, scenario="truncate",
    ),
    Case(
        "messages-anthropic-reset", MESSAGES_PATH, messages("claude-model"), "error_frame", (),
        MIDDLE, None, scenario="reset", error_type="api_error", sdk_raises=True, headers=SLOW_RESET,
    ),
)  # fmt: skip
SDK_ERRORS = (openai.APIError, anthropic.APIError, httpx.HTTPError, httpx2.HTTPError)


async def stream_with_sdk(gw: Gateway, case: Case, request_id: str, seed: int) -> None:
    """Stream one case to its end with the official SDK through streamwatch."""
    headers = gw.auth(request_id, case.sim_headers(seed))
    body = {k: v for k, v in case.body.items() if k != "stream"}
    if case.path == MESSAGES_PATH:
        async with (
            gw.anthropic() as claude,
            claude.messages.stream(**body, extra_headers=headers) as messages_stream,
        ):
            await messages_stream.get_final_message()
        return
    async with gw.openai() as client:
        if case.path == RESPONSES:
            events = await client.responses.create(**body, stream=True, extra_headers=headers)
            _ = [event async for event in events]
            return
        chunks = await client.chat.completions.create(**body, stream=True, extra_headers=headers)
        _ = [chunk async for chunk in chunks]


async def run_case(gw: Gateway, case: Case, request_id: str, seed: int) -> None:
    if case.sdk_raises:
        with pytest.raises(SDK_ERRORS):
            await stream_with_sdk(gw, case, request_id, seed)
    else:
        await stream_with_sdk(gw, case, request_id, seed)


def check_line(case: Case, line: dict[str, Any]) -> list[str]:
    """What is wrong with a stream's log line against its case (empty when it is right)."""
    estimated = case.reported is None
    want = {
        "outcome": case.outcome,
        "finish_reasons": list(case.finish),
        "output_events": case.events,
        "output_tokens": case.events if estimated else case.reported,
        "output_tokens_estimated": estimated,
        "malformed_frames": 0,
    }
    if case.error_type is not None:
        want["error_frames"] = [case.error_type]
    return [f"{k}: {line.get(k)!r} != {v!r}" for k, v in want.items() if line.get(k) != v]


class TestBehindLiteLLM:
    """Every case through LiteLLM is streamed by the official SDK and given the right verdict."""

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    async def test_verdict(self, gateway: Gateway, case: Case) -> None:
        request_id = f"sdk-{case.name}"
        await run_case(gateway, case, request_id, seed=7)
        line = await gateway.line(request_id)
        assert check_line(case, line) == [], line


# Fields LiteLLM generates per request (ids, timestamps); everything else must match byte for byte.
_PER_REQUEST = re.compile(rb'"(id|created|created_at)": ?("(?:[^"\\]|\\.)*"|\d+)')


def blank(body: bytes) -> bytes:
    return _PER_REQUEST.sub(rb'"\1":"~"', body)


async def raw_body(url: str, case: Case, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """Status and body bytes as an HTTP client receives them (a cut body as far as it came)."""
    body = b""
    async with httpx.AsyncClient(timeout=60) as client:
        try:
            async with client.stream(
                "POST", url + case.path, json=case.body, headers=dict(headers)
            ) as response:
                async for data in response.aiter_raw():
                    body += data
        except httpx.RemoteProtocolError:
            pass  # an aborted body: compared as far as it came
    return response.status_code, body


class TestTransparentBehindLiteLLM:
    """Through streamwatch, the bytes are LiteLLM's own, once its per-request fields are blanked."""

    # Resets are left out: what LiteLLM reads before an RST varies from one request to the next
    # (streamwatch's own fidelity on resets is tests/e2e/test_transparency.py's).
    @pytest.mark.parametrize(
        "case", [c for c in CASES if c.scenario != "reset"], ids=lambda c: c.name
    )
    async def test_same_bytes_as_direct(self, gateway: Gateway, case: Case) -> None:
        headers = gateway.auth(f"bytes-{case.name}", case.sim_headers(seed=9))
        direct = await raw_body(gateway.litellm_url, case, headers)
        proxied = await raw_body(gateway.proxy_url, case, headers)
        assert proxied[0] == direct[0] == 200
        assert blank(proxied[1]) == blank(direct[1])
        assert proxied[1].count(b"\n\n") == direct[1].count(b"\n\n") > 0


def mix(n: int) -> list[tuple[Case, int]]:
    """``n`` well-formed streams (every case without an interruption), each with its own seed."""
    whole = [c for c in CASES if c.scenario in ("normal", "tool_call")]
    return [(whole[i % len(whole)], 1000 + i) for i in range(n)]


async def run_many(gw: Gateway, streams: list[tuple[Case, int]], prefix: str) -> None:
    """Stream them all, a few at a time as an application's workers would."""
    limit = asyncio.Semaphore(8)

    async def one(index: int, case: Case, seed: int) -> None:
        async with limit:
            await run_case(gw, case, f"{prefix}-{index}-{case.name}", seed)

    await asyncio.gather(*(one(i, c, s) for i, (c, s) in enumerate(streams)))


def misclassified(
    gw: Gateway, streams: list[tuple[Case, int]], prefix: str
) -> tuple[list[str], int]:
    """The streams whose verdict is wrong, and the malformed frames counted on them."""
    lines = gw.lines()
    wrong, malformed = [], 0
    for index, (case, _) in enumerate(streams):
        line = lines[f"{prefix}-{index}-{case.name}"]
        malformed += line["malformed_frames"]
        problems = check_line(case, line)
        if problems:
            wrong.append(f"{line['request_id']}: {problems}")
    return wrong, malformed


class TestManyStreamsBehindLiteLLM:
    """Across many SDK streams through LiteLLM: no verdict wrong, no malformed frame counted."""

    async def test_no_misclassified_outcome(self, gateway: Gateway) -> None:
        """``STREAMWATCH_LITELLM_STREAMS`` streams (64 by default: eight rounds of the eight
        concurrent clients, every case many times; 200 or more for a deeper run)."""
        streams = mix(int(os.environ.get("STREAMWATCH_LITELLM_STREAMS", "64")))
        before = await gateway.metrics()
        await run_many(gateway, streams, "many")
        await until(
            lambda: all(
                f"many-{i}-{c.name}" in gateway.lines() for i, (c, _) in enumerate(streams)
            ),
            within=60.0,
            what="every log line",
        )
        after = await gateway.metrics()
        wrong, malformed = misclassified(gateway, streams, "many")
        print(
            f"{len(streams)} streams behind LiteLLM: {len(wrong)} misclassified, {malformed} malformed"
        )
        assert wrong == []
        assert malformed == 0
        delta = after.value("streamwatch_analysis_errors_total") - before.value(
            "streamwatch_analysis_errors_total"
        )
        assert delta == 0
        completed = after.value("streamwatch_streams_total", outcome="completed") - before.value(
            "streamwatch_streams_total", outcome="completed"
        )
        assert completed == len(streams)
