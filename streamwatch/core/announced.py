"""Durations upstreams announce in their response headers, read without trusting them.

A gateway or a provider's edge often says how long it took: Envoy's
``x-envoy-upstream-service-time``, OpenAI's ``openai-processing-ms``, LiteLLM's
``x-litellm-overhead-duration-ms`` and friends. Each known header maps to a fixed name (the
bounded ``timing`` label); any other header is ignored. A value is believed only if it is a plain
non-negative decimal number of milliseconds (no sign, exponent, ``inf`` or ``nan``), at most
:data:`MAX_VALUE_BYTES` long and at most a day; otherwise it is dropped, never an error. Only the
first occurrence of a header counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from streamwatch.core.record import MAX_REPORTED_NS

#: Header (lower case) -> timing name, each in milliseconds. LiteLLM 1.108.7 writes its three in
#: ``proxy/common_request_processing.py`` (``get_custom_headers``): the response duration (its
#: call to the provider: for a stream, until the provider's response began), its own overhead,
#: and the time its logging callbacks took.
HEADER_TIMINGS: Final[Mapping[bytes, str]] = {
    b"x-envoy-upstream-service-time": "envoy_upstream_service",
    b"openai-processing-ms": "openai_processing",
    b"x-litellm-response-duration-ms": "litellm_response",
    b"x-litellm-overhead-duration-ms": "litellm_overhead",
    b"x-litellm-callback-duration-ms": "litellm_callback",
}
MAX_VALUE_BYTES: Final = 24  # "86400000.123456789" fits; anything longer is not a duration
_MILLISECONDS = re.compile(rb"[0-9]+(?:\.[0-9]+)?")
_NS_PER_MS = 1_000_000


def header_timings(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, int], ...]:
    """The announced durations among ``headers`` (raw name/value pairs), in ns, by timing name."""
    found: dict[str, int] = {}
    for name, value in headers:
        timing = HEADER_TIMINGS.get(name.lower())
        if timing is None or timing in found:
            continue
        found[timing] = -1  # the first occurrence decides, valid or not
        text = value.strip()
        if len(text) <= MAX_VALUE_BYTES and _MILLISECONDS.fullmatch(text):
            ns = round(float(text) * _NS_PER_MS)
            if ns <= MAX_REPORTED_NS:
                found[timing] = ns
    return tuple((name, ns) for name, ns in found.items() if ns >= 0)
