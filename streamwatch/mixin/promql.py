"""PromQL built from the metric spec: selectors and aggregations that only name real labels."""

from __future__ import annotations

from collections.abc import Sequence

from streamwatch import metricspec as spec

#: Grafana's rate window; dashboards use it, rules use fixed windows.
RATE_INTERVAL = "$__rate_interval"
#: The dashboards' template variables that are also labels, in selector order.
VARIABLE_LABELS = (spec.ROUTE, spec.SIDE, spec.API, spec.MODEL)


class UnknownLabelError(ValueError):
    """A query named a label the family does not carry, or a value outside the label's set."""


#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = ("job", "instance")
#: ``streamwatch probe`` adds ``source="probe"`` to every per-stream series it serves. A proxy's
#: series have no such label (``source!="probe"`` matches them all, ``delivered_output_tokens``'
#: ``reported``/``estimated`` included), so real-traffic panels and rules add this matcher and
#: canary streams never count as user traffic, even when the probe shares the proxy's job.
REAL_TRAFFIC = f'{spec.SOURCE}!="{spec.PROBE_SOURCE}"'
PROBE_TRAFFIC = f'{spec.SOURCE}="{spec.PROBE_SOURCE}"'


def _check_labels(family: spec.Family, labels: Sequence[str]) -> None:
    missing = [label for label in labels if label not in (*family.labels, *TARGET_LABELS)]
    if missing:
        raise UnknownLabelError(f"{family.name} has no label {', '.join(missing)}")


def matchers(family: spec.Family, **equal: str) -> list[str]:
    """``label="value"`` matchers, each checked against the family's labels and the value set."""
    _check_labels(family, list(equal))
    out = []
    for label, value in equal.items():
        allowed = spec.LABEL_VALUES.get(label)
        if allowed is not None and value not in allowed:
            raise UnknownLabelError(f"{label}={value!r} is not a value of {family.name}")
        out.append(f'{label}="{value}"')
    return out


def _real_traffic(equal: dict[str, str]) -> list[str]:
    """:data:`REAL_TRAFFIC`, unless a ``source`` matcher already names a proxy's value."""
    return [] if spec.SOURCE in equal else [REAL_TRAFFIC]


def dashboard_selector(family: spec.Family, **equal: str) -> str:
    """The dashboards' selector: job and instance, then each template variable the family has."""
    parts = ['job=~"$job"', 'instance=~"$instance"']
    parts += [f'{label}=~"${label}"' for label in VARIABLE_LABELS if label in family.labels]
    return ", ".join([*parts, *_real_traffic(equal), *matchers(family, **equal)])


def probe_selector(family: spec.Family) -> str:
    """The probe row's selector: the chosen jobs only, since the probe is its own instance and
    its targets are not the proxy's routes; per-stream families narrowed to canary streams."""
    probe_only = [] if family in spec.PROBE_FAMILIES else [PROBE_TRAFFIC]
    return ", ".join(['job=~"$job"', *probe_only])


def rule_selector(selector: str, family: spec.Family, **equal: str) -> str:
    """A real-traffic rule's selector: the configured job selector, no canary streams, and
    checked matchers."""
    return ", ".join([selector, *_real_traffic(equal), *matchers(family, **equal)])


def by(family: spec.Family, *labels: str) -> str:
    """A ``by (...)`` clause over labels the family carries (``le`` for a histogram's buckets)."""
    _check_labels(family, [label for label in labels if label != "le"])
    if "le" in labels and family.kind != "histogram":
        raise UnknownLabelError(f"{family.name} is not a histogram")
    return f"by ({', '.join(labels)})"


def legend(*labels: str) -> str:
    """A Grafana legend naming each label's value."""
    return " ".join("{{" + label + "}}" for label in labels)


def rate(family: spec.Family, selector: str, window: str = RATE_INTERVAL, suffix: str = "") -> str:
    """``rate(name{selector}[window])`` of one of the family's series."""
    return f"rate({family.series(suffix)}{{{selector}}}[{window}])"


def sum_rate(
    family: spec.Family,
    selector: str,
    *labels: str,
    window: str = RATE_INTERVAL,
    suffix: str = "",
) -> str:
    """``sum [by (labels)] (rate(...))``."""
    group = f" {by(family, *labels)} " if labels else ""
    return f"sum{group}({rate(family, selector, window, suffix)})"


def quantile(q: float, family: spec.Family, selector: str, *labels: str) -> str:
    """``histogram_quantile`` of the family's buckets, grouped by ``labels``."""
    return f"histogram_quantile({q}, {sum_rate(family, selector, 'le', *labels, suffix='_bucket')})"


def num(x: float) -> str:
    """A threshold as PromQL reads it, without float noise (0.7200000000000001 -> 0.72)."""
    return f"{round(x, 9):g}"


def le_matcher(bound: float) -> str:
    """Matches a bucket bound as client_python writes it ("10.0") and as Prometheus 3 does ("10")."""
    if bound == int(bound):
        return f'le=~"{int(bound)}(\\\\.0)?"'
    return f'le="{bound!r}"'
