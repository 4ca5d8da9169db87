"""``streamwatch serve`` configuration end to end: bad values stop start-up with exit status 2 and a
message naming the option; a routes file sends each prefix to its own upstream and labels metrics
with the route name; flags override ``STREAMWATCH_*`` variables, which override the file."""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamwatch.config import add_arguments, load_settings
from tests.harness import (
    LOOPBACK,
    chat_stream,
    raw_exchange,
    request_bytes,
    run_cli,
    scrape,
    scripted,
    serve_process,
    until,
)

pytestmark = pytest.mark.e2e

UPSTREAM = "http://127.0.0.1:9"  # never contacted: start-up fails first


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by a listening socket, so binding it fails."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield sock.getsockname()[1]


BAD = {
    "flag-not-a-number": (["--stall-threshold", "abc"], {}, "", "--stall-threshold"),
    "env-zero": ([], {"STREAMWATCH_MAX_STREAMS": "0"}, "", "STREAMWATCH_MAX_STREAMS"),
    "upstream-scheme": (["--upstream", "ftp://x"], {}, "", "--upstream"),
    "malformed-yaml": ([], {}, "routes: [\n  - name: a\n    prefix: /a\n", "--config"),
    "unknown-key": ([], {}, "stall_treshold: 5\n", "'stall_treshold'"),
    "slo-not-positive": (["--slo-ttft", "-1"], {}, "", "--slo-ttft"),
    "route-slo": (
        [],
        {},
        "routes:\n  - {name: a, prefix: /, upstream: 'http://127.0.0.1:9', slo: {ttft: 0}}\n",
        "routes[0].slo.ttft must be a positive number",
    ),
    "model-slo": (
        [],
        {},
        "slo_by_model:\n  gpt-4o: {tpot: -1}\n",
        "slo_by_model.gpt-4o.tpot must be a positive number",
    ),
    "model-slo-empty": ([], {}, "slo_by_model:\n  gpt-4o: {}\n", "slo_by_model.gpt-4o sets no"),
    "route-api": (
        [],
        {},
        "routes:\n  - {name: a, prefix: /, upstream: 'http://127.0.0.1:9', api: ollama}\n",
        "routes[0].api must be one of",
    ),
    "log-queue-flag": (["--log-queue", "many"], {}, "", "--log-queue"),
    "log-queue-env": ([], {"STREAMWATCH_LOG_QUEUE": "0"}, "", "STREAMWATCH_LOG_QUEUE"),
    "side-flag": (["--side", "gateway"], {}, "", "--side"),
    "side-env": ([], {"STREAMWATCH_SIDE": "upstream"}, "", "STREAMWATCH_SIDE"),
    "route-side": (
        [],
        {},
        "routes:\n  - {name: a, prefix: /, upstream: 'http://127.0.0.1:9', side: gateway}\n",
        "routes[0].side must be one of client, provider",
    ),
    "route-ca-bundle-missing": (
        [],
        {},
        "routes:\n  - {name: a, prefix: /, upstream: 'https://127.0.0.1:9', ca_bundle: /no/ca.pem}\n",
        "routes[0].ca_bundle: no such file: '/no/ca.pem'",
    ),
    "route-ca-bundle-plain-http": (
        [],
        {},
        "routes:\n  - {name: a, prefix: /, upstream: 'http://127.0.0.1:9', ca_bundle: /etc/hostname}\n",
        "routes[0].ca_bundle needs an https upstream",
    ),
}


class TestBadConfiguration:
    """Every invalid setting stops start-up with status 2 and a message naming the option."""

    @pytest.mark.parametrize(("args", "env", "yaml_text", "named"), BAD.values(), ids=BAD)
    async def test_exit_2_naming_the_option(
        self, tmp_path: Path, args: list[str], env: dict[str, str], yaml_text: str, named: str
    ) -> None:
        if yaml_text:
            config = tmp_path / "streamwatch.yaml"
            config.write_text(yaml_text)
            args = [*args, "--config", str(config)]
        if "--upstream" not in args:
            args = ["--upstream", UPSTREAM, *args]
        proc = await run_cli("serve", "--listen", f"{LOOPBACK}:0", *args, env=env)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
        message = stderr.decode()
        assert proc.returncode == 2, message
        assert "configuration error" in message
        assert named in message
        assert "Traceback" not in message


