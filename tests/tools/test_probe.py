"""``streamwatch probe``: the canary's verdicts through the CLI, against the simulator and a real proxy."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from streamwatch.tools.probe import target_from
from streamwatch.tools.probe_daemon import ProbeMetrics, metrics_app
from streamwatch.tools.probe_main import main as probe_main
from tests.e2e.test_scrape import ThreadProbe
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
        assert probe["verdict"]["max_gap_s"] > 0.3  # the stall's 400 ms gap is in the verdict
        assert probe["gaps"]["max_s"] == probe["verdict"]["max_gap_s"]

    async def test_unreachable(self) -> None:
        status, doc, _ = await once("--url", "http://127.0.0.1:9", "--timeout", "2")
        assert status == 1
        assert doc["probes"][0]["reason"] == "connect"
        assert doc["probes"][0]["failure"] == "connect"

    async def test_tls_handshake_failure(self) -> None:
        """https:// to a server that speaks plain HTTP fails in the TLS phase: reason tls."""
        async with simulator() as upstream:
            url = upstream.replace("http://", "https://")
            status, doc, _ = await once("--url", url, "--timeout", "5")
        assert status == 1
        assert doc["probes"][0]["status"] is None
        assert doc["probes"][0]["failure"] == "tls"


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


class TestDaemon:
    """As a daemon the probe exports the proxy's families with source="probe" and its verdicts."""

    async def test_metrics(self, tmp_path: Path) -> None:
        import os
        import sys
        import time

        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        async with simulator() as upstream:
            config = {
                "targets": [
                    {"name": "good", "url": upstream, "interval": 0.2, "credential_env": "PK"},
                    {
                        "name": "bad",
                        "url": upstream,
                        "interval": 0.2,
                        "headers": {"x-sim-scenario": "error"},
                    },
                    {"name": "down", "url": "http://127.0.0.1:9", "interval": 0.2},
                ]
            }
            path = tmp_path / "probes.yaml"
            path.write_text(json.dumps(config))  # JSON is YAML
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streamwatch",
                "probe",
                "--config",
                str(path),
                "--listen",
                "127.0.0.1:0",
                stderr=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PK": CANARY},
            )
            lines: list[str] = []
            try:
                assert proc.stderr is not None
                port = None
                while port is None:
                    raw = await asyncio.wait_for(proc.stderr.readline(), 30)
                    assert raw, "probe exited: " + "".join(lines)
                    lines.append(raw.decode())
                    event = json.loads(raw)
                    if event.get("event") == "probe.started":
                        port = int(event["listen"].rpartition(":")[2])

                def values() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                    return {
                        (s.name, tuple(sorted(s.labels.items()))): s.value
                        for f in text_string_to_metric_families(text)
                        for s in f.samples
                    }

                def streams(found: dict[Any, float], outcome: str, route: str) -> float:
                    return sum(
                        v
                        for (name, labels), v in found.items()
                        if name == "streamwatch_streams_total"
                        and ("outcome", outcome) in labels
                        and ("route", route) in labels
                    )

                deadline = time.monotonic() + 30
                while True:
                    found = await asyncio.to_thread(values)
                    passed = found.get(
                        ("streamwatch_probes_total", (("result", "passed"), ("target", "good"))), 0
                    )
                    failed = found.get(
                        ("streamwatch_probes_total", (("result", "failed"), ("target", "bad"))), 0
                    )
                    down = found.get(
                        (
                            "streamwatch_probe_failures_total",
                            (("reason", "connect"), ("target", "down")),
                        ),
                        0,
                    )
                    # the upstream-error counter too: a scrape is not one snapshot, so it can
                    # show the second probe failure before that probe's upstream error
                    down_errors = sum(
                        v
                        for (name, labels), v in found.items()
                        if name == "streamwatch_upstream_errors_total"
                        and ("route", "down") in labels
                        and ("kind", "connect") in labels
                    )
                    # and the streams: a probe's verdict is counted before its stream's record
                    completed = streams(found, "completed", "good")
                    errored = streams(found, "error_frame", "bad")
                    if (
                        passed >= 2
                        and failed >= 2
                        and down >= 2
                        and down_errors >= 2
                        and completed >= 2
                        and errored >= 2
                    ):
                        break
                    assert time.monotonic() < deadline, found
                    await asyncio.sleep(0.1)
                text = await asyncio.to_thread(
                    lambda: httpx.get(f"http://127.0.0.1:{port}/metrics").text
                )
            finally:
                proc.terminate()
                assert await asyncio.wait_for(proc.wait(), 15) == 0
                assert proc.stderr is not None
                lines.append((await proc.stderr.read()).decode())
        assert found[("streamwatch_probe_success", (("target", "good"),))] == 1
        assert found[("streamwatch_probe_success", (("target", "bad"),))] == 0
        assert found[("streamwatch_probe_success", (("target", "down"),))] == 0
        failures = {
            (dict(labels)["target"], dict(labels)["reason"]): v
            for (name, labels), v in found.items()
            if name == "streamwatch_probe_failures_total"
        }
        assert set(failures) == {("bad", "error_frame"), ("down", "connect")}
        # a probe that got no response has no status: counted as an upstream failure of its
        # kind, never as requests_total{code="0"}
        codes = {
            dict(labels)["code"]
            for (name, labels), v in found.items()
            if name == "streamwatch_requests_total" and v
        }
        assert codes == {"200"}
        stream_samples = [k for k in found if k[0] == "streamwatch_streams_total"]
        assert stream_samples
        assert all(("source", "probe") in labels for _, labels in stream_samples)
        assert completed >= 2
        assert errored >= 2
        ttft = [
            v
            for (name, labels), v in found.items()
            if name == "streamwatch_time_to_first_token_seconds_count"
            and ("route", "good") in labels
        ]
        assert sum(ttft) >= 2
        # every series stays distinct once source="probe" is added (Prometheus drops duplicates)
        series = [
            (s.name, tuple(sorted(s.labels.items())))
            for f in text_string_to_metric_families(text)
            for s in f.samples
        ]
        assert len(series) == len(set(series))
        delivered = ("streamwatch_delivered_output_tokens_total", "good")
        assert any(
            name == delivered[0] and ("route", delivered[1]) in labels and value > 0
            for (name, labels), value in found.items()
        )
        assert CANARY not in text + "".join(lines)
        assert any('"probe.failed"' in line and '"bad"' in line for line in lines)


class TestDaemonScrape:
    """The daemon's /metrics renders in a worker thread, not on the loop that times the probes."""

    async def test_render_runs_off_the_loop_thread(self) -> None:
        metrics = ProbeMetrics([target_from({"name": "t", "url": "http://127.0.0.1:9"}, 0)])
        probe = ThreadProbe()
        metrics.exposed.register(probe)  # type: ignore[arg-type]
        runner = web.AppRunner(metrics_app(metrics), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            port = runner.addresses[0][1]
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
        finally:
            await runner.cleanup()
        assert response.status_code == 200
        assert "probe_thread 1.0" in response.text
        assert 'streamwatch_probe_success{target="t"} 0.0' in response.text
        assert probe.threads
        assert threading.get_ident() not in probe.threads
