"""The core a process runs: its Python source by default, the C extensions ``setup.py`` builds
with mypyc where they are built (``.ci/run`` builds them in a copy of the tree and runs the core's
tests and the end-to-end tests there, with ``STREAMWATCH_EXPECT_COMPILED=1``)."""

from __future__ import annotations

import os

import pytest

from streamwatch.core import analyzer, compiled, sse
from streamwatch.core.protocols import openai_chat
from tests.harness import CHAT, raw_exchange, request_bytes, serve_process, simulator

EXPECT_COMPILED = os.environ.get("STREAMWATCH_EXPECT_COMPILED") == "1"


class TestCoreBuild:
    """serve names the core it runs on its started line, and a compiled run really is one."""

    async def test_the_started_line_names_the_core_and_a_stream_is_measured(self) -> None:
        """A ``serve`` started from this tree runs the core this test imports and says which;
        a stream through it is measured (its log line counts its output events)."""
        async with simulator() as sim, serve_process("--upstream", sim) as serving:
            payload = {"model": "m", "stream": True}
            got, _ = await raw_exchange(serving.proxy_port, request_bytes(CHAT, payload))
            assert got.status == 200
            await serving.terminate()
        [started] = serving.events("streamwatch.started")
        assert started["core"] == ("compiled" if compiled() else "python")
        [line] = serving.events("stream.completed")
        assert line["output_events"] >= 1

    @pytest.mark.skipif(not EXPECT_COMPILED, reason="STREAMWATCH_EXPECT_COMPILED=1: CI's run")
    def test_the_compiled_run_imports_extensions(self) -> None:
        """Where CI built the core, every compiled module is an extension, not its source."""
        assert compiled()
        assert [m.__file__.endswith(".so") for m in (analyzer, sse, openai_chat)] == [True] * 3
