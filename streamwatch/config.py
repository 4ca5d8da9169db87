"""Settings for ``streamwatch serve``: flags, then ``STREAMWATCH_*`` variables, then a routes file.

Every option has one name used three ways (``--stall-threshold``, ``STREAMWATCH_STALL_THRESHOLD``,
``stall_threshold:`` in the file), and a bad value stops start-up with an error naming it.
"""

from __future__ import annotations

import argparse
import math
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from yarl import URL

from streamwatch.core.api import Api
from streamwatch.core.side import Side
from streamwatch.core.slo import Goodput, Objectives

ENV_PREFIX = "STREAMWATCH_"
_API_VALUES = frozenset(a.value for a in Api)
_SIDE_VALUES = tuple(s.value for s in Side)


class ConfigError(ValueError):
    """A setting is invalid; the message names the option and every way to set it."""

    def __init__(self, option: str, problem: str) -> None:
        flag = "--" + option.replace("_", "-")
        env = ENV_PREFIX + option.upper()
        super().__init__(f"{flag} ({env}): {problem}")
        self.option = option
        self.problem = problem


class ListenError(ConfigError):
    """A listen address is valid but cannot be bound (in use, not local): a start-up failure, not
    a configuration error, so the CLI says so and exits 1 rather than 2."""


@dataclass(frozen=True, slots=True)
class Route:
    """A named upstream; requests whose path starts with ``prefix`` go to ``upstream``."""

    name: str
    upstream: URL
    prefix: str = "/"
    strip_prefix: bool = False
    api: Api | None = None
    """The stream format of every response on this route, instead of guessing it from the path
    (a gateway that serves Ollama or Bedrock under its own paths); its media type must still match."""
    slo: Objectives | None = None
    """This route's goodput objectives (``slo:`` in its config entry), instead of the global ones."""
    side: Side | None = None
    """Which side of the gateway this route watches (``side:``); None: the global ``--side``."""
    ca_bundle: str | None = None
    """PEM CA certificates trusted for this route's https upstream (``ca_bundle:``), instead of
    ``--upstream-ca-bundle`` or the system store: a provider reached through a private CA."""
    origin: tuple[str, str, int] = field(init=False, repr=False, compare=False)
    """``upstream``'s scheme, host and port (the default one if none is given)."""
    authority: bytes = field(init=False, repr=False, compare=False)
    """``upstream``'s host (IDNA-encoded; an IPv6 literal in brackets) and port unless the default:
    the ``Host`` it is sent."""
    _base: str = field(init=False, repr=False, compare=False)  # target()'s origin and base path

    def __post_init__(self) -> None:
        # Computed once, not per request: yarl's properties, origin() and the IDNA codec cost
        # about 25k instructions a request.
        url = self.upstream
        default_port = 443 if url.scheme == "https" else 80
        host = url.raw_host or ""  # an IPv6 literal without its brackets: they go back on
        authority = b"[%s]" % host.encode("ascii") if ":" in host else host.encode("idna")
        if url.port and url.port != default_port:
            authority += b":%d" % url.port
        object.__setattr__(
            self, "origin", (url.scheme, url.raw_host or "", url.port or default_port)
        )
        object.__setattr__(self, "authority", authority)
        object.__setattr__(self, "_base", str(url.origin()) + url.raw_path.rstrip("/"))

    def target(self, raw_target: str) -> URL:
        """The upstream URL: the configured origin and base path, then the request target as sent.

        Built by concatenation onto the configured base only (encoded, never re-parsed as a URL
        reference), so no request field (absolute-form target, Host, X-Forwarded-Host, ``//host``
        paths) can change the destination.
        """
        if self.strip_prefix and self.prefix != "/":
            raw_target = raw_target[len(self.prefix.rstrip("/")) :]
            if not raw_target.startswith("/"):
                raw_target = "/" + raw_target
        return URL(self._base + raw_target, encoded=True)


