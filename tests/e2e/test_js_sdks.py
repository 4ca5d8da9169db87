"""The official JavaScript SDKs (``openai``, ``@anthropic-ai/sdk``) as clients of ``streamwatch serve``.

``tests/js/run.mjs`` streams Chat Completions, Responses and Messages (text, tool calls, reasoning,
budget cuts, error frames, cuts and resets) from the simulator, once direct and once through
streamwatch: the SDK's final result (or its error) must be the same, and streamwatch must give each
stream the verdict its script implies. ``.ci/run`` installs the SDKs with ``npm ci`` in ``tests/js``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, missing
from tests.harness import FAST, scrape, serve_process, simulator, until

pytestmark = pytest.mark.e2e

JS_DIR = REPO_ROOT / "tests" / "js"
APIS = ("chat", "responses", "messages")
#: Simulator behaviour -> the outcome streamwatch must record for it.
OUTCOMES = {
    "normal": "completed",
    "tool_call": "completed",
    "reasoning": "completed",
    "max_tokens": "completed",  # a budget cut is a finish reason, not a truncation
    "error": "error_frame",
    "truncate": "truncated",
    "reset": "upstream_reset",
}
#: The finish reason each API writes for a whole answer, a tool call and a budget cut.
FINISH = {
    "chat": {
        "normal": "stop",
        "reasoning": "stop",
        "tool_call": "tool_calls",
        "max_tokens": "length",
    },
    "responses": {
        "normal": "completed",
        "reasoning": "completed",
        "tool_call": "completed",
        "max_tokens": "incomplete:max_output_tokens",
    },
    "messages": {
        "normal": "end_turn",
        "reasoning": "end_turn",
        "tool_call": "tool_use",
        "max_tokens": "max_tokens",
    },
}
CASES = [
    {"id": f"js-{api}-{scenario}", "api": api, "scenario": scenario, "seed": 11}
    for api in APIS
    for scenario in OUTCOMES
]


def node() -> str:
    """The node binary, once ``npm ci`` has installed the SDKs (else skip, or fail in CI)."""
    binary = shutil.which("node")
    if binary is None:
        missing("node is not installed (Debian: apt-get install nodejs)")
    if not (JS_DIR / "node_modules" / "openai").is_dir():
        missing("the JavaScript SDKs are not installed: run `npm ci` in tests/js (.ci/run does)")
    assert binary is not None
    return binary


async def run_js(binary: str, base_url: str) -> dict[str, Any]:
    """Every case through ``run.mjs`` against ``base_url``; its JSON results by case id."""
    proc = await asyncio.create_subprocess_exec(
        binary,
        str(JS_DIR / "run.mjs"),
        cwd=JS_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    request = json.dumps({"baseURL": base_url, "cases": CASES}).encode()
    try:
        out, err = await asyncio.wait_for(proc.communicate(request), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    results: dict[str, Any] = json.loads(out)
    return results


def reported_output(api: str, final: dict[str, Any]) -> int:
    """The output tokens in the usage of an SDK's final result."""
    usage = final["usage"]
    return int(usage["completion_tokens"] if api == "chat" else usage["output_tokens"])


class TestJavaScriptSDKs:
    """Through streamwatch the JS SDKs get what they get direct, and each stream is counted right."""

    async def test_every_api_and_behaviour(self) -> None:
        binary = node()
        async with simulator(FAST) as upstream, serve_process("--upstream", upstream) as serve:
            direct = await run_js(binary, upstream)
            proxied = await run_js(binary, serve.proxy_url)

            def lines() -> dict[str, dict[str, Any]]:
                return {
                    line["request_id"]: line
                    for line in serve.events()
                    if str(line.get("event", "")).startswith("stream.")
                }

            await until(lambda: len(lines()) >= len(CASES), within=15, what="every log line")
            metrics = await scrape(serve.admin_port)
        logged = lines()
        for case in CASES:
            name, api, scenario = case["id"], case["api"], case["scenario"]
            assert proxied[name] == direct[name], name
            line = logged[name]
            assert line["outcome"] == OUTCOMES[scenario], name
            finish = FINISH[api].get(scenario)
            if finish is not None:
                assert line["finish_reasons"] == [finish], name
            # The frame naming a tool is an output event the SDK yields no delta for.
            named_tool = scenario == "tool_call"
            assert line["output_events"] == len(proxied[name]["deltas"]) + named_tool, name
            assert line["output_tokens_estimated"] is (OUTCOMES[scenario] != "completed"), name
            assert line["malformed_frames"] == 0, name
            if not line["output_tokens_estimated"]:  # exact: the usage the SDK's result reports
                assert line["output_tokens"] == reported_output(api, proxied[name]["final"]), name
        expected = Counter(OUTCOMES[c["scenario"]] for c in CASES)
        assert metrics.values("streamwatch_streams_total", "outcome") == {
            k: float(v) for k, v in expected.items()
        }
        assert metrics.value("streamwatch_output_events_total") == sum(
            line["output_events"] for line in logged.values()
        )
        assert metrics.value("streamwatch_analysis_errors_total") == 0
