"""A real Prometheus scrapes a running ``streamwatch serve`` while the simulator drives a scripted mix
of streams; every dashboard, recording-rule and alert expression then returns data (issue #5).

One module-scoped setup (about 15 s): the simulator, ``streamwatch serve`` as a subprocess with a
second route to a closed port (connect errors), a ``streamwatch probe`` daemon probing the simulator
(one passing target, one answered with error frames; issue #16), and Prometheus scraping both in
one job every second with the mixin's rule files. Traffic comes in two waves with a scrape between
them, so every series the mix creates has at least two samples and ``rate()`` sees the second
wave's increase.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from streamwatch import metricspec as spec
from tests.dashboards.mixin import MIXIN_CONFIG, RULE_FILES, named_exprs, rules, skip_unless
from tests.dashboards.promserver import PROMETHEUS, PromServer
from tests.harness import (
    CHAT,
    FAST_ARGS,
    LOOPBACK,
    MESSAGES,
    RESPONSES,
    Scrape,
    raw_exchange,
    refusing_port,
    request_bytes,
    scrape,
    serve_process,
    simulate_process,
    until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOB = 'job="streamwatch"'
# the proxy's own series: the probe daemon is scraped in the same job, its series carry source="probe"
PROXY = f'{JOB}, source!="probe"'
PROBE_TARGETS = {"canary": {}, "broken": {"x-sim-scenario": "error"}}
# api label -> (path, model the request names and the simulator answers with)
APIS = {
    "openai_chat": (CHAT, "gpt-4o-mini"),
    "openai_responses": (RESPONSES, "gpt-5-mini"),
    "anthropic_messages": (MESSAGES, "claude-sonnet-4-5"),
    "ollama_chat": ("/api/chat", "llama3.2"),  # NDJSON, and durations reported by the upstream
}
# Panels only some APIs have data for: empty when another API is selected.
ONLY_FOR = {"Upstream-reported durations": frozenset({"ollama_chat"})}
DEAD_PREFIX = "/dead"  # the second route: upstream is a closed port
# Every stream has a TTFT, gaps and a decode rate worth measuring, and is over in well under 1 s.
BASE = {"x-sim-tokens": "8", "x-sim-ttft-ms": "30", "x-sim-gap-ms": "10", "x-sim-seed": "5"}
# Alerts whose condition the mix does not (and cannot, in a minute) meet: a TTFT SLO burn needs
# first tokens past 10 s, an analyzer fault is a streamwatch bug, and the target is up. (The goodput
# burn does fire: the mix's truncations, resets and error frames miss the objectives.) The probe's
# first tokens take milliseconds, far below its 10 s TTFT threshold.
MAY_BE_EMPTY = frozenset({
    "StreamwatchTTFTSLOBurn", "StreamwatchAnalysisFailing", "StreamwatchTargetDown",
    "StreamwatchAbsent", "StreamwatchProbeTTFTHigh",
})  # fmt: skip


@dataclass(frozen=True)
class Call:
    """One scripted request through the proxy."""

    api: str
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: bool = True
    abort: bool = False  # the client hangs up after the first output events
    prefix: str = ""

    def request(self) -> bytes:
        path, model = APIS[self.api]
        body: dict[str, Any] = {"model": model, "stream": self.stream}
        if self.api == "openai_responses":
            body["input"] = "hi"
        else:
            body["messages"] = [{"role": "user", "content": "hi"}]
        if self.api == "openai_chat":
            body["stream_options"] = {"include_usage": True}
        if self.api == "anthropic_messages":
            body["max_tokens"] = 64
        return request_bytes(self.prefix + path, body, {**BASE, **self.headers})


def scenario(name: str, **headers: str) -> dict[str, str]:
    return {"x-sim-scenario": name} | {
        f"x-sim-{k.replace('_', '-')}": v for k, v in headers.items()
    }


def warm_up() -> list[Call]:
    """Wave 1: one healthy stream per API and one connect error, creating the label children."""
    return [Call(api, scenario("normal")) for api in APIS] + [
        Call("openai_chat", prefix=DEAD_PREFIX)
    ]


def mix() -> list[Call]:
    """Wave 2: every behaviour the dashboards show, on every API."""
    calls: list[Call] = []
    for api in APIS:
        calls += [
            Call(api, scenario("normal")),
            Call(api, scenario("normal", seed="6")),
            Call(api, scenario("tool_call")),
            Call(api, scenario("reasoning")),
            Call(api, scenario("max_tokens")),
            Call(api, scenario("error")),
            Call(api, scenario("truncate")),
            Call(api, scenario("reset")),
            # mid-stream stall: silent for 3 s after 2 tokens (threshold 0.5 s), then resumes
            Call(api, scenario("stall", stall_ms="3000", stall_after="2")),
            # stall before the first token (first-token threshold 0.5 s)
            Call(api, scenario("normal", ttft_ms="2000")),
            Call(api, scenario("normal", tokens="60", gap_ms="100"), abort=True),
            Call(api, {"x-sim-status": "429"}),
            Call(api, scenario("normal"), stream=False),
        ]
    # enough requests to the dead route to pass the alerts' minimum-traffic guard (min_streams_5m)
    calls += [Call("openai_chat", prefix=DEAD_PREFIX)] * 20
    return calls


async def drive(port: int, calls: list[Call]) -> None:
    """Send every call concurrently on its own connection and read it to the end (or abort)."""

    def aborted(wire: bytes) -> bool:
        return wire.count(b"data:") >= 4

    await asyncio.gather(
        *(raw_exchange(port, c.request(), stop_when=aborted if c.abort else None) for c in calls)
    )


@dataclass
class Live:
    """The running setup, after both waves were scraped."""

    prom: PromServer
    instance: str  # the scrape target, as Prometheus labels it
    final: Scrape  # streamwatch's own /metrics after the last stream ended

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` returns; fails the test if it does not parse."""
        answer = self.prom.query(expr)
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def scalar(self, expr: str) -> float:
        [sample] = self.query(expr)
        return float(sample["value"][1])

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expr)}


