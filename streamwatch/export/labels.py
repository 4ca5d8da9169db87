"""Bounded label values: every string from a client or upstream passes here before it is a label.

Shared by every metrics exporter, so a model name or finish reason is the same label value in
Prometheus and in OTLP. The value sets themselves are in :mod:`streamwatch.metricspec`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final

from streamwatch.metricspec import ERROR_TYPES, FINISH_REASONS_BY_API, OTHER, UNKNOWN_MODEL

MAX_LABEL_LEN: Final = 64

_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@+\-]")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def sanitize_label(value: str) -> str:
    """Keep a label value printable and short: unusual characters become ``_``, at most 64 chars."""
    return _UNSAFE.sub("_", value[:MAX_LABEL_LEN])


def normalise_finish_reason(value: str, api: str) -> str:
    """A finish reason from ``api``'s vocabulary (case-insensitive), else ``other``.

    Responses streams report ``incomplete:<reason>``: the reason itself is the useful label
    (``max_output_tokens``, ``content_filter``), else ``incomplete``.
    """
    known = FINISH_REASONS_BY_API.get(api, frozenset())
    lowered = value.strip().lower()
    status, _, reason = lowered.partition(":")
    if reason:
        return reason if reason in known else status if status in known else OTHER
    return lowered if lowered in known else OTHER


def normalise_error_type(value: str) -> str:
    """A provider error type from the bounded set, else ``other``; image errors become one value.

    camelCase (Bedrock's ``throttlingException``) becomes snake_case, like every other value.
    """
    lowered = _CAMEL.sub("_", value.strip()).lower()
    if lowered in ERROR_TYPES:
        return lowered
    if "image" in lowered and len(lowered) <= MAX_LABEL_LEN:
        return "image_error"
    return OTHER


class ModelLabels:
    """Maps model names to a bounded ``model`` label.

    With an allowlist, only listed models keep their (sanitised) name. Without one, the first
    ``max_models`` distinct sanitised values seen keep theirs. Everything else is ``other``; a
    missing model is ``unknown``. Memory is bounded: at most ``max_models`` names are remembered,
    and a small cache of raw inputs is cleared when it fills.
    """

    _CACHE_CAP: Final = 1024

    def __init__(self, allowlist: Collection[str] = (), max_models: int = 50) -> None:
        if max_models < 0:
            raise ValueError("max_models must be >= 0")
        self._fixed = bool(allowlist)
        self._admitted: set[str] = {sanitize_label(m) for m in allowlist}
        self._max = max_models
        self._cache: dict[str, str] = {}

    @property
    def known(self) -> frozenset[str]:
        """The model names that currently keep their own label value."""
        return frozenset(self._admitted)

    def admits(self, model: str | None) -> bool:
        """Whether ``model`` already keeps its own label value (without claiming a slot)."""
        return bool(model) and self(model, claim=False) != OTHER

    def __call__(self, model: str | None, *, claim: bool = True) -> str:
        """The label value for ``model``; a name not yet known takes a free slot only if ``claim``.

        Only responses that succeeded claim (issue 11): requests with invented model names that
        the upstream rejects must not fill ``--max-models`` and leave real models ``other``.
        """
        if not model:
            return UNKNOWN_MODEL
        label = self._cache.get(model)
        if label is not None:
            return label
        clean = sanitize_label(model)
        if clean in self._admitted:
            label = clean
        elif not claim:
            return OTHER  # not cached: a later successful response may still claim it
        elif not self._fixed and len(self._admitted) < self._max:
            self._admitted.add(clean)
            label = clean
        else:
            label = OTHER
        if len(self._cache) >= self._CACHE_CAP:
            self._cache.clear()
        self._cache[model] = label
        return label
