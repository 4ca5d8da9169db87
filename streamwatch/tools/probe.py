"""``streamwatch probe``: a synthetic streaming canary through a gateway.

Sends a small streaming request per target on an interval (or once, ``--once``, for CI smoke
tests), feeds the bytes it receives to the same sans-IO analyzer as the proxy, and judges the
stream the way an on-call engineer would: a 200, at least one output event, and the ``completed``
outcome (the terminal frame arrived, no error frame, no reset, no stall past the timeout). As a
daemon it exposes the proxy's per-stream families with ``source="probe"`` plus
``streamwatch_probe_success`` and ``streamwatch_probe_last_success_timestamp_seconds`` per target,
the way ``blackbox_exporter`` does for plain HTTP.

Credentials come from an environment variable or a file, never from the command line (where
``ps`` and shell history would show them), and are sent only in the request header.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from streamwatch import metricspec as spec
from streamwatch.core.analyzer import AnalyzerConfig, StreamAnalyzer
from streamwatch.core.api import Api
from streamwatch.core.events import StreamEvent
from streamwatch.core.record import CloseCause, Outcome, StreamRecord
from streamwatch.core.request import select_api

DEFAULT_PATHS = {
    Api.OPENAI_CHAT: "/v1/chat/completions",
    Api.OPENAI_RESPONSES: "/v1/responses",
    Api.ANTHROPIC_MESSAGES: "/v1/messages",
}
PROBE_APIS = tuple(DEFAULT_PATHS)
ANTHROPIC_VERSION = "2023-06-01"


class ProbeConfigError(ValueError):
    """A target is misconfigured; the message names the target and the key."""


@dataclass(frozen=True, slots=True)
class Target:
    """One gateway endpoint to probe and how (config keys have the same names)."""

    name: str
    url: str  # the gateway's base URL, e.g. http://litellm:4000
    api: Api = Api.OPENAI_CHAT
    model: str = "gpt-4o-mini"
    prompt: str = "Reply with the single word: ok"
    max_tokens: int = 16
    interval: float = 30.0
    timeout: float = 30.0
    path: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    credential_env: str | None = None
    credential_file: str | None = None
    credential_header: str | None = None

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + (self.path or DEFAULT_PATHS[self.api])

    @property
    def request_path(self) -> str:
        """The path the gateway sees (the base URL's path, then the API's)."""
        return urlsplit(self.endpoint).path

    def body(self) -> bytes:
        """The smallest streaming request of the target's API."""
        messages = [{"role": "user", "content": self.prompt}]
        if self.api is Api.OPENAI_RESPONSES:
            request: dict[str, Any] = {
                "model": self.model,
                "input": self.prompt,
                "max_output_tokens": self.max_tokens,
                "stream": True,
            }
        elif self.api is Api.ANTHROPIC_MESSAGES:
            request = {
                "model": self.model,
                "max_tokens": self.max_tokens,
                "messages": messages,
                "stream": True,
            }
        else:
            request = {
                "model": self.model,
                "messages": messages,
                "max_tokens": self.max_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        return orjson.dumps(request)

    def request_headers(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Headers for one probe: configured ones, the API's, and the credential if any."""
        headers = {"content-type": "application/json", **self.headers}
        if self.api is Api.ANTHROPIC_MESSAGES:
            headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
        secret = self.credential(environ)
        if secret is not None:
            name = self.credential_header or (
                "x-api-key" if self.api is Api.ANTHROPIC_MESSAGES else "authorization"
            )
            headers[name] = f"Bearer {secret}" if name.lower() == "authorization" else secret
        return headers

    def credential(self, environ: Mapping[str, str]) -> str | None:
        if self.credential_env is not None:
            value = environ.get(self.credential_env)
            if not value:
                raise ProbeConfigError(
                    f"target {self.name!r}: credential_env {self.credential_env} is not set"
                )
            return value.strip()
        if self.credential_file is not None:
            try:
                return Path(self.credential_file).read_text("utf-8").strip()
            except OSError as exc:
                raise ProbeConfigError(
                    f"target {self.name!r}: credential_file: {exc.strerror or exc}"
                ) from None
        return None


_KEYS = {
    "name", "url", "api", "model", "prompt", "max_tokens", "interval", "timeout", "path",
    "headers", "credential_env", "credential_file", "credential_header",
}  # fmt: skip
_SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization"}


def target_from(entry: Mapping[str, Any], index: int) -> Target:
    """A :class:`Target` from one config mapping, validated, errors naming the key."""
    where = f"targets[{index}]"
    unknown = set(entry) - _KEYS
    if unknown:
        raise ProbeConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    name = str(entry.get("name") or f"target{index}")[:64]
    url = str(entry.get("url", ""))
    if not url.startswith(("http://", "https://")):
        raise ProbeConfigError(f"{where}.url: expected an http:// or https:// URL, got {url!r}")
    if "@" in url.split("://", 1)[1].split("/", 1)[0]:
        raise ProbeConfigError(f"{where}.url: credentials in the URL; use credential_env")
    try:
        api = Api(str(entry.get("api", Api.OPENAI_CHAT.value)))
    except ValueError:
        api = None
    if api not in PROBE_APIS:
        choices = ", ".join(a.value for a in PROBE_APIS)
        raise ProbeConfigError(f"{where}.api: expected one of {choices}")
    headers = entry.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise ProbeConfigError(f"{where}.headers: expected a mapping")
    secret = _SECRET_HEADERS & {str(k).lower() for k in headers}
    if secret:
        raise ProbeConfigError(
            f"{where}.headers: {sorted(secret)[0]} is a credential: use credential_env or "
            "credential_file, never the config or the command line"
        )
    numbers: dict[str, Any] = {}
    for key, kind in (("max_tokens", int), ("interval", float), ("timeout", float)):
        if key in entry:
            try:
                value = kind(entry[key])
            except (TypeError, ValueError):
                raise ProbeConfigError(f"{where}.{key}: expected a number") from None
            if value <= 0:
                raise ProbeConfigError(f"{where}.{key}: must be positive")
            numbers[key] = value
    optional: dict[str, Any] = {
        key: str(entry[key])
        for key in ("model", "prompt", "path", "credential_env", "credential_file",
                    "credential_header")
        if entry.get(key) is not None
    }  # fmt: skip
    if "path" in optional and not optional["path"].startswith("/"):
        raise ProbeConfigError(f"{where}.path: must start with '/'")
    if "credential_env" in optional and "credential_file" in optional:
        raise ProbeConfigError(f"{where}: set credential_env or credential_file, not both")
    return Target(
        name=name,
        url=url,
        api=api,
        headers={str(k): str(v) for k, v in headers.items()},
        **numbers,
        **optional,
    )


#: A transport error of a probe, as the proxy's upstream error kind (``spec.UPSTREAM_ERROR_KINDS``);
#: any other is ``protocol``.
_PROTOCOL = "protocol"
_ERROR_KINDS = {"connect": "connect", "tls": "tls", "timeout": "timeout", "reset": _PROTOCOL}


def _connect_error(exc: BaseException) -> str:
    """``tls`` if the TLS handshake failed (httpx raises ConnectError for both), else ``connect``."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return "tls"
        cause = cause.__cause__ or cause.__context__
    return "connect"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe: HTTP status, the analyzer's record (None if no stream started) and the verdict."""

    target: Target
    status: int | None
    record: StreamRecord | None
    error: str | None  # transport failure before or during the response, by class name
    events: tuple[StreamEvent, ...] = ()

    @property
    def ok(self) -> bool:
        record = self.record
        return (
            self.error is None
            and self.status == 200
            and record is not None
            and record.outcome is Outcome.COMPLETED
            and record.output_events > 0
        )

    @property
    def failure(self) -> str | None:
        """Why the verdict failed as a bounded label value (``metricspec.PROBE_FAILURE_REASONS``);
        None when it passed."""
        if self.ok:
            return None
        if self.status is None:  # no response: the phase that failed, as the proxy names it
            return _ERROR_KINDS.get(self.error or "", _PROTOCOL)
        if self.status != 200:
            return spec.PROBE_HTTP_STATUS
        if self.record is None:
            return spec.PROBE_NOT_A_STREAM
        if self.error is not None:
            return _ERROR_KINDS.get(self.error, _PROTOCOL)
        if self.record.outcome is not Outcome.COMPLETED:
            return self.record.outcome.value
        return spec.PROBE_NO_OUTPUT

    @property
    def reason(self) -> str:
        """Why the verdict failed (``ok`` when it did not), one bounded word."""
        if self.ok:
            return "ok"
        if self.error is not None:
            return self.error
        if self.status != 200:
            return f"http_{self.status}"
        if self.record is None:
            return "not_a_stream"
        if self.record.outcome is not Outcome.COMPLETED:
            return self.record.outcome.value
        return "no_output"


async def probe_once(
    client: httpx.AsyncClient,
    target: Target,
    environ: Mapping[str, str],
    config: AnalyzerConfig | None = None,
) -> ProbeResult:
    """Send one streaming request and analyze what comes back; never raises on remote faults."""
    headers = target.request_headers(environ)
    t_request = time.monotonic_ns()
    analyzer: StreamAnalyzer | None = None
    events: list[StreamEvent] = []
    status: int | None = None
    cause = CloseCause.UPSTREAM_EOF
    error: str | None = None
    try:
        async with asyncio.timeout(target.timeout):  # the whole probe, however the bytes trickle
            async with client.stream(
                "POST", target.endpoint, content=target.body(), headers=headers
            ) as response:
                status = response.status_code
                api = select_api(target.request_path, response.headers.get("content-type"))
                if api is not None and status == 200:
                    analyzer = StreamAnalyzer(
                        api, t_request, request_model=target.model, config=config
                    )
                async for chunk in response.aiter_raw():
                    if analyzer is not None:
                        events.extend(analyzer.feed(chunk, time.monotonic_ns()))
    except (TimeoutError, httpx.TimeoutException):
        cause, error = CloseCause.UPSTREAM_TIMEOUT, "timeout"
    except httpx.ConnectError as exc:
        error = _connect_error(exc)
    except (httpx.RemoteProtocolError, httpx.ReadError):
        cause, error = CloseCause.UPSTREAM_RESET, "reset"
    except httpx.HTTPError as exc:
        error = type(exc).__name__[:40]
    record = None
    if analyzer is not None:
        closing, record = analyzer.close(time.monotonic_ns(), cause)
        events.extend(closing)
    if record is not None and error in ("timeout", "reset"):
        error = None  # the record's outcome says it, with its timings
    return ProbeResult(target, status, record, error, tuple(events))


def load_targets(path: Path) -> list[Target]:
    """Targets from a YAML file ``targets: [{name, url, api, model, ...}]``."""
    import yaml  # noqa: PLC0415 (only a config file needs it)

    try:
        document = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProbeConfigError(f"--config: cannot read {path}: {exc}") from None
    entries = document.get("targets") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ProbeConfigError(f"--config: {path}: 'targets' must be a non-empty list")
    targets = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ProbeConfigError(f"targets[{index}]: expected a mapping")
        targets.append(target_from(entry, index))
    names = [t.name for t in targets]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ProbeConfigError(f"--config: target name {duplicate!r} is used twice")
    return targets