@contextlib.asynccontextmanager
async def probe_daemon(upstream: str, workdir: Path) -> AsyncIterator[str]:
    """A ``streamwatch probe`` daemon probing each of PROBE_TARGETS on ``upstream`` every 0.3 s;
    yields the host:port of its /metrics, read from its ``probe.started`` log line."""
    targets = [
        {"name": name, "url": upstream, "interval": 0.3, "headers": {**BASE, **headers}}
        for name, headers in PROBE_TARGETS.items()
    ]
    config = workdir / "probes.yaml"
    config.write_text(json.dumps({"targets": targets}))  # JSON is YAML
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamwatch", "probe", "--config", str(config),
        "--listen", f"{LOOPBACK}:0",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    stderr = proc.stderr

    async def started() -> str:
        lines: list[bytes] = []
        while line := await stderr.readline():
            lines.append(line)
            if json.loads(line).get("event") == "probe.started":
                listen: str = json.loads(line)["listen"]
                return listen
        raise AssertionError(b"streamwatch probe exited:\n" + b"".join(lines))

    async def drain() -> None:  # keep reading its log so it never blocks on a full pipe
        while await stderr.readline():
            pass

    try:
        listen = await asyncio.wait_for(started(), 30)
        draining = asyncio.create_task(drain())
        yield listen
        draining.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)


def wait_for_scrapes(prom: PromServer, instance: str, count: int) -> None:
    """Block until Prometheus has scraped ``instance`` ``count`` more times."""
    ts = f'timestamp(up{{{JOB}, instance="{instance}"}})'
    [start] = prom.wait_for(ts)
    prom.wait_for(f"{ts} >= {float(start['value'][1]) + count - 0.5}", timeout=count * 3 + 10)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    skip_unless(shutil.which(PROMETHEUS) is not None, "prometheus not installed (apt prometheus)")
    config = tmp_path_factory.mktemp("live") / "routes.yaml"
    with refusing_port() as dead_port:  # refuses connections: the "dead" route's upstream
        dead = f"http://{LOOPBACK}:{dead_port}"
        route = {"name": "dead", "prefix": DEAD_PREFIX, "upstream": dead, "strip_prefix": True}
        config.write_text(yaml.safe_dump({"routes": [route]}))
        async with (
            # a process of its own: the probe daemon's canary must be answered while the module's
            # synchronous tests hold the event loop still (an in-loop simulator timed it out)
            simulate_process(*FAST_ARGS) as sim,
            probe_daemon(sim, config.parent) as probe,
            serve_process(
                "--upstream", sim, "--config", str(config),
                "--stall-threshold", "0.5", "--first-token-stall-threshold", "0.5",
                "--watchdog-interval", "0.05",
                # goodput objectives, so the goodput series, rules and panels have data
                "--slo-ttft", "5", "--slo-tpot", "1", "--slo-no-stall", "true",
                # captures of the mix's problem streams, so the capture panel has data
                "--capture-dir", str(config.parent / "captures"),
            ) as serve,
        ):  # fmt: skip
            instance = f"{LOOPBACK}:{serve.admin_port}"
            prom = PromServer(instance, RULE_FILES, more_targets=[probe])
            try:
                await asyncio.to_thread(prom.wait_ready)
                await asyncio.to_thread(prom.wait_for, f"count(up{{{JOB}}} == 1) == 2")
                await drive(serve.proxy_port, warm_up())
                await asyncio.to_thread(prom.wait_for, f"sum({spec.STREAMS.name}{{{PROXY}}}) >= 3")
                await drive(serve.proxy_port, mix())

                async def all_closed() -> bool:
                    return (await scrape(serve.admin_port)).value(spec.STREAMS_ACTIVE.name) == 0

                await until(all_closed, within=10, what="every stream closed")
                final = await scrape(serve.admin_port)
                streams = final.value(spec.STREAMS.name)
                requests = final.value(spec.REQUESTS.name)
                await asyncio.to_thread(
                    prom.wait_for,
                    f"sum({spec.STREAMS.name}{{{PROXY}}}) == {streams}"
                    f" and sum({spec.REQUESTS.name}{{{PROXY}}}) == {requests}",
                )
                # Series first seen in the last scrape need a second sample for rate(); the rules
                # need an evaluation over it.
                await asyncio.to_thread(wait_for_scrapes, prom, instance, 2)
                yield Live(prom, instance, final)
            finally:
                await asyncio.to_thread(prom.close)


