"""The simulated upstream over real sockets: aiohttp handlers that play a scenario's steps.

Each event is its own `write` on a TCP_NODELAY socket, so a proxy in front sees provider-like reads;
a reset is a real RST (SO_LINGER 0, then abort), never a clean end of the chunked body. Handler
cancellation is on, so a client that goes away stops its stream's generation.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import struct
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from streamwatch.simulator.profile import HEADER_PREFIX, Profile, scenario_for
from streamwatch.simulator.scenario import (
    MEDIA_TYPES,
    Api,
    Close,
    Scenario,
    Send,
    response_body,
    steps,
)

PROFILE_KEY = web.AppKey("profile", Profile)
RNG_KEY = web.AppKey("rng", random.Random)

# Long enough for short test streams to finish on shutdown, short enough that a stalled
# stream does not hold `streamwatch demo` open.
SHUTDOWN_TIMEOUT_S = 2.0
MAX_REQUEST_BYTES = 64 << 20  # as streamwatch's --max-request-body default

NON_STREAMING: frozenset[Api] = frozenset(
    {"openai_chat", "openai_responses", "anthropic_messages", "openai_completions", "ollama_chat",
     "ollama_generate", "cohere_v2"}
)  # fmt: skip
MODELS = ("gpt-4o-mini", "gpt-5-nano", "claude-sonnet-4-6", "sim-model")

_OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_response(api: Api, status: int, message: str) -> web.Response:
    """A provider-shaped JSON error; 429, 503 and 529 carry Retry-After like the real APIs."""
    payload: dict[str, Any]
    if api == "anthropic_messages":
        kind = _ANTHROPIC_ERRORS.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        payload = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        fallback = ("server_error", None) if status >= 500 else ("invalid_request_error", None)
        kind, code = _OPENAI_ERRORS.get(status, fallback)
        payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    headers = {"Retry-After": "1"} if status in {429, 503, 529} else {}
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def _status_override(headers: Mapping[str, str]) -> int | None:
    raw = headers.get(HEADER_PREFIX + "status")
    if raw is None:
        return None
    if not raw.isdigit() or not 400 <= int(raw) <= 599:
        raise ValueError(f"{HEADER_PREFIX}status must be an HTTP error status 400-599, got {raw!r}")
    return int(raw)


def _socket(request: web.Request) -> socket.socket | None:
    transport = request.transport
    return None if transport is None else transport.get_extra_info("socket")


def _reset(request: web.Request) -> None:
    """Abort the connection with an RST: SO_LINGER 0 makes close() discard and reset."""
    sock = _socket(request)
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if request.transport is not None:
        request.transport.abort()


async def _wait_until(loop: asyncio.AbstractEventLoop, due: float) -> None:
    wait = due - loop.time()
    if wait > 0:
        await asyncio.sleep(wait)


async def _stream(request: web.Request, scenario: Scenario) -> web.StreamResponse:
    media = MEDIA_TYPES.get(scenario.api, "text/event-stream; charset=utf-8")
    response = web.StreamResponse(headers={"Content-Type": media, "Cache-Control": "no-cache"})
    await response.prepare(request)
    sock = _socket(request)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    loop = asyncio.get_running_loop()
    due = loop.time()  # an absolute schedule: slow writes do not stretch later gaps
    try:
        for step in steps(scenario):
            due += step.delay_s
            await _wait_until(loop, due)
            if isinstance(step, Send):
                await response.write(step.render(time.monotonic_ns()))
            elif isinstance(step, Close):
                await response.write_eof()
            else:
                _reset(request)
    except ConnectionResetError:
        pass  # the client went away: stop generating
    return response


async def _complete(request: web.Request, scenario: Scenario) -> web.StreamResponse:
    """Non-streaming: the whole generation time, then one JSON body (or the interruption)."""
    loop = asyncio.get_running_loop()
    await _wait_until(loop, loop.time() + sum(step.delay_s for step in steps(scenario)))
    interruption = scenario.interruption
    if interruption is not None and interruption[0] == "error":
        status = 529 if scenario.api == "anthropic_messages" else 500
        return error_response(
            scenario.api, status, "Overloaded" if status == 529 else "Server error"
        )
    body = response_body(scenario)
    if interruption is None:
        return web.Response(body=body, content_type="application/json")
    # Truncation and reset: the declared length never arrives.
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    if interruption[0] == "reset":
        _reset(request)
    elif request.transport is not None:
        request.transport.close()
    return response


async def _generate(
    request: web.Request, api: Api, *, streaming: bool | None = None
) -> web.StreamResponse:
    """One generation. ``streaming`` is what the endpoint itself decides (Gemini and Bedrock stream
    by path, Ollama unless the body says ``"stream": false``); None: the body's ``stream: true``."""
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return error_response(api, 400, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return error_response(api, 400, "The request body must be a JSON object.")
    try:
        status = _status_override(request.headers)
        scenario = scenario_for(
            api,
            body,
            request.headers,
            request.app[PROFILE_KEY],
            request.app[RNG_KEY],
            created=int(time.time()),
            input_tokens=max(len(raw) // 4, 1),  # roughly four bytes of prompt per token
            model=request.match_info.get("model"),  # Gemini and Bedrock name it in the path
        )
    except ValueError as exc:
        return error_response(api, 400, str(exc))
    if status is not None:
        return error_response(api, status, f"Simulated HTTP {status} ({HEADER_PREFIX}status).")
    if (body.get("stream") is True) if streaming is None else streaming:
        return await _stream(request, scenario)
    if api not in NON_STREAMING:
        return error_response(api, 400, f"The simulator streams {api} only.")
    return await _complete(request, scenario)


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "openai_chat")


async def _responses(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "openai_responses")


async def _messages(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "anthropic_messages")


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "openai_completions")


