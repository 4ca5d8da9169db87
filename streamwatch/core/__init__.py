"""The sans-IO measuring core.

Nothing in this package performs I/O, reads a clock, logs, or imports aiohttp,
prometheus_client, OpenTelemetry or structlog: it is fed bytes with monotonic
timestamps (nanoseconds) and returns frozen events and a per-stream record. The
rule is enforced by the import-linter contract in ``pyproject.toml`` and by
``tests/core/test_purity.py``.
"""