def alert_rule(name: str) -> dict[str, Any]:
    [rule] = [r for r in rules(RULE_FILES[1]) if r.get("alert") == name]
    return rule


def is_empty_allowed(where: str, api: str | None = None) -> bool:
    if api is not None and any(p in where and api not in apis for p, apis in ONLY_FOR.items()):
        return True
    return any(f"alerts: {name} #" in where for name in MAY_BE_EMPTY)


class TestScriptedMix:
    """Prometheus scraped the behaviours the mix provoked, as streamwatch counted them."""

    def test_outcomes_match_streamwatch(self, live: Live) -> None:
        """Every outcome of the mix arrived, with the counts streamwatch's /metrics shows."""
        scraped = live.by(f"sum by (outcome) ({spec.STREAMS.name}{{{PROXY}}}) > 0", "outcome")
        assert scraped == live.final.values(spec.STREAMS.name, "outcome")
        assert {"completed", "truncated", "error_frame", "upstream_reset", "client_abort"} <= set(
            scraped
        )

    def test_finish_reasons_stalls_tokens_and_errors(self, live: Live) -> None:
        """Budget cuts, tool calls, both stall phases, reasoning tokens and error frames counted."""
        reasons = live.by(
            f"sum by (finish_reason) ({spec.FINISH_REASONS_TOTAL.name}{{{PROXY}}})", "finish_reason"
        )
        assert {"length", "max_tokens", "tool_calls", "tool_use"} <= set(reasons), reasons
        phases = live.by(f"sum by (phase) ({spec.STALLS.name}{{{PROXY}}}) > 0", "phase")
        assert set(phases) == {"mid_stream", "before_first_token"}, phases
        assert live.scalar(f'sum({spec.TOKENS.name}{{{PROXY}, type="reasoning"}})') > 0
        assert live.scalar(f"sum({spec.ERROR_FRAMES.name}{{{PROXY}}})") >= len(APIS)
        assert live.scalar(f'sum({spec.ANALYSIS_ERRORS.name}{{{JOB}, stage="analyzer"}})') == 0

    def test_status_codes_and_connect_errors(self, live: Live) -> None:
        """429s pass through, the closed-port route answers 502 and counts connect errors."""
        codes = live.by(f"sum by (code) ({spec.REQUESTS.name}{{{PROXY}}})", "code")
        assert {"200", "429", "502"} <= set(codes), codes
        connect = live.scalar(f'{spec.UPSTREAM_ERRORS.name}{{{JOB}, route="dead", kind="connect"}}')
        assert connect == 21  # one in the warm-up, twenty in the mix

    def test_gauges_were_seen_up(self, live: Live) -> None:
        """A scrape caught streams open and stalled (the stalls last 1-2.5 s; scrapes are 1 s apart)."""
        for gauge in (spec.STREAMS_ACTIVE.name, spec.STREAMS_STALLED.name):
            assert live.scalar(f"max_over_time(sum({gauge}{{{PROXY}}})[1m:1s])") >= 1, gauge


