"""The capture writer's promises that a healthy disk cannot show through ``serve``: a stalled writer
never blocks the byte path or grows memory past its backlog cap."""

from __future__ import annotations

import threading
from pathlib import Path

from streamwatch.core.api import Api
from streamwatch.core.capture import CaptureHeader
from streamwatch.core.record import CloseCause, unanalyzed_record
from streamwatch.metricspec import CAPTURE_BACKLOG
from streamwatch.proxy.recorder import MAX_BACKLOG_BYTES, Recorder, RecorderLimits, safe_name_part

HEADER = CaptureHeader("POST", "/v1/chat/completions", 200, "text/event-stream")


class TestStalledWriter:
    """While the writer thread is stuck, reads beyond the backlog cap abandon the capture at once."""

    def test_backlog_cap(self, tmp_path: Path) -> None:
        stuck, counted = threading.Event(), []
        release = threading.Event()

        def count(result: str) -> None:  # the writer thread calls this: it stays here until set
            counted.append(result)
            stuck.set()
            assert release.wait(30)

        recorder = Recorder(tmp_path, RecorderLimits(1 << 30, 1 << 30), keep_all=False, count=count)
        try:
            first = recorder.open(HEADER, 0, "first")
            record = unanalyzed_record(
                api=Api.OPENAI_CHAT, request_model=None, t_request_ns=0, t_end_ns=1,
                cause=CloseCause.UPSTREAM_EOF, body_bytes=0,
            )  # fmt: skip
            first.close(record)  # a failed analysis is kept: the writer counts it, and sticks
            assert stuck.wait(30), "the writer never reached the stalling counter"
            second = recorder.open(HEADER, 0, "second")
            chunk = b"x" * (64 << 10)
            fed = 0
            while not second.ended:
                second.feed(chunk, fed)
                fed += 1
                assert fed * len(chunk) <= MAX_BACKLOG_BYTES + len(chunk)
            assert recorder.backlog_bytes <= MAX_BACKLOG_BYTES
        finally:
            release.set()
            recorder.close()
        assert counted[-1] == CAPTURE_BACKLOG
        assert recorder.backlog_bytes == 0
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")]


class TestSafeNames:
    """Client-supplied request ids become file-name parts of letters, digits, ``_`` and ``-``."""

    def test_sanitised(self) -> None:
        assert safe_name_part("../../etc/passwd") == "etc_passwd"
        assert safe_name_part("a\x00b\nc") == "a_b_c"
        assert safe_name_part("ünï.cödé") == "n_c_d"
        assert safe_name_part("x" * 500) == "x" * 48
        assert safe_name_part("...") == ""
