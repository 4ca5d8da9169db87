"""Instruction counts from callgrind, shared by the benchmarks that count instead of timing.

Wall and CPU time on a shared box swing by tens of percent between runs; the instructions a
program executes under ``valgrind --tool=callgrind`` do not. Two ways to read them:

* a finished run: ``Collected : N`` in valgrind's log (``collected``);
* a running one (a server counted per workload): ``Control.dump()`` asks callgrind for a dump
  through ``callgrind_control`` and returns its ``totals:`` line, the instructions since the
  previous dump. A dump sums every thread (``--separate-threads`` is off).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

_COLLECTED = re.compile(r"Collected : (\d+)")
_TOTALS = re.compile(r"^totals: (\d+)", re.MULTILINE)


def command(out: Path, log: Path | None = None, *, instrumented: bool = True) -> list[str]:
    """The ``valgrind --tool=callgrind`` prefix writing its profile (and dumps) to ``out``.

    ``instrumented=False`` starts without instrumentation (several times faster: a Python
    server's imports take minutes instrumented here) until ``Control.instrument()``.
    """
    return [
        shutil.which("valgrind") or "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        *([f"--log-file={log}"] if log is not None else []),
        *([] if instrumented else ["--instr-atstart=no"]),
    ]


def run_in(directory: Path) -> list[str]:
    """``command`` with the profile and valgrind's log in ``directory`` (see ``collected_in``)."""
    return command(directory / "callgrind.out", directory / "callgrind.log")


def collected_in(directory: Path) -> int:
    """The total of the finished run of ``run_in(directory)``."""
    return collected((directory / "callgrind.log").read_text())


def collected(log: str) -> int:
    """The instructions a finished callgrind run counted (its ``Collected :`` line)."""
    found = _COLLECTED.search(log)
    if found is None:
        raise RuntimeError(f"callgrind printed no total:\n{log}")
    return int(found.group(1))


def totals(profile: str) -> int | None:
    """The ``totals:`` of a callgrind profile or dump; None while it is not written yet."""
    found = _TOTALS.search(profile)
    return None if found is None else int(found.group(1))


class Control:
    """Dumps of one running callgrind process: each returns the instructions since the last."""

    def __init__(self, pid: int, out: Path) -> None:
        if pid <= 0:  # callgrind_control with no pid acts on every callgrind run on the machine
            raise ValueError(f"not a process id: {pid}")
        self.pid = pid
        self.out = out
        self.dumps = 0

    def _control(self, option: str, timeout_s: float) -> None:
        subprocess.run(
            [shutil.which("callgrind_control") or "callgrind_control", option, str(self.pid)],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )

    def instrument(self, timeout_s: float = 120.0) -> None:
        """Switch instrumentation on (a process started with ``instrumented=False``)."""
        self._control("--instr=on", timeout_s)

    def dump(self, timeout_s: float = 120.0) -> int:
        """Dump (callgrind zeroes its counters after) and return the dump's total."""
        self._control("--dump", timeout_s)
        self.dumps += 1
        path = Path(f"{self.out}.{self.dumps}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if path.exists() and (count := totals(path.read_text("utf-8", "replace"))) is not None:
                return count
            time.sleep(0.1)
        raise RuntimeError(f"callgrind wrote no dump {path}")
