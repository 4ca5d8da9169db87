"""The benchmarks' counters read callgrind's and strace's output as those tools print it."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO_ROOT

# ``strace -c -f -o FILE true`` (strace 6.1)
STRACE_SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 61.54    0.000016           2         8           mmap
 38.46    0.000010           5         2           pread64
  0.00    0.000000           0         1           read
  0.00    0.000000           0         1         1 access
------ ----------- ----------- --------- --------- ----------------
100.00    0.000026           2        12         1 total
"""

# The head and tail of a dump written by ``callgrind_control --dump PID`` (valgrind 3.19).
CALLGRIND_DUMP = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 19939
cmd:  /usr/bin/python3.11 loop.py 30
part: 1

desc: Timerange: Basic block 0 - 48571632
desc: Trigger: dump one

positions: line
events: Ir
summary: 78215081

fl=(1) ???
fn=(1) 0x0000000000001100
0 3
totals: 79579227
"""


@pytest.fixture
def benchmarks(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    """The benchmark modules, imported as the scripts import each other (from their directory)."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    import callgrind
    import count_proxies
    import run

    return {"callgrind": callgrind, "count_proxies": count_proxies, "run": run}


class TestCallgrind:
    """Instruction totals come from the run's log line or a dump's ``totals:``, never guessed."""

    def test_total_of_a_finished_run(self, benchmarks: dict[str, ModuleType]) -> None:
        log = (
            "==1== Events    : Ir\n==1== Collected : 2374248698\n==1==\n==1== I   refs:      2,374"
        )
        assert benchmarks["callgrind"].collected(log) == 2374248698

    def test_a_log_without_a_total_is_an_error(self, benchmarks: dict[str, ModuleType]) -> None:
        with pytest.raises(RuntimeError, match="no total"):
            benchmarks["callgrind"].collected("==1== Callgrind, a call-graph generating ...")

    def test_dump_totals_and_a_dump_still_being_written(
        self, benchmarks: dict[str, ModuleType]
    ) -> None:
        totals = benchmarks["callgrind"].totals
        assert totals(CALLGRIND_DUMP) == 79579227
        assert totals(CALLGRIND_DUMP.partition("totals:")[0]) is None

    def test_control_refuses_to_run_without_a_process_id(
        self, benchmarks: dict[str, ModuleType], tmp_path: Path
    ) -> None:
        # callgrind_control given no pid dumps and zeroes every callgrind run on the machine
        with pytest.raises(ValueError, match="not a process id"):
            benchmarks["callgrind"].Control(0, tmp_path)


class TestStrace:
    """Calls per syscall and their total come from ``strace -c``'s table, errors column or not."""

    def test_calls_per_syscall_and_total(self, benchmarks: dict[str, ModuleType]) -> None:
        counts = benchmarks["count_proxies"].strace_counts(STRACE_SUMMARY)
        assert counts == {"mmap": 8, "pread64": 2, "read": 1, "access": 1, "total": 12}

    def test_output_without_a_total_is_an_error(self, benchmarks: dict[str, ModuleType]) -> None:
        with pytest.raises(RuntimeError, match="no total"):
            benchmarks["count_proxies"].strace_counts(
                "strace: attach: ptrace(...): Operation not permitted\n"
            )


class TestRatios:
    """Every streamwatch target measured in a run gets its ratios to every reference in it."""

    @staticmethod
    def _run(benchmarks: dict[str, ModuleType], cpu_us: float, added_ms: float) -> object:
        run = benchmarks["run"].Run()
        run.latencies_ns = [round(added_ms * 1e6)] * 10
        run.chunks = 1000
        run.cpu_s = cpu_us * 1000 / 1e6
        return run

    def test_a_row_per_streamwatch_target_and_reference(
        self, benchmarks: dict[str, ModuleType]
    ) -> None:
        runs = {
            "direct": self._run(benchmarks, 0, 1),
            "streamwatch-compiled": self._run(benchmarks, 60, 3),
            "streamwatch": self._run(benchmarks, 80, 5),
            "nginx": self._run(benchmarks, 30, 2),
        }
        assert benchmarks["run"].ratios(runs)[2:] == [
            "| streamwatch-compiled / nginx | 2.00x | 2.00x | 2.00x |",
            "| streamwatch / nginx | 2.67x | 4.00x | 4.00x |",
        ]

    def test_none_without_a_direct_run(self, benchmarks: dict[str, ModuleType]) -> None:
        runs = {"streamwatch": self._run(benchmarks, 80, 5), "nginx": self._run(benchmarks, 30, 2)}
        assert benchmarks["run"].ratios(runs) == []