class TestEveryExpression:
    """Each dashboard query, variable query, recording rule and alert parses and returns data."""

    def assert_all_have_data(self, live: Live, values: Mapping[str, str]) -> None:
        exprs = named_exprs(values)
        assert len(exprs) > 90  # the mixin was read, not an empty list
        empty, nan = [], []
        for where, expr in exprs.items():
            result = live.query(expr)
            if not result:
                if not is_empty_allowed(where, values.get("api")):
                    empty.append(f"{where}: {expr}")
            elif not any(math.isfinite(float(s["value"][1])) for s in result):
                nan.append(f"{where}: {expr}")
        assert not empty, "No data:\n" + "\n".join(empty)
        assert not nan, "only NaN:\n" + "\n".join(nan)

    def test_all_variables(self, live: Live) -> None:
        """With every variable at All (.*), no expression is empty or only NaN."""
        self.assert_all_have_data(live, {})

    @pytest.mark.parametrize("api", APIS)
    def test_one_selection(self, live: Live, api: str) -> None:
        """With one job, instance, route, API and model selected, no panel shows No data."""
        values = {
            "job": "streamwatch",
            "instance": live.instance,
            "route": "default",
            "api": api,
            "model": APIS[api][1],
        }
        self.assert_all_have_data(live, values)

    def test_only_the_allowlisted_alerts_are_silent(self, live: Live) -> None:
        """The truncation, error-frame, upstream-error and stall alerts' conditions all hold."""
        silent = {r["alert"] for r in rules(RULE_FILES[1]) if not live.query(r["expr"])}
        assert silent == MAY_BE_EMPTY


class TestRules:
    """Prometheus loaded every rule, and each recording rule's output exists."""

    def test_rules_are_healthy(self, live: Live) -> None:
        """No rule reports an evaluation error."""
        groups = live.prom.api("/api/v1/rules")["data"]["groups"]
        bad = [
            (r["name"], r.get("lastError"))
            for g in groups
            for r in g["rules"]
            if r["health"] != "ok"
        ]
        assert not bad

    def test_every_recorded_series_exists(self, live: Live) -> None:
        """Each recorded series name has at least one finite sample."""
        names = [r["record"] for r in rules(RULE_FILES[0])]
        missing = [
            name
            for name in names
            if not any(math.isfinite(float(s["value"][1])) for s in live.query(name))
        ]
        assert not missing


class TestStallAlert:
    """The stall alert's expression is above its configured threshold and the alert is active."""

    def test_expression_above_threshold(self, live: Live) -> None:
        """StreamwatchStallRateHigh's expr returns the default route, above the mixin config's threshold."""
        threshold = yaml.safe_load(MIXIN_CONFIG.read_text())["alerts"]["stall_ratio"]["threshold"]
        rule = alert_rule("StreamwatchStallRateHigh")
        above = {s["metric"]["route"]: float(s["value"][1]) for s in live.query(rule["expr"])}
        assert set(above) == {"default"}
        assert above["default"] > threshold

    def test_alert_pending_or_firing(self, live: Live) -> None:
        """Prometheus holds the alert, pending for its `for:` duration, for the default route."""
        [sample] = live.prom.wait_for('ALERTS{alertname="StreamwatchStallRateHigh"}')
        assert sample["metric"]["route"] == "default"
        assert sample["metric"]["alertstate"] in {"pending", "firing"}
        alerts = live.prom.api("/api/v1/alerts")["data"]["alerts"]
        assert {"StreamwatchStallRateHigh", "StreamwatchTruncationRateHigh"} <= {
            a["labels"]["alertname"] for a in alerts
        }


class TestSyntheticProbe:
    """The probe daemon, scraped in the proxy's job, feeds its row and alerts and no real-traffic rule."""

    def test_canary_streams_stay_out_of_real_traffic(self, live: Live) -> None:
        """The probe's streams are in the job, yet no recorded series or route variable names a target."""
        probed = live.by(
            f'sum by (route) ({spec.STREAMS.name}{{{JOB}, source="probe"}}) > 0', "route"
        )
        assert set(probed) == set(PROBE_TARGETS)
        routes = {
            s["metric"].get("route") for r in rules(RULE_FILES[0]) for s in live.query(r["record"])
        }
        assert "default" in routes
        assert not routes & set(PROBE_TARGETS)

    def test_probe_failing_names_the_broken_target(self, live: Live) -> None:
        """StreamwatchProbeFailing's expression holds for the target answered with error frames only."""
        failing = {
            s["metric"]["target"] for s in live.query(alert_rule("StreamwatchProbeFailing")["expr"])
        }
        assert failing == {"broken"}
