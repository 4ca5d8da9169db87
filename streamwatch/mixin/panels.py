"""Grafana building blocks: the grid layout, targets, template variables and the panels both
dashboards show (latency, decode rate, outcomes, finish reasons, tokens, duration)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamwatch import metricspec as spec
from streamwatch.mixin.promql import (
    RATE_INTERVAL,
    REAL_TRAFFIC,
    dashboard_selector,
    legend,
    quantile,
    sum_rate,
)

Json = dict[str, Any]

DS = {"type": "prometheus", "uid": "${datasource}"}


def grafana_unit(family: spec.Family) -> str:
    """Grafana's unit for a family's values: seconds, or a plain number."""
    return "s" if family.unit == "s" else "short"


def target(expr: str, legend_format: str, *, ref: str = "A", exemplar: bool = False) -> Json:
    """One Prometheus query of a panel."""
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend_format,
        "refId": ref,
        "exemplar": exemplar,
        "range": True,
    }


def targets(*pairs: tuple[str, str], exemplar: bool = False) -> list[Json]:
    """Queries A, B, ... from (expression, legend) pairs."""
    return [
        target(e, leg, ref=chr(ord("A") + i), exemplar=exemplar) for i, (e, leg) in enumerate(pairs)
    ]


def quantiles(family: spec.Family, qs: Sequence[float], *labels: str) -> list[tuple[str, str]]:
    """One (query, legend) pair per quantile of ``family``, grouped by ``labels``."""
    prefix = legend(*labels) + " " if labels else ""
    sel = dashboard_selector(family)
    return [(quantile(q, family, sel, *labels), f"{prefix}p{round(q * 100)}") for q in qs]


def rate_by(family: spec.Family, *labels: str) -> tuple[str, str]:
    """Per-second rate of a family split by ``labels``, with their legend."""
    return sum_rate(family, dashboard_selector(family), *labels), legend(*labels)


class Layout:
    """Places panels left to right, 24 columns wide, assigning ids."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1
        self.panels: list[Json] = []

    def row(self, title: str) -> None:
        """Start a new row of panels."""
        self.y += self.row_h
        self.x = self.row_h = 0
        self._add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        self.y += 1

    def _add(self, panel: Json, w: int, h: int) -> None:
        if self.x + w > 24:
            self.y += self.row_h
            self.x = self.row_h = 0
        panel["id"] = self.next_id
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        self.panels.append(panel)

    def timeseries(
        self,
        title: str,
        description: str,
        tgts: list[Json],
        *,
        unit: str = "short",
        w: int = 8,
        stack: bool = False,
    ) -> None:
        """A graph panel."""
        custom: Json = {"fillOpacity": 20 if stack else 0, "showPoints": "never"}
        if stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
        self._add(
            {
                "type": "timeseries",
                "title": title,
                "description": description,
                "datasource": DS,
                "targets": tgts,
                "fieldConfig": {"defaults": {"unit": unit, "custom": custom}, "overrides": []},
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"},
                },
            },
            w,
            8,
        )

    def stat(self, title: str, description: str, expr: str, *, unit: str = "short") -> None:
        """A single-number panel."""
        self._add(
            {
                "type": "stat",
                "title": title,
                "description": description,
                "datasource": DS,
                "targets": [target(expr, title)],
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
            },
            4,
            4,
        )

    def heatmap(self, title: str, description: str, family: spec.Family) -> None:
        """A bucket heatmap of one histogram, with exemplars."""
        expr = (
            f"sum by (le) (increase({family.series('_bucket')}"
            f"{{{dashboard_selector(family)}}}[{RATE_INTERVAL}]))"
        )
        tgt = target(expr, "{{le}}", exemplar=True)
        tgt["format"] = "heatmap"
        self._add(
            {
                "type": "heatmap",
                "title": title,
                "description": description,
                "datasource": DS,
                "targets": [tgt],
                "options": {
                    "calculate": False,
                    "yAxis": {"unit": grafana_unit(family)},
                    "cellGap": 1,
                    "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5},
                    "exemplars": {"color": "rgba(255,0,255,0.7)"},
                    "tooltip": {"show": True, "yHistogram": True},
                },
                "fieldConfig": {"defaults": {}, "overrides": []},
            },
            12,
            8,
        )

    # -- the panels both dashboards show; ``by`` splits them (the model dashboard splits by route)

    def percentiles(
        self,
        family: spec.Family,
        qs: Sequence[float],
        title: str,
        description: str,
        *,
        w: int = 8,
        by: str = "",
    ) -> None:
        """Percentile graph of a histogram, optionally one line per ``by`` value, with exemplars."""
        labels = (by,) if by else ()
        tgts = targets(*quantiles(family, qs, *labels), exemplar=True)
        self.timeseries(title, description, tgts, unit=grafana_unit(family), w=w)

    def outcomes(self, description: str, *, w: int = 8) -> None:
        """How streams ended, stacked."""
        self.timeseries(
            "Outcomes",
            description,
            targets(rate_by(spec.STREAMS, spec.OUTCOME)),
            unit="reqps",
            w=w,
            stack=True,
        )

    def finish_reasons(self, description: str) -> None:
        """Finish reasons as providers reported them, stacked."""
        self.timeseries(
            "Finish reasons",
            description,
            targets(rate_by(spec.FINISH_REASONS_TOTAL, spec.FINISH_REASON)),
            unit="reqps",
            stack=True,
        )

    def tokens(self, description: str) -> None:
        """Reported usage by token type."""
        self.timeseries(
            "Tokens by type", description, targets(rate_by(spec.TOKENS, spec.TOKEN_TYPE)), w=12
        )


def variable(name: str, query: str, *, multi: bool = True) -> Json:
    """A query template variable."""
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "allValue": ".*" if multi else None,
        "current": {},
        "options": [],
    }


def templating(*, model_multi: bool = True) -> Json:
    """datasource, job, instance, route, side, api and model, each narrowing the next."""
    info, streams = spec.BUILD_INFO.name, spec.STREAMS.name
    real = f'job=~"$job", {REAL_TRAFFIC}'  # a probe's targets are not routes
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "options": [],
                "refresh": 1,
            },
            variable("job", f"label_values({info}, job)"),
            variable("instance", f'label_values({info}{{job=~"$job"}}, instance)'),
            variable(spec.ROUTE, f"label_values({streams}{{{real}}}, {spec.ROUTE})"),
            variable(spec.SIDE, f'label_values({streams}{{{real}, route=~"$route"}}, {spec.SIDE})'),
            variable(
                spec.API,
                f'label_values({streams}{{{real}, route=~"$route", side=~"$side"}}, {spec.API})',
            ),
            variable(
                spec.MODEL,
                f'label_values({streams}{{{real}, route=~"$route", side=~"$side", api=~"$api"}},'
                f" {spec.MODEL})",
                multi=model_multi,
            ),
        ]
    }


def dashboard(uid: str, title: str, description: str, layout: Layout, tmpl: Json) -> Json:
    """A dashboard document around a layout's panels."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["streamwatch", "llm"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "templating": tmpl,
        "annotations": {"list": []},
        "links": [
            {
                "title": "streamwatch dashboards",
                "type": "dashboards",
                "tags": ["streamwatch"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": layout.panels,
    }
