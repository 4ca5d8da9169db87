"""Run a Python program with its cyclic-GC pauses recorded (``run.py --gc``).

    python gc_pauses.py OUT.json -m streamwatch serve ...
    python gc_pauses.py OUT.json bare_proxy.py --upstream ...

Every SIGUSR2 writes the pauses since the previous one to OUT.json (``{"seq": n, "pauses":
[[generation, ns], ...]}``, replaced atomically; ``seq`` counts the signals) and starts a new
window, so the runner can bracket its steady window.
SIGUSR2 because streamwatch already answers SIGUSR1 (logged and ignored).
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import signal
import sys
import time
from pathlib import Path
from types import FrameType

_OUT = sys.argv[1]
_pauses: list[tuple[int, int]] = []
_started = 0
_seq = 0


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _started  # noqa: PLW0603 - one callback pair, one process: a module global is enough
    if phase == "start":
        _started = time.perf_counter_ns()
    else:
        _pauses.append((info["generation"], time.perf_counter_ns() - _started))


def _dump(_signum: int, _frame: FrameType | None) -> None:
    global _seq  # noqa: PLW0603
    _seq += 1
    window = _pauses[:]
    _pauses.clear()
    Path(_OUT + ".tmp").write_text(json.dumps({"seq": _seq, "pauses": window}))
    os.replace(_OUT + ".tmp", _OUT)


def main() -> None:
    gc.callbacks.append(_on_gc)
    signal.signal(signal.SIGUSR2, _dump)
    rest = sys.argv[2:]
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
