"""Long-running fuzz target for the SSE decoder (atheris when installed, else a hypothesis profile).

Property: for any bytes and any split into reads, the decoder never raises and yields exactly the
events of the same bytes fed in one piece. Run outside CI:

    .venv/bin/python -m tests.reliability.fuzz_sse -atheris_runs=1000000      # atheris (pip install atheris)
    HYPOTHESIS_PROFILE=fuzz .venv/bin/pytest -m fuzz_long tests/reliability  # no atheris

A crashing input goes into tests/fixtures/fuzz/ as ``NAME.bin`` and is replayed by test_properties.py.
"""

from __future__ import annotations

import sys

from streamwatch.core.sse import SSEDecoder


def split_equivalence(data: bytes) -> None:
    """The first byte seeds the cut points; the rest is the stream."""
    if not data:
        return
    seed, raw = data[0], data[1:]
    whole = SSEDecoder()
    expected = whole.feed(raw) + whole.close()
    pieces = SSEDecoder()
    got = []
    step = (seed % 13) + 1
    for i in range(0, len(raw), step):
        got += pieces.feed(raw[i : i + step])
    got += pieces.close()
    if got != expected:
        raise AssertionError(f"split {step} changed the events of {raw!r}")


def main() -> None:
    import atheris

    atheris.instrument_all()  # coverage feedback for the already-imported decoder
    atheris.Setup(sys.argv, lambda data: split_equivalence(bytes(data)))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
