"""The command line's rough edges, each through the real entry point: clear messages naming the
flag, the right exit status, the subcommand's own usage, and never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from streamwatch.healthcheck import probe_url

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "streamwatch"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by a listening socket for the test's duration."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


class TestUsage:
    """Argument errors show the subcommand's usage and the real reason."""

    @pytest.mark.parametrize("command", ["serve", "demo"])
    def test_unknown_flag_shows_the_subcommands_usage(self, command: str) -> None:
        """An unknown flag is reported by the subcommand, with its usage line."""
        result = run(command, "--no-such-flag")
        assert result.returncode == 2
        assert f"usage: streamwatch {command}" in result.stderr
        assert "unrecognized arguments: --no-such-flag" in result.stderr

    @pytest.mark.parametrize("value", ["-1", "0", "soon"])
    def test_demo_duration_must_be_positive(self, value: str) -> None:
        """``demo --duration`` refuses a negative, zero or non-numeric value, naming the flag."""
        result = run("demo", "--duration", value)
        assert result.returncode == 2
        assert "argument --duration:" in result.stderr

    def test_capture_content_help_says_it_takes_a_value(self) -> None:
        """``serve --help`` shows that --capture-content takes true or false."""
        result = run("serve", "--help")
        assert "--capture-content {true,false}" in result.stdout
        assert "Takes a value" in " ".join(result.stdout.split())


class TestSimulate:
    """``simulate`` reports bad flags and a taken port in words, not tracebacks."""

    def test_unknown_behaviour_in_mix(self) -> None:
        """``--mix bogus=1`` names the flag and the known behaviours, not a function."""
        result = run("simulate", "--mix", "bogus=1")
        assert result.returncode == 2
        assert "argument --mix: unknown behaviour 'bogus'" in result.stderr
        assert "parse_weights" not in result.stderr

    def test_taken_port(self, busy_port: int) -> None:
        """A taken port exits 1 naming the address and the reason."""
        result = run("simulate", "--port", str(busy_port))
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{busy_port}: Address already in use" in result.stderr
        assert "Traceback" not in result.stderr


class TestDemoOutput:
    """The demo's own flags and output."""

    def test_bind_error_names_only_the_demo_flag(self, busy_port: int) -> None:
        """The demo ignores STREAMWATCH_LISTEN, so its bind error names only --listen."""
        result = run("demo", "--listen", f"127.0.0.1:{busy_port}", "--admin-listen", "127.0.0.1:0")
        assert result.returncode == 1
        assert f"--listen: cannot listen on 127.0.0.1:{busy_port}" in result.stderr
        assert "STREAMWATCH_" not in result.stderr
        assert "Traceback" not in result.stderr

    def test_reader_closing_the_pipe(self) -> None:
        """``demo | head -1``: the demo stops quietly with status 0 when its reader goes away."""
        argv = [*CLI, "demo", "--duration", "30", "--listen", "127.0.0.1:0"]
        argv += ["--admin-listen", "127.0.0.1:0"]
        with subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None
            assert proc.stderr is not None
            assert proc.stdout.readline().startswith("simulated upstream:")
            proc.stdout.close()  # what head does after its lines
            code = proc.wait(timeout=30)
            stderr = proc.stderr.read()
        assert code == 0, stderr
        assert "Traceback" not in stderr
        assert "BrokenPipeError" not in stderr


class TestServeStartup:
    """``serve`` start-up failures: a taken port is not a configuration error."""

    def test_workers_on_a_taken_port(self, busy_port: int) -> None:
        """With --workers 2 a taken proxy port exits 1 naming --listen, without a traceback."""
        result = run(
            "serve", "--upstream", "http://127.0.0.1:9", "--workers", "2",
            "--listen", f"127.0.0.1:{busy_port}", "--admin-listen", "127.0.0.1:0",
        )  # fmt: skip
        assert result.returncode == 1
        assert "cannot start: --listen (STREAMWATCH_LISTEN)" in result.stderr
        assert "Traceback" not in result.stderr

    def test_unusable_metrics_dir(self) -> None:
        """With --workers 2 a metrics directory that cannot be created exits 2 naming it."""
        result = run(
            "serve", "--upstream", "http://127.0.0.1:9", "--workers", "2",
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--metrics-dir", "/nonexistent/streamwatch",
        )  # fmt: skip
        assert result.returncode == 2
        assert "configuration error: --metrics-dir (STREAMWATCH_METRICS_DIR)" in result.stderr
        assert "Traceback" not in result.stderr


class TestHealthcheckTarget:
    """``streamwatch healthcheck`` probes where the container's command really listens."""

    def test_serve_admin_from_flags_env_and_wildcard(self) -> None:
        """The admin address comes from the flag over the environment; 0.0.0.0 is probed on
        loopback."""
        env = {"STREAMWATCH_UPSTREAM": "http://gw:4000", "STREAMWATCH_ADMIN_LISTEN": "0.0.0.0:9999"}
        assert probe_url(["serve"], env) == "http://127.0.0.1:9999/healthz"
        command = ["serve", "--workers", "2", "--admin-listen", "0.0.0.0:9100"]
        assert probe_url(command, env) == "http://127.0.0.1:9100/healthz"

    def test_simulate_probes_the_simulator(self) -> None:
        """A ``simulate`` container is probed on its own port, not on an admin port it lacks."""
        command = ["simulate", "--host", "0.0.0.0", "--port", "9000"]
        assert probe_url(command, {}) == "http://127.0.0.1:9000/v1/models"
