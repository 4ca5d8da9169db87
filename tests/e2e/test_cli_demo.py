"""``streamwatch demo`` and ``streamwatch simulate`` through the real entry point."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

DEMO = [
    sys.executable,
    "-m",
    "streamwatch",
    "demo",
    "--duration",
    "4",
    "--concurrency",
    "8",
    "--seed",
    "1",
    "--listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
]


def _streams_total(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:  # noqa: S310 (loopback URL)
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "streamwatch_streams_total"
    )


class TestDemo:
    """The demo drives mixed traffic through the proxy, shows it live, and exits cleanly."""

    def test_traffic_moves_the_metrics_and_the_summary(self) -> None:
        """While it runs /metrics counts streams; it prints a live line a second and exits 0."""
        with subprocess.Popen(
            DEMO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None
            header = [proc.stdout.readline() for _ in range(5)]
            match = re.search(r"metrics:\s+(http://\S+/metrics)", "".join(header))
            assert match, header
            deadline = time.monotonic() + 10
            seen = 0.0
            while time.monotonic() < deadline and seen == 0:
                seen = _streams_total(match.group(1))
                time.sleep(0.2)
            assert seen > 0, "no stream counted while the demo ran"
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        lines = out.strip().splitlines()
        assert len([line for line in lines if line.startswith("[")]) >= 3
        final = lines[-1]
        assert final.startswith("final: ")
        counted = re.search(r"streams: (\d+)", final)
        assert counted, final
        assert int(counted.group(1)) >= 10
        assert "completed=" in final
        # Issue 11: the demo ends its own load cleanly, so its summary counts no client abort
        # beyond the hang-ups it planned (its clients were cancelled mid-stream before).
        aborts = re.search(r"client_abort=(\d+)", final)
        planned = re.search(r"hung up on purpose (\d+)", final)
        assert planned, final
        assert int(aborts.group(1) if aborts else 0) <= int(planned.group(1)), final
        assert re.search(r"open 0 ", final), final

    def test_a_bad_listen_address_names_the_option(self) -> None:
        """An unusable --listen value stops the demo with exit 2 and the option's name."""
        argv = [*DEMO[:-4], "--listen", "nowhere", "--admin-listen", "127.0.0.1:0"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 2
        assert "--listen" in result.stderr


class TestSimulateCommand:
    """``streamwatch simulate`` runs the simulated upstream alone until SIGTERM."""

    def test_serves_until_sigterm(self) -> None:
        """It prints its URL, answers /v1/models, and exits 0 on SIGTERM."""
        argv = [sys.executable, "-m", "streamwatch", "simulate", "--port", "0"]
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
            assert url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(url + "/v1/models", timeout=5) as response:  # noqa: S310
                assert response.status == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
