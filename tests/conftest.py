"""Shared test configuration: where the shared corpus lives, and the hypothesis profiles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

REPO_ROOT = Path(__file__).resolve().parent.parent

# `suite` (the default: the README's test command and CI's default step) takes Hypothesis's own
# default of 100 examples per property, which keeps the whole run within its budget on two cores;
# tests that need more say so with their own @settings. It is derandomized: every run tries the
# same examples, so the command a newcomer runs passes or fails the same way every time (a random
# search once found a real gap there in run 4 of a loop, and the example database then replayed it
# only on that machine). Searching is the job of `HYPOTHESIS_PROFILE=nightly` and of `fuzz`, which
# bounds the `-m fuzz_long` step of .ci/run (about 10 s on a quiet two-core box); both are random.
settings.register_profile("suite", max_examples=100, deadline=None, derandomize=True)
settings.register_profile("nightly", max_examples=5000, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


def missing(reason: str) -> None:
    """Skip for want of an external tool or data, except in CI, where it must be there.

    ``.ci/run`` sets ``STREAMWATCH_REQUIRE_TOOLS=1`` so that nothing is silently skipped there.
    """
    if os.environ.get("STREAMWATCH_REQUIRE_TOOLS") == "1":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def find_corpus() -> Path:
    """The corpus directory: ``$STREAMWATCH_CORPUS``, else ``../shared/corpus`` from the repo root."""
    configured = os.environ.get("STREAMWATCH_CORPUS")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "corpus"


def corpus_or_skip() -> Path:
    """The corpus directory, or skip the calling test with the reason and the way to fix it."""
    path = find_corpus()
    if not (path / "sse-spec" / "cases.json").is_file():
        missing(f"corpus not found at {path}; set STREAMWATCH_CORPUS")
    return path


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared corpus directory (the test is skipped with a reason when it is absent)."""
    return corpus_or_skip()
