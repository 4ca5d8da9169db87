"""Fail-open through a real ``streamwatch serve``: a fault in telemetry never ends a stream.

The fault here is a real one, not an injected exception: the process that reads streamwatch's log
pipe goes away, so every log write fails with EPIPE from then on (a crashed log shipper, a closed
terminal). The bytes must keep flowing, the kept-alive connection must serve its next request,
the other sinks must still see every stream, and SIGTERM must still drain and exit 0.
"""

from __future__ import annotations

import json
import os
import subprocess

from tests.reliability.harness.checks import LATE, assert_clean_end
from tests.reliability.harness.client import RawClient, Response, chat_request
from tests.reliability.harness.proxy import ProxyProcess
from tests.reliability.harness.upstream import FakeUpstream, sse_scenario

EVENTS = [b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n', b"data: [DONE]\n\n"]


def _serve_then_break_its_log(upstream: FakeUpstream) -> ProxyProcess:
    """``streamwatch serve`` whose stderr pipe is closed by its reader once it has started."""
    process = ProxyProcess(upstream.url)
    process.proc = proc = subprocess.Popen(
        process.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("STREAMWATCH_")},
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # ends (and fails below) if the process exits instead
        event = json.loads(line)
        if event.get("event") == "streamwatch.started":
            process.port = int(event["listen"].rpartition(":")[2])
            process.admin_port = int(event["admin"].rpartition(":")[2])
            break
    proc.stderr.close()  # the reader is gone: every later log write gets EPIPE
    assert process.port, "streamwatch did not start"
    return process


class TestLogPipeBroken:
    """Every log write failing (EPIPE) ends no stream and stops no other sink."""

    def test_streams_keep_flowing(self, upstream: FakeUpstream) -> None:
        """Two streams on one kept-alive connection after the log pipe broke: byte-exact, clean
        ends, both counted in /metrics; SIGTERM still exits 0."""
        process = _serve_then_break_its_log(upstream)
        try:
            key = upstream.add(sse_scenario(EVENTS))
            client = RawClient(process.port, timeout=LATE)
            try:
                for _ in range(2):  # the second needs the first's end to have run in full
                    client.expect()
                    client.send(chat_request(key))
                    response = client.read(deadline=LATE)
                    assert_clean_end(response)
                    assert bytes(response.body) == b"".join(EVENTS)
                    client._parser.start_next_cycle()
                    client.response = Response()
            finally:
                client.close()
            assert process.total("streamwatch_streams_total", outcome="completed") == 2
        finally:
            code = process.stop(timeout=LATE)
        assert code == 0
