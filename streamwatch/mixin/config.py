"""The mixin's configuration (``streamwatch/mixin/config.yaml``, shipped as package data):
selector, links, SLO and thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from streamwatch import metricspec as spec

DEFAULT_FILE = "config.yaml"


class MixinConfigError(ValueError):
    """The mixin configuration is invalid; the message names the option."""


@dataclass(frozen=True, slots=True)
class Threshold:
    """One alert's threshold, ``for`` duration and severity."""

    threshold: float
    for_: str
    severity: str


@dataclass(frozen=True, slots=True)
class Config:
    """The mixin's configuration."""

    selector: str
    grafana_url: str
    runbook_url: str
    slo_objective: float
    slo_threshold_s: float
    alerts: dict[str, Threshold]
    #: ratio alerts stay silent on a route that ended fewer streams than this in 5 minutes
    min_streams_5m: int = 20
    #: share of judged streams that must meet their route's goodput objectives
    goodput_objective: float = 0.99

    @classmethod
    def default(cls) -> Config:
        """The shipped configuration, ``streamwatch/mixin/config.yaml``."""
        with resources.as_file(resources.files(__package__).joinpath(DEFAULT_FILE)) as path:
            return cls.from_yaml(path)

    @classmethod
    def from_yaml(cls, path: Path) -> Config:
        """Read and check the configuration file."""
        raw = yaml.safe_load(path.read_text())
        alerts = {
            name: Threshold(float(v.get("threshold", 0)), str(v["for"]), str(v["severity"]))
            for name, v in raw["alerts"].items()
        }
        cfg = cls(
            selector=raw["selector"],
            grafana_url=raw["grafana_url"].rstrip("/"),
            runbook_url=raw["runbook_url"],
            slo_objective=float(raw["ttft_slo"]["objective"]),
            slo_threshold_s=float(raw["ttft_slo"]["threshold_seconds"]),
            alerts=alerts,
            min_streams_5m=int(raw.get("min_streams_5m", 20)),
            goodput_objective=float(raw.get("goodput_slo", {}).get("objective", 0.99)),
        )
        return cfg.checked()

    def checked(self) -> Config:
        """This configuration, or an error naming the value that cannot work."""
        if self.slo_threshold_s not in spec.TTFT.buckets:
            raise MixinConfigError(
                f"ttft_slo.threshold_seconds={self.slo_threshold_s:g} is not a TTFT bucket bound "
                f"({', '.join(map(str, spec.TTFT.buckets))})"
            )
        if not 0 < self.slo_objective < 1:
            raise MixinConfigError("ttft_slo.objective must be between 0 and 1")
        if not 0 < self.goodput_objective < 1:
            raise MixinConfigError("goodput_slo.objective must be between 0 and 1")
        if self.min_streams_5m < 0:
            raise MixinConfigError("min_streams_5m must be >= 0")
        return self
