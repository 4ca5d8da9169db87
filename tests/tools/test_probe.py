"""``streamwatch probe``: the canary's verdicts through the CLI, against the simulator and a real proxy."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from streamwatch.tools.probe_main import main as probe_main
from tests.harness import simulator
from tests.reliability.harness.proxy import ProxyProcess

CANARY = "sk-probe-canary-7f3a9c"


async def once(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    """``streamwatch probe --once --json`` in a thread (the simulator runs on this loop)."""
    out, err = io.StringIO(), io.StringIO()
    if env:
        for key, value in env.items():
            pytest.MonkeyPatch().setenv(key, value)
    status = await asyncio.to_thread(probe_main, ["--once", "--json", *args], out, err)
    doc = json.loads(out.getvalue()) if out.getvalue() else {}
    return status, doc, err.getvalue()


def sim(*headers: str) -> Sequence[str]:
    return [arg for h in headers for arg in ("--header", h)]


class TestVerdicts:
    """Each simulated fault fails the probe with its own reason; a healthy stream passes."""

    @pytest.mark.parametrize(
        ("api", "headers", "ok", "reason", "outcome"),
        [
            ("openai_chat", (), True, "ok", "completed"),
            ("openai_responses", (), True, "ok", "completed"),
            ("anthropic_messages", (), True, "ok", "completed"),
            ("openai_chat", ("x-sim-scenario=error",), False, "error_frame", "error_frame"),
            ("openai_chat", ("x-sim-scenario=truncate",), False, "truncated", "truncated"),
            (
                "anthropic_messages",
                ("x-sim-scenario=reset",),
                False,
                "upstream_reset",
                "upstream_reset",
            ),
            (
                "openai_chat",
                ("x-sim-scenario=stall", "x-sim-stall-ms=5000"),
                False,
                "upstream_timeout",
                "upstream_timeout",
            ),
            ("openai_chat", ("x-sim-status=503",), False, "http_503", None),
        ],
    )
    async def test_direct(
        self, api: str, headers: tuple[str, ...], ok: bool, reason: str, outcome: str | None
    ) -> None:
        async with simulator() as upstream:
            status, doc, err = await once(
                "--url", upstream, "--api", api, "--timeout", "2", *sim(*headers)
            )
        [probe] = doc["probes"]
        assert (probe["ok"], probe["reason"]) == (ok, reason), err
        assert status == (0 if ok else 1)
        if outcome is None:
            assert "verdict" not in probe
        else:
            assert probe["verdict"]["outcome"] == outcome
            assert probe["verdict"]["api"] == api

    async def test_stall_shorter_than_timeout_passes_and_is_timed(self) -> None:
        async with simulator() as upstream:
            status, doc, _ = await once(
                "--url",
                upstream,
                "--timeout",
                "10",
                *sim("x-sim-scenario=stall", "x-sim-stall-ms=400"),
            )
        [probe] = doc["probes"]
        assert status == 0
        assert probe["verdict"]["max_gap_s"] >= 0.4  # the gap the stall made is in the verdict
        assert probe["gaps"]["max_s"] >= 0.4

    async def test_unreachable(self) -> None:
        status, doc, _ = await once("--url", "http://127.0.0.1:9", "--timeout", "2")
        assert status == 1
        assert doc["probes"][0]["reason"] == "connect"


class TestThroughTheProxy:
    """Probing through ``streamwatch serve``: the proxy and the probe agree, the key stays secret."""

    async def test_same_verdict_and_no_credential_anywhere(self) -> None:
        async with simulator() as upstream:
            proxy = await asyncio.to_thread(ProxyProcess(upstream).start)
            try:
                url = f"http://127.0.0.1:{proxy.port}"
                status, doc, err = await once(
                    "--url",
                    url,
                    "--credential-env",
                    "PROBE_KEY",
                    "--header",
                    "x-request-id=probe-1",
                    "--header",
                    "x-sim-tool-call=1",
                    env={"PROBE_KEY": CANARY},
                )
                logged = await asyncio.to_thread(proxy.record, "probe-1")
                metrics = await asyncio.to_thread(proxy.metrics_text)
            finally:
                await asyncio.to_thread(proxy.stop)
        [probe] = doc["probes"]
        assert status == 0, err
        for field in ("outcome", "finish_reasons", "output_events", "output_tokens", "tool_calls"):
            assert probe["verdict"][field] == logged[field], field
        assert CANARY not in json.dumps(doc) + err + metrics + "".join(proxy.lines)


class TestConfig:
    """Bad configuration exits 2 naming the problem; credentials never come from the command line."""

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ((), "--url or --config is required"),
            (("--url", "ftp://x"), "url: expected an http"),
            (("--url", "http://u:p@h"), "credentials in the URL"),
            (("--url", "http://h", "--header", "Authorization=Bearer x"), "is a credential"),
            (("--url", "http://h", "--credential-env", "NOT_SET_ANYWHERE_42"), "is not set"),
            (("--url", "http://h", "--max-tokens", "0"), "must be positive"),
        ],
    )
    def test_refused(self, args: tuple[str, ...], message: str) -> None:
        err = io.StringIO()
        assert probe_main(["--once", *args], io.StringIO(), err) == 2
        assert message in err.getvalue()

    def test_config_file(self, tmp_path: Path) -> None:
        path = tmp_path / "probes.yaml"
        path.write_text("targets:\n  - {name: a, url: 'http://h', api: bogus}\n")
        err = io.StringIO()
        assert probe_main(["--once", "--config", str(path)], io.StringIO(), err) == 2
        assert "targets[0].api" in err.getvalue()