def parse_listen(option: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(option, f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (explicit listen default)


def _parse_upstream(option: str, value: str) -> URL:
    url = URL(value)
    if url.user is not None or url.password is not None:
        # Never echo the value: it holds a credential. Forwarding it as Basic auth would send one
        # operator's secret on every client's request; dropping it silently hides a mistake.
        raise ConfigError(
            option, "must not embed credentials (user:password@); clients send their own"
        )
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(option, f"expected an http:// or https:// URL, got {value!r}")
    if url.query_string or url.fragment:
        raise ConfigError(option, "must not carry a query string or fragment")
    try:  # the Host header (Route.authority), encoded at start-up rather than per request
        (url.raw_host or "").encode("idna")
    except UnicodeError:
        raise ConfigError(option, f"host is not a valid DNS name: {url.raw_host!r}") from None
    return url


#: ``--log-queue``: log lines held while the reader of stderr is behind, about 1.5 KiB each (a few
#: MiB in all): a few seconds of a busy proxy's lines while a log shipper catches up.
LOG_QUEUE_LINES = 4096


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``serve`` needs, validated. Durations in seconds, sizes in bytes."""

    routes: tuple[Route, ...]
    listen: tuple[str, int] = ("0.0.0.0", 8080)  # noqa: S104 (a sidecar serves its pod)
    admin_listen: tuple[str, int] = ("127.0.0.1", 9464)
    stall_threshold: float = 10.0
    first_token_stall_threshold: float = 60.0
    watchdog_interval: float = 0.25
    connect_timeout: float = 10.0
    upstream_idle_timeout: float = 900.0
    drain_timeout: float = 30.0
    shutdown_delay: float = 0.0
    request_header_timeout: float = 10.0
    request_body_timeout: float = 60.0
    request_body_deadline: float = 300.0
    client_idle_timeout: float = 120.0
    downstream_write_timeout: float = 120.0
    max_streams: int = 1024
    max_connections: int = 4096
    upstream_ca_bundle: str | None = None
    upstream_client_cert: str | None = None
    upstream_client_key: str | None = None
    max_request_body: int = 64 << 20
    upstream_retry_non_idempotent: bool = False
    model_allowlist: tuple[str, ...] = ()
    max_models: int = 50
    capture_content: bool = False
    capture_limit: int = 4096
    log_format: str = "auto"
    log_level: str = "info"
    log_queue: int = LOG_QUEUE_LINES
    workers: int = 1
    metrics_dir: str | None = None
    capture_dir: str | None = None
    capture_keep: str = "problems"
    capture_max_stream_bytes: int = 4 << 20
    capture_max_bytes: int = 256 << 20
    slo_ttft: float | None = None
    slo_tpot: float | None = None
    slo_no_stall: bool = False
    #: models with goodput objectives of their own (``slo_by_model:`` in the config file)
    slo_by_model: Mapping[str, Objectives] = field(default_factory=dict)
    side: Side = Side.CLIENT
    extra: Mapping[str, Any] = field(default_factory=dict)

    def objectives(self, route: Route) -> Objectives:
        """The goodput objectives streams of ``route`` are judged by (its own, else the global)."""
        if route.slo is not None:
            return route.slo
        return Objectives(self.slo_ttft, self.slo_tpot, self.slo_no_stall)

    def goodput(self) -> Goodput | None:
        """Every objective streams are judged by: a model's own, else its route's; ``None`` when
        no route and no model has any."""
        routes = {r.name: o for r in self.routes if (o := self.objectives(r)).active}
        if not routes and not self.slo_by_model:
            return None
        return Goodput(routes, self.slo_by_model)

    def side_of(self, route: Route) -> Side:
        """The side ``route`` watches (its own, else the global ``--side``)."""
        return route.side or self.side

    def upstream_urls(self) -> dict[str, str]:
        """Each route's upstream URL for the start-up line, never with credentials."""
        return {route.name: str(route.upstream.with_user(None)) for route in self.routes}

    def route_for(self, path: str) -> Route | None:
        """The route with the longest prefix matching ``path``."""
        best: Route | None = None
        for route in self.routes:
            prefix = route.prefix.rstrip("/")
            if (path == prefix or path.startswith(prefix + "/") or prefix == "") and (
                best is None or len(route.prefix) > len(best.prefix)
            ):
                best = route
        return best


def _positive(option: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(option, f"expected a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(option, f"must be a positive number, got {value!r}")
    return number


def _non_negative(option: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(option, f"expected a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(option, f"must be zero or a positive number, got {value!r}")
    return number


def _count(option: str, value: str, minimum: int = 1) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(option, f"expected an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(option, f"must be at least {minimum}, got {number}")
    return number


def _bool(option: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(option, f"expected true or false, got {value!r}")


def _readable_file(option: str, value: str) -> str:
    path = Path(value)
    if not path.is_file():
        raise ConfigError(option, f"no such file: {value!r}")
    return str(path)


def upstream_tls(settings: Settings, route: Route | None = None) -> ssl.SSLContext:
    """The TLS context for ``route``'s ``https://`` upstream: its own ``ca_bundle``, else
    ``upstream_ca_bundle``, else the system store, plus the client certificate when one is
    configured. Verification is Python's default (``CERT_REQUIRED``, host name checked). Built at
    start-up so a bad file stops the process with an error naming the option instead of failing
    every request."""
    own = route.ca_bundle if route is not None else None
    try:
        context = ssl.create_default_context(cafile=own or settings.upstream_ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        if own is not None and route is not None:
            raise ConfigError(
                "config", f"route {route.name!r}: ca_bundle: cannot load CA bundle: {exc}"
            ) from None
        raise ConfigError("upstream_ca_bundle", f"cannot load CA bundle: {exc}") from None
    if settings.upstream_client_key and not settings.upstream_client_cert:
        raise ConfigError("upstream_client_key", "needs --upstream-client-cert")
    if settings.upstream_client_cert:
        try:
            context.load_cert_chain(settings.upstream_client_cert, settings.upstream_client_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "upstream_client_cert", f"cannot load client certificate/key: {exc}"
            ) from None
    return context


def capture_directory(value: str) -> str:
    """``--capture-dir``, created (0700) if missing and proven writable by writing a file there,
    so a wrong path, a read-only mount or a full disk stops start-up instead of every capture."""
    path = Path(value)
    probe = path / f".streamwatch-probe-{os.getpid()}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError("capture_dir", f"cannot write captures to {value!r}: {reason}") from None
    return str(path)


def _choice(option: str, value: str, choices: Sequence[str]) -> str:
    lowered = value.strip().lower()
    if lowered not in choices:
        raise ConfigError(option, f"expected one of {', '.join(choices)}, got {value!r}")
    return lowered


OPTIONS: dict[str, str] = {
    "upstream": "Upstream base URL (the gateway), e.g. http://127.0.0.1:4000.",
    "config": "YAML file with several named routes (path prefix -> upstream) and any option below.",
    "listen": "Proxy listener HOST:PORT (default 0.0.0.0:8080).",
    "admin_listen": "Admin listener for /metrics, /healthz, /readyz, /debug/streams (127.0.0.1:9464).",
    "stall_threshold": "Seconds without output, after the first token, that make a stall (10).",
    "first_token_stall_threshold": "Seconds before the first token that make a stall (60).",
    "watchdog_interval": "Seconds between live stall checks of open streams (0.25).",
    "connect_timeout": "Seconds to connect to upstream before answering 504 (10).",
    "upstream_idle_timeout": "Seconds of upstream silence before a stream is cut; keep it above "
    "the gateway's and load balancer's idle timeouts (900).",
    "drain_timeout": "Seconds open streams may run, once the drain starts, before they are "
    "aborted (30).",
    "shutdown_delay": "Seconds between SIGTERM and the drain: /readyz answers 503 at once while "
    "the proxy keeps accepting, so a load balancer stops sending before connections are refused "
    "(0; use 5-15 behind Kubernetes Services).",
    "request_header_timeout": "Seconds a client may take to send a request's headers, counted "
    "from its first byte (or from connect); slower connections are closed (slowloris) (10).",
    "request_body_timeout": "Seconds of silence allowed while a client sends a request body (60).",
    "request_body_deadline": "Seconds a client may take to send a whole request body, however "
    "steadily it trickles; slower uploads get 408 (300).",
    "client_idle_timeout": "Seconds an idle keep-alive client connection is kept open (120).",
    "downstream_write_timeout": "Seconds a write to a client that stopped reading may block before "
    "the stream is aborted on both sides (120).",
    "max_streams": "Concurrent proxied requests; more are refused with a fast 503 (1024).",
    "max_connections": "Open client connections; more are answered 503 and closed (4096).",
    "upstream_ca_bundle": "PEM file of CA certificates trusted for https:// upstreams "
    "(default: the system store).",
    "upstream_client_cert": "PEM client certificate presented to https:// upstreams (mTLS).",
    "upstream_client_key": "PEM private key of --upstream-client-cert (if not in that file).",
    "max_request_body": "Largest request body in bytes; larger get 413 (67108864).",
    "upstream_retry_non_idempotent": "true or false: also resend a POST or PATCH without "
    "Idempotency-Key when the reused upstream connection it went out on closes before answering, "
    "as nginx's proxy_next_upstream non_idempotent; the upstream may run it twice (false).",
    "model_allowlist": "Comma-separated models that keep their own metric label; others are "
    "'other'. Empty: the first --max-models seen.",
    "max_models": "Distinct model label values when no allowlist is set (50).",
    "capture_content": "true or false: record completion text in spans and logs (false: no "
    "content in telemetry). Takes a value: --capture-content true.",
    "capture_limit": "Characters of captured content kept per stream (4096).",
    "log_format": "auto (console on a TTY, else JSON), json or console.",
    "log_level": "debug, info, warning or error (info).",
    "log_queue": "Log lines held for the log writer thread while stderr's reader is behind; when "
    "it is full, lines are dropped and counted, never waited for (4096).",
    "workers": "Proxy processes sharing the port with SO_REUSEPORT (1).",
    "slo_ttft": "Goodput objective: seconds to the first token (off). With --slo-tpot and "
    "--slo-no-stall, streams are counted as meeting their objectives or missing one.",
    "slo_tpot": "Goodput objective: seconds per output token after the first (off).",
    "slo_no_stall": "true or false: a stream that stalled misses its objectives (false).",
    "side": "client or provider: which side of the gateway routes without their own side: watch "
    "(the side label): client in front of the gateway, provider between it and the providers "
    "(client).",
    "metrics_dir": "Writable directory for the workers' metric files when --workers > 1 "
    "(default: the system temporary directory); under a read-only root, a tmpfs or emptyDir.",
    "capture_dir": "Directory to write stream captures to, for `streamwatch analyze` (off). "
    "A capture holds the response body (completion text) with each read's arrival time; no "
    "request body, headers or query string. Created 0700 if missing.",
    "capture_keep": "Which captured streams to keep: problems (outcome not completed, a stall, "
    "or failed analysis) or all (problems).",
    "capture_max_stream_bytes": "Largest capture file per stream; a longer stream's capture is "
    "dropped (4194304).",
    "capture_max_bytes": "Total size of the captures in --capture-dir; the oldest are deleted "
    "to make room (268435456).",
}


_METAVARS = {"upstream": "URL", "config": "FILE", "listen": "HOST:PORT",
             "admin_listen": "HOST:PORT", "capture_content": "{true,false}",
             "upstream_retry_non_idempotent": "{true,false}"}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register every option as ``--flag``; values are parsed later by :func:`load_settings`."""
    for name, text in OPTIONS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=text,
            metavar=_METAVARS.get(name),
        )


def _convert(name: str, raw: object) -> Any:
    value = raw
    if name in ("listen", "admin_listen"):
        return parse_listen(name, str(value))
    if name in (
        "stall_threshold",
        "first_token_stall_threshold",
        "watchdog_interval",
        "connect_timeout",
        "upstream_idle_timeout",
        "drain_timeout",
        "request_header_timeout",
        "request_body_timeout",
        "request_body_deadline",
        "client_idle_timeout",
        "downstream_write_timeout",
    ):
        return _positive(name, str(value))
    if name == "shutdown_delay":
        return _non_negative(name, str(value))
    if name == "metrics_dir":
        return str(value) or None
    if name == "capture_dir":
        return capture_directory(str(value)) if str(value) else None
    if name == "capture_keep":
        return _choice(name, str(value), ("problems", "all"))
    if name in ("slo_ttft", "slo_tpot"):
        return _positive(name, str(value))
    if name in ("slo_no_stall", "upstream_retry_non_idempotent"):
        return value if isinstance(value, bool) else _bool(name, str(value))
    if name in ("upstream_ca_bundle", "upstream_client_cert", "upstream_client_key"):
        return _readable_file(name, str(value))
    if name in (
        "max_streams",
        "max_connections",
        "max_request_body",
        "capture_limit",
        "log_queue",
        "workers",
        "capture_max_stream_bytes",
        "capture_max_bytes",
    ):
        return _count(name, str(value))
    if name == "max_models":
        return _count(name, str(value), minimum=0)
    if name == "capture_content":
        return value if isinstance(value, bool) else _bool(name, str(value))
    if name == "model_allowlist":
        items = value if isinstance(value, list) else str(value).split(",")
        return tuple(str(m).strip() for m in items if str(m).strip())
    if name == "log_format":
        return _choice(name, str(value), ("auto", "json", "console"))
    if name == "log_level":
        return _choice(name, str(value), ("debug", "info", "warning", "error"))
    if name == "side":
        return Side(_choice(name, str(value), _SIDE_VALUES))
    raise ConfigError(name, "unknown option")


def _objectives(where: str, raw: object) -> Objectives:
    """``{ttft: S, tpot: S, no_stall: BOOL}`` at ``where`` in the config file."""
    if not isinstance(raw, dict) or set(raw) - {"ttft", "tpot", "no_stall"}:
        raise ConfigError("config", f"{where} must be a mapping of ttft, tpot and no_stall")
    ttft, tpot, no_stall = raw.get("ttft"), raw.get("tpot"), raw.get("no_stall", False)
    for key, value in (("ttft", ttft), ("tpot", tpot)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise ConfigError("config", f"{where}.{key} must be a positive number of seconds")
    if not isinstance(no_stall, bool):
        raise ConfigError("config", f"{where}.no_stall must be true or false")
    return Objectives(
        None if ttft is None else float(ttft), None if tpot is None else float(tpot), no_stall
    )


def _route_objectives(path: Path, i: int, raw: object) -> Objectives | None:
    """A route entry's ``slo: {ttft: S, tpot: S, no_stall: BOOL}``."""
    return None if raw is None else _objectives(f"{path}: routes[{i}].slo", raw)


def _model_objectives(path: Path, raw: object) -> dict[str, Objectives]:
    """``slo_by_model: {MODEL: {ttft: S, tpot: S, no_stall: BOOL}, ...}``: the model names as
    streams report them (the response's model, or the request's)."""
    where = f"{path}: slo_by_model"
    if not isinstance(raw, dict):
        raise ConfigError("config", f"{where} must map model names to their objectives")
    models: dict[str, Objectives] = {}
    for name, entry in raw.items():
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            raise ConfigError("config", f"{where}: {name!r} is not a model name (1-256 chars)")
        objectives = _objectives(f"{where}.{name}", entry)
        if not objectives.active:
            raise ConfigError("config", f"{where}.{name} sets no objective (ttft, tpot, no_stall)")
        models[name] = objectives
    return models


def _routes_from_file(path: Path, entries: object) -> tuple[Route, ...]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError("config", f"{path}: 'routes' must be a non-empty list")
    routes: list[Route] = []
    names: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError("config", f"{path}: routes[{i}] must be a mapping")
        name = str(entry.get("name", "")).strip()
        if not name or name in names or len(name) > 64:
            raise ConfigError("config", f"{path}: routes[{i}].name must be unique, 1-64 chars")
        names.add(name)
        prefix = str(entry.get("prefix", "/"))
        if not prefix.startswith("/"):
            raise ConfigError("config", f"{path}: routes[{i}].prefix must start with '/'")
        upstream = _parse_upstream("config", str(entry.get("upstream", "")))
        strip = entry.get("strip_prefix", False)
        if not isinstance(strip, bool):
            raise ConfigError("config", f"{path}: routes[{i}].strip_prefix must be true or false")
        api = entry.get("api")
        if api is not None and api not in _API_VALUES:
            raise ConfigError(
                "config",
                f"{path}: routes[{i}].api must be one of {', '.join(sorted(_API_VALUES))},"
                f" got {api!r}",
            )
        slo = _route_objectives(path, i, entry.get("slo"))
        side = entry.get("side")
        if side is not None and side not in _SIDE_VALUES:
            raise ConfigError(
                "config", f"{path}: routes[{i}].side must be one of {', '.join(_SIDE_VALUES)}"
            )
        ca_bundle = entry.get("ca_bundle")
        if ca_bundle is not None:
            if upstream.scheme != "https":
                raise ConfigError(
                    "config", f"{path}: routes[{i}].ca_bundle needs an https upstream"
                )
            if not Path(str(ca_bundle)).is_file():
                problem = f"routes[{i}].ca_bundle: no such file: {str(ca_bundle)!r}"
                raise ConfigError("config", f"{path}: {problem}")
        routes.append(
            Route(
                name,
                upstream,
                prefix,
                strip,
                api=None if api is None else Api(api),
                slo=slo,
                side=None if side is None else Side(side),
                ca_bundle=None if ca_bundle is None else str(ca_bundle),
            )
        )
    return tuple(routes)


def _one_trust_per_origin(routes: Sequence[Route]) -> None:
    """Routes to one https origin must trust the same CAs: upstream connections are pooled by
    origin, so a connection verified against one route's bundle must be good for the other's."""
    trust: dict[URL, tuple[str, str | None]] = {}
    for route in routes:
        if route.upstream.scheme != "https":
            continue
        origin = route.upstream.origin()
        first = trust.setdefault(origin, (route.name, route.ca_bundle))
        if first[1] != route.ca_bundle:
            raise ConfigError(
                "config",
                f"routes {first[0]!r} and {route.name!r} reach {origin} with different "
                "ca_bundle values; give them the same one",
            )


GENAI_CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_GENAI_CAPTURE_VALUES = {  # booleans, and the modes of opentelemetry-util-genai (spans only here)
    "true": True,
    "span_only": True,
    "span_and_event": True,
    "false": False,
    "no_content": False,
    "event_only": False,
}


def _genai_capture(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in _GENAI_CAPTURE_VALUES:
        choices = ", ".join(_GENAI_CAPTURE_VALUES)
        raise ConfigError("capture_content", f"{GENAI_CAPTURE_ENV}: expected one of {choices}")
    return _GENAI_CAPTURE_VALUES[lowered]


def load_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Merge flags over ``STREAMWATCH_*`` variables over the config file; validate everything."""
    raw: dict[str, object] = {}
    config_path = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    routes: tuple[Route, ...] = ()
    slo_by_model: dict[str, Objectives] = {}
    if config_path:
        path = Path(config_path)
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError("config", f"cannot read {path}: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigError("config", f"{path}: expected a mapping at the top level")
        for key, value in document.items():
            if key == "routes":
                routes = _routes_from_file(path, value)
            elif key == "slo_by_model":
                slo_by_model = _model_objectives(path, value)
            elif key in OPTIONS and key not in ("config", "upstream"):
                raw[key] = value
            elif key != "upstream":
                raise ConfigError("config", f"{path}: unknown option {key!r}")
            else:
                raw["upstream"] = value
    genai_capture = environ.get(GENAI_CAPTURE_ENV)
    if genai_capture is not None:  # the GenAI conventions' own switch; STREAMWATCH_* and flags win
        raw["capture_content"] = _genai_capture(genai_capture)
    for name in OPTIONS:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value is not None and name != "config":
            raw[name] = env_value
    for name in OPTIONS:
        flag_value = getattr(args, name, None)
        if flag_value is not None and name != "config":
            raw[name] = flag_value
    upstream = raw.pop("upstream", None)
    if upstream:
        default = Route("default", _parse_upstream("upstream", str(upstream)))
        routes = (*routes, default) if all(r.prefix != "/" for r in routes) else routes
    if not routes:
        raise ConfigError(
            "upstream", "no upstream configured: pass --upstream URL or --config FILE"
        )
    known = {f.name for f in fields(Settings)}
    values = {name: _convert(name, value) for name, value in raw.items() if name in known}
    settings = Settings(routes=routes, slo_by_model=slo_by_model, **values)
    tls_files = (
        settings.upstream_ca_bundle,
        settings.upstream_client_cert,
        settings.upstream_client_key,
    )
    if any(tls_files):
        upstream_tls(settings)  # fail at start-up, naming the option, on an unusable file
    _one_trust_per_origin(routes)  # the --upstream default route included
    for route in routes:
        if route.upstream.scheme == "https":
            upstream_tls(settings, route)
    return settings