class TestRoutes:
    """Two routes from a file: each prefix reaches its own upstream; metrics carry the route name."""

    async def test_prefixes_go_to_their_upstreams(self, tmp_path: Path) -> None:
        config = tmp_path / "routes.yaml"
        async with (
            scripted(chat_stream(["a"])) as alpha,
            scripted(chat_stream(["b", "b"])) as beta,
        ):
            config.write_text(
                "routes:\n"
                f"  - {{name: alpha, prefix: /alpha, upstream: '{alpha.url}'}}\n"
                f"  - {{name: beta, prefix: /beta, upstream: '{beta.url}/base'}}\n"
            )
            async with serve_process("--config", str(config)) as serving:
                statuses = []
                for path in ("/alpha/v1/chat/completions", "/beta/v1/chat/completions", "/x"):
                    request = request_bytes(path, {"model": "m", "stream": True})
                    got, _ = await raw_exchange(serving.proxy_port, request)
                    statuses.append(got.parsed[0])

                async def recorded() -> bool:
                    m = await scrape(serving.admin_port)
                    return m.value("streamwatch_streams_total") == 2

                await until(recorded, what="both streams recorded")
                m = await scrape(serving.admin_port)
        assert statuses == [200, 200, 404]  # no route matches /x
        assert [line for line, _ in alpha.requests] == ["POST /alpha/v1/chat/completions HTTP/1.1"]
        assert [line for line, _ in beta.requests] == [
            "POST /base/beta/v1/chat/completions HTTP/1.1"
        ]
        assert m.values("streamwatch_streams_total", "route") == {"alpha": 1.0, "beta": 1.0}
        assert m.values("streamwatch_output_events_total", "route") == {"alpha": 1.0, "beta": 2.0}


class TestPrecedence:
    """A flag beats the environment, which beats the file."""

    def test_three_layers_of_one_option(self, tmp_path: Path) -> None:
        config = tmp_path / "c.yaml"
        config.write_text("upstream: http://127.0.0.1:1\nstall_threshold: 5\n")
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        env = {"STREAMWATCH_STALL_THRESHOLD": "6"}
        with_flag = parser.parse_args(["--config", str(config), "--stall-threshold", "7"])
        without_flag = parser.parse_args(["--config", str(config)])
        assert load_settings(with_flag, env).stall_threshold == 7
        assert load_settings(without_flag, env).stall_threshold == 6
        assert load_settings(without_flag, {}).stall_threshold == 5

    async def test_real_process_binds_per_precedence(self, tmp_path: Path, busy_port: int) -> None:
        """File and env name a taken port for the proxy, the flag an ephemeral one: it starts.
        The file names a taken admin port, the env an ephemeral one: it starts."""
        busy = f"{LOOPBACK}:{busy_port}"
        config = tmp_path / "c.yaml"
        config.write_text(
            f"upstream: 'http://127.0.0.1:9'\nlisten: '{busy}'\nadmin_listen: '{busy}'\n"
        )
        env = {"STREAMWATCH_LISTEN": busy, "STREAMWATCH_ADMIN_LISTEN": f"{LOOPBACK}:0"}
        async with serve_process(
            "--config", str(config), "--listen", f"{LOOPBACK}:0", env=env, ephemeral=False
        ) as serving:
            assert busy_port not in (serving.proxy_port, serving.admin_port)
            assert 0 not in (serving.proxy_port, serving.admin_port)

    @pytest.mark.parametrize("option", ["--listen", "--admin-listen"])
    async def test_taken_port_fails_start(self, busy_port: int, option: str) -> None:
        """The control for the test above: a taken port stops start-up with status 1 (a start-up
        failure, not a configuration error), naming the option and the reason, without a
        traceback or a leaked upstream session."""
        ports = {"--listen": f"{LOOPBACK}:0", "--admin-listen": f"{LOOPBACK}:0"}
        ports[option] = f"{LOOPBACK}:{busy_port}"
        flags = [part for pair in ports.items() for part in pair]
        proc = await run_cli("serve", "--upstream", UPSTREAM, *flags)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
        message = stderr.decode()
        assert proc.returncode == 1, message
        assert f"cannot start: {option} (STREAMWATCH_" in message
        assert "configuration error" not in message
        assert message.rstrip().endswith("Address already in use")
        assert "Traceback" not in message
        assert "Unclosed" not in message
