"""The sans-IO measuring core.

Nothing in this package performs I/O, reads a clock, logs, or imports aiohttp,
prometheus_client, OpenTelemetry or structlog: it is fed bytes with monotonic
timestamps (nanoseconds) and returns frozen events and a per-stream record. The
rule is enforced by the import-linter contract in ``pyproject.toml`` and by
``tests/core/test_purity.py``.
"""


def compiled() -> bool:
    """Whether the core runs as the C extensions ``setup.py`` builds with mypyc, not its source."""
    from streamwatch.core import analyzer  # noqa: PLC0415 (the package imports nothing eagerly)

    return not analyzer.__file__.endswith(".py")
