"""A cheap exposition of the registry, rendered a few milliseconds at a time on the event loop.

Why not ``generate_latest`` in a worker thread: at saturation (about 4,700 series) it spends 90 ms
(text) to 165 ms (OpenMetrics) of CPU rebuilding every sample's label string (sort, escape, format)
on every scrape, and in a thread that CPU still holds the GIL: each time the relaying loop drops the
GIL for a ``recv`` or ``send`` it waits up to the switch interval (5 ms) to get it back, which added
60-90 ms to a 10 ms-cadence stream's p99 gap during scrapes.

Here each label child's sample-line prefixes (name, sorted and escaped labels) are built once and
cached, so a scrape only formats values; and the render is a generator of one part per child that
:func:`render` drives on the loop, yielding to it whenever a slice of ``slice_s`` has run, so a
stream waits for at most one slice. Rendering on the loop also reads every value on the thread that
writes them: a histogram's buckets, count and sum are always of the same observations.

Only prometheus-client's own Counter, Gauge and Histogram, in the text format or OpenMetrics 1.0
with names that need no escaping, take the fast path; anything else (the process collector,
``--workers``' multiprocess collector, another format or escaping) is rendered by prometheus-client
itself, in a worker thread as before. The output is byte-identical to prometheus-client's
(``tests/export/test_exposition.py`` compares them on a saturated registry).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import metrics as _metrics
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

#: How long the render runs before it lets the loop relay again: one slice is the most a stream's
#: gap can grow by a scrape (the cost of a scrape is spread over as many slices as it needs).
SLICE_S = 0.002

#: Escapings that leave every legacy-valid name as it is (``dots`` and ``values`` rewrite them).
_NAME_PRESERVING = frozenset({openmetrics.UNDERSCORES, openmetrics.ALLOWUTF8})
_FAST_TYPES = (Counter, Gauge, Histogram)


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Family:
    """The cached sample-line prefixes of one prometheus-client metric, per label child."""

    __slots__ = ("_prefixes", "_read", "metric")

    def __init__(self, metric: MetricWrapperBase) -> None:
        self.metric = metric
        self._prefixes: dict[tuple[str, ...], tuple[str, ...]] = {}
        # A child's values in ``_child_samples()`` order, read without building a ``Sample`` per
        # value where the type's layout is known.
        self._read: Callable[[Any, bool], Values] = (
            _histogram_values
            if isinstance(metric, Histogram)
            else _counter_values
            if isinstance(metric, Counter)
            else _sample_values
        )

    def header(self, om: bool) -> str:
        (described,) = self.metric.describe()
        name, kind, doc = described.name, described.type, described.documentation
        if om:
            unit = f"# UNIT {name} {described.unit}\n" if described.unit else ""
            return f"# HELP {name} {_label_value(doc)}\n# TYPE {name} {kind}\n{unit}"
        if kind == "counter":
            name += "_total"
        doc = doc.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"

    def children(self) -> list[tuple[tuple[str, ...], Any]]:
        metric: Any = self.metric
        if not metric._is_parent():
            return [((), metric)]
        with metric._lock:
            return list(metric._metrics.items())

    def _prefixes_of(self, labelvalues: tuple[str, ...], child: Any, count: int) -> tuple[str, ...]:
        found = self._prefixes.get(labelvalues)
        if found is None or len(found) != count:
            metric: Any = self.metric
            base = dict(zip(metric._labelnames, labelvalues, strict=True))
            prefixes = []
            for sample in child._child_samples():
                labels = sorted({**base, **sample.labels}.items())
                text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels)
                name = metric._name + sample.name
                prefixes.append(f"{name}{{{text}}} " if text else f"{name} ")
            found = self._prefixes[labelvalues] = tuple(prefixes)
        return found

    def lines(self, labelvalues: tuple[str, ...], child: Any, om: bool) -> str:
        """One child's sample lines (with exemplars in OpenMetrics)."""
        values, exemplars = self._read(child, om)
        prefixes = self._prefixes_of(labelvalues, child, len(values))
        if exemplars:
            return "".join(
                f"{p}{_go(v)}{_exemplar(e)}\n"
                for p, v, e in zip(prefixes, values, exemplars, strict=True)
            )
        return "".join(f"{p}{_go(v)}\n" for p, v in zip(prefixes, values, strict=True))