async def _gemini(request: web.Request) -> web.StreamResponse:
    """``:streamGenerateContent``: SSE with ``alt=sse``, else one JSON array."""
    api: Api = "gemini" if request.query.get("alt") == "sse" else "gemini_json"
    return await _generate(request, api, streaming=True)


async def _converse(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "bedrock_converse", streaming=True)


async def _invoke(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "bedrock_invoke", streaming=True)


async def _ollama(request: web.Request, api: Api) -> web.StreamResponse:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = {}
    streaming = not (isinstance(body, dict) and body.get("stream") is False)  # Ollama's default
    return await _generate(request, api, streaming=streaming)


async def _ollama_chat(request: web.Request) -> web.StreamResponse:
    return await _ollama(request, "ollama_chat")


async def _ollama_generate(request: web.Request) -> web.StreamResponse:
    return await _ollama(request, "ollama_generate")


async def _cohere(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "cohere_v2")


async def _models(request: web.Request) -> web.Response:
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": "streamwatch-simulator"}
        for model in MODELS
    ]
    return web.Response(
        body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )


def make_app(profile: Profile | None = None) -> web.Application:
    """The simulator app; any path prefix before the API's own path is accepted, as gateways add
    their own."""
    # Long-context prompts run to megabytes; aiohttp's 1 MiB default would answer them 413.
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    resolved = profile or Profile()
    app[PROFILE_KEY] = resolved
    app[RNG_KEY] = resolved.rng()
    prefix = "/{prefix:(?:.*/)?}v1"
    app.router.add_post(prefix + "/chat/completions", _chat)
    app.router.add_post(prefix + "/responses", _responses)
    app.router.add_post(prefix + "/messages", _messages)
    app.router.add_get(prefix + "/models", _models)
    app.router.add_post(prefix + "/completions", _completions)
    any_prefix = "/{prefix:(?:.*/)?}"
    gemini = any_prefix + "models/{model:[^/:]+}:streamGenerateContent"  # v1beta/, v1/, Vertex
    app.router.add_post(gemini, _gemini)
    app.router.add_post(any_prefix + "model/{model:[^/]+}/converse-stream", _converse)
    app.router.add_post(any_prefix + "model/{model:[^/]+}/invoke-with-response-stream", _invoke)
    app.router.add_post(any_prefix + "api/chat", _ollama_chat)
    app.router.add_post(any_prefix + "api/generate", _ollama_generate)
    app.router.add_post(any_prefix + "v2/chat", _cohere)
    return app


async def start_simulator(
    host: str = "127.0.0.1",
    port: int = 0,
    profile: Profile | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve the simulator (over TLS with ``ssl_context``: a provider API); returns the runner
    (call `await runner.cleanup()`) and the bound port."""
    runner = web.AppRunner(
        make_app(profile), handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    bound: int = runner.addresses[0][1]
    return runner, bound
