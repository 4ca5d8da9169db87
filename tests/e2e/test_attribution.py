"""Latency attribution with two sidecars around a real gateway: the official OpenAI SDK ->
``streamwatch serve --side client`` -> LiteLLM's proxy -> ``streamwatch serve --side provider`` ->
the simulator (docs/provider-side.md).

The simulator's first token comes after a fixed delay, so the provider side's TTFT is that delay
plus a hop, and the client side's TTFT adds what LiteLLM spent; the difference of the two sides'
TTFT for the same request is the time the gateway added. LiteLLM forwards ``x-request-id`` (with
``forward_client_headers_to_llm_api``) and, only with its OpenTelemetry callback on and
``forward_traceparent_to_llm_provider``, the incoming ``traceparent`` unchanged: then both
sidecars' spans share the trace, and the provider side's span is a child of the client side's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import openai
import pytest
import pytest_asyncio

from streamwatch.export import semconv as sc
from streamwatch.simulator.profile import Profile
from tests.conftest import missing
from tests.e2e.otlp import Receiver, otlp_receiver
from tests.e2e.test_litellm import LITELLM, litellm_proxy
from tests.harness import Scrape, scrape, serve_process, simulator, until
from tests.reliability.harness.proxy import ProxyProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(900),  # LiteLLM's proxy can take minutes to start on a busy box
]

PROVIDER_TTFT_S = 0.3  # the simulator's time to first token
PROFILE = Profile(
    weights={"normal": 1.0},
    output_tokens=6,
    ttft_s=PROVIDER_TTFT_S,
    gap_mean_s=0.005,
    gap_jitter_s=0.0,
)
STREAMS = 3
OTEL_SDK = "lib/python3*/site-packages/opentelemetry/sdk"  # .ci/run installs it for LiteLLM


@dataclass
class TwoSidecars:
    """Both sidecars, LiteLLM between them, and the OTLP receiver all of them export to."""

    client_side: ProxyProcess
    provider_side: ProxyProcess
    key: str
    receiver: Receiver
    lines: dict[str, dict[str, dict[str, Any]]]  # side -> request id -> stream line
    scrapes: dict[str, Scrape]  # side -> /metrics after the streams
    traces: dict[str, str]  # request id -> the trace id its client sent


def _stream_lines(serve: ProxyProcess) -> dict[str, dict[str, Any]]:
    return {
        line["request_id"]: line
        for line in serve.events()
        if str(line.get("event", "")).startswith("stream.")
    }


def _traced(service: str, receiver: Receiver) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": service}


async def _stream(client: openai.AsyncOpenAI, request_id: str, traceparent: str) -> str:
    stream = await client.chat.completions.create(
        model="chat-model",
        messages=[{"role": "user", "content": "Tell me a story."}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": request_id, "traceparent": traceparent},
    )
    text = []
    async for chunk in stream:
        text += [c.delta.content or "" for c in chunk.choices]
    return "".join(text)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def measured(tmp_path_factory: pytest.TempPathFactory) -> TwoSidecars:
    """Three streams through both sidecars; everything read after every process stopped (spans
    are flushed at shutdown)."""
    if LITELLM.is_file() and not any(LITELLM.parent.parent.glob(OTEL_SDK)):
        missing(f"LiteLLM's otel callback needs opentelemetry-sdk in {LITELLM.parent.parent}")
    workdir = tmp_path_factory.mktemp("attribution")
    ids = [f"attr-{i}-{secrets.token_hex(4)}" for i in range(STREAMS)]
    async with otlp_receiver() as receiver:
        async with (
            simulator(PROFILE) as upstream,
            serve_process(
                "--upstream", upstream, "--side", "provider",
                env=_traced("streamwatch-provider", receiver),
            ) as provider_side,
            litellm_proxy(
                provider_side.proxy_url,
                workdir,
                settings={"callbacks": ["otel"], "forward_traceparent_to_llm_provider": True},
                environ={
                    "OTEL_EXPORTER": "otlp_http",
                    "OTEL_ENDPOINT": receiver.endpoint + "/v1/traces",
                    "OTEL_SERVICE_NAME": "litellm",
                },
            ) as (litellm_url, key),
            serve_process(
                "--upstream", litellm_url, env=_traced("streamwatch-client", receiver)
            ) as client_side,
        ):  # fmt: skip
            traces = {request_id: secrets.token_hex(16) for request_id in ids}
            async with openai.AsyncOpenAI(
                base_url=f"{client_side.proxy_url}/v1", api_key=key, max_retries=0
            ) as client:
                for request_id, trace in traces.items():
                    parent = secrets.token_hex(8)
                    assert await _stream(client, request_id, f"00-{trace}-{parent}-01")
            sides = {"client": client_side, "provider": provider_side}

            async def all_lines() -> bool:
                return all(set(ids) <= set(_stream_lines(s)) for s in sides.values())

            await until(all_lines, within=60.0, what="both sides' stream lines")
            lines = {side: _stream_lines(s) for side, s in sides.items()}
            scrapes = {side: await scrape(s.admin_port) for side, s in sides.items()}
        await until(
            lambda: (
                {s.attributes.get(sc.SW_SIDE) for s in receiver.spans} >= {"client", "provider"}
            ),
            within=30.0,
            what="both sides' spans",
        )
        return TwoSidecars(client_side, provider_side, key, receiver, lines, scrapes, traces)


class TestGatewayAttribution:
    """Client-side minus provider-side TTFT of one request is the time the gateway added."""

    async def test_each_side_measures_its_own_hop(self, measured: TwoSidecars) -> None:
        """The provider side sees the simulator's delay; the client side sees more, by what
        LiteLLM added, for every request (joined by the request id LiteLLM forwards)."""
        for request_id, client in measured.lines["client"].items():
            provider = measured.lines["provider"][request_id]
            assert (client["side"], provider["side"]) == ("client", "provider")
            assert (client["outcome"], provider["outcome"]) == ("completed", "completed")
            assert provider["ttft_s"] >= PROVIDER_TTFT_S
            added = client["ttft_s"] - provider["ttft_s"]
            print(f"TTFT client {client['ttft_s']} s - provider {provider['ttft_s']} s = {added} s")
            assert added > 0, (client["ttft_s"], provider["ttft_s"])
            assert client["duration_s"] > provider["duration_s"]

    async def test_metrics_carry_the_side(self, measured: TwoSidecars) -> None:
        """Each sidecar's TTFT histogram holds its streams under its own side label."""
        ttft = "streamwatch_time_to_first_token_seconds_count"
        assert measured.scrapes["client"].values(ttft, "side") == {"client": STREAMS}
        assert measured.scrapes["provider"].values(ttft, "side") == {"provider": STREAMS}

    async def test_gateway_announced_timings(self, measured: TwoSidecars) -> None:
        """The client side records LiteLLM's announced overhead and response durations; the
        provider side (the simulator announces none) records none."""
        for line in measured.lines["client"].values():
            announced = line["upstream_timings_s"]
            assert {"litellm_overhead", "litellm_response"} <= set(announced)
            assert all(value >= 0 for value in announced.values())
        assert all("upstream_timings_s" not in line for line in measured.lines["provider"].values())

    async def test_one_trace_across_the_gateway(self, measured: TwoSidecars) -> None:
        """Both sidecars' spans continue the client's trace; the provider side's span is a child
        of the client side's (LiteLLM forwards the traceparent it received, unchanged)."""
        spans = measured.receiver.spans
        for request_id, trace in measured.traces.items():
            mine = [s for s in spans if s.attributes.get(sc.SW_REQUEST_ID) == request_id]
            by_side = {s.attributes[sc.SW_SIDE]: s for s in mine}
            client, provider = by_side["client"], by_side["provider"]
            assert client.trace_id == provider.trace_id == trace
            assert provider.parent_span_id == client.span_id