Values = tuple[list[float], list[Exemplar | None]]


def _sample_values(child: Any, om: bool) -> Values:
    samples = child._child_samples()
    return [s.value for s in samples], [s.exemplar for s in samples] if om else []


def _counter_values(child: Any, om: bool) -> Values:
    value = child._value
    return [value.get()], [value.get_exemplar()] if om else []


def _histogram_values(child: Any, om: bool) -> Values:
    values, total = [], 0.0
    for bucket in child._buckets:  # cumulative, as prometheus-client's _child_samples
        total += bucket.get()
        values.append(total)
    values.append(total)  # _count
    if child._upper_bounds[0] >= 0:
        values.append(child._sum.get())
    if not om:
        return values, []
    exemplars = [bucket.get_exemplar() for bucket in child._buckets]
    return values, [*exemplars, *[None] * (len(values) - len(exemplars))]


#: Rendered values, memoised: counts and bucket totals repeat across thousands of series.
_GO_CACHE: dict[float, str] = {}
_GO_CACHE_MAX = 8192


def _go(value: float) -> str:
    """``floatToGoString``, memoised (``-0.0`` may come out as ``0.0``, the same number)."""
    found = _GO_CACHE.get(value)
    if found is None:
        if len(_GO_CACHE) >= _GO_CACHE_MAX:
            _GO_CACHE.clear()
        found = _GO_CACHE[value] = floatToGoString(value)  # type: ignore[no-untyped-call]
    return found


def _exemplar(exemplar: Exemplar | None) -> str:
    if exemplar is None:
        return ""
    labels = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(exemplar.labels.items()))
    ts = "" if exemplar.timestamp is None else f" {exemplar.timestamp}"
    return f" # {{{labels}}} {_go(exemplar.value)}{ts}"


class _Library:
    """One collector rendered by prometheus-client's own encoder (without OpenMetrics' ``# EOF``)."""

    __slots__ = ("collector",)

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def collect(self) -> Any:
        return self.collector.collect()


Part = str | _Library


class Exposition:
    """The registry's exposition, with the line prefixes of its metrics cached across scrapes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._families: dict[Collector, _Family] = {}

    @staticmethod
    def fast(content_type: str) -> bool:
        """Whether a format :func:`choose_encoder` picked is one this renders itself (and
        ``*_created`` samples are off, as ``serve`` runs: the text format moves them to families
        of their own)."""
        if _metrics._use_created:
            return False
        params = dict(
            p.strip().partition("=")[::2] for p in content_type.split(";")[1:] if "=" in p
        )
        if params.get("escaping", openmetrics.UNDERSCORES) not in _NAME_PRESERVING:
            return False
        if content_type.startswith("application/openmetrics-text"):
            return params.get("version") == "1.0.0"
        return content_type.startswith("text/plain")

    def parts(self, om: bool) -> Iterator[Part]:
        """The exposition in registration order: a header, then one string per label child; a
        collector this does not render itself is a :class:`_Library` part."""
        with self.registry._lock:
            collectors = list(self.registry._collector_to_names)
        for collector in collectors:
            if not isinstance(collector, _FAST_TYPES):
                yield _Library(collector)
                continue
            family = self._families.get(collector)
            if family is None:
                family = self._families[collector] = _Family(collector)
            yield family.header(om)
            for labelvalues, child in family.children():
                yield family.lines(labelvalues, child, om)
        if om:
            yield "# EOF\n"


async def render(exposition: Exposition, content_type: str, slice_s: float = SLICE_S) -> bytes:
    """The exposition in ``content_type`` (a fast one, see :meth:`Exposition.fast`), rendered on
    the loop in slices of ``slice_s``; library-rendered collectors run in a worker thread."""
    om = content_type.startswith("application/openmetrics-text")
    library = openmetrics.generate_latest if om else generate_latest
    out: list[str] = []
    deadline = time.perf_counter() + slice_s
    for part in exposition.parts(om):
        if isinstance(part, _Library):
            text = (await asyncio.to_thread(library, part)).decode()
            out.append(text.removesuffix("# EOF\n") if om else text)
        else:
            out.append(part)
        if time.perf_counter() >= deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + slice_s
    return "".join(out).encode()
