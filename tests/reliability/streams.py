"""Stream bodies the fault tests replay: the shared corpus, the project fixtures and edge shapes."""

from __future__ import annotations

import json
from dataclasses import dataclass

from streamwatch.core.analyzer import StreamAnalyzer
from streamwatch.core.api import Api
from streamwatch.core.record import CloseCause
from tests.conftest import find_corpus
from tests.core.support import FIXTURE_STREAMS, chat_chunk, sse_events

PATHS = {  # the SSE-framed APIs: these bodies are replayed as text/event-stream
    Api.OPENAI_CHAT: "/v1/chat/completions",
    Api.OPENAI_RESPONSES: "/v1/responses",
    Api.ANTHROPIC_MESSAGES: "/v1/messages",
    Api.OPENAI_COMPLETIONS: "/v1/completions",
    Api.GEMINI: "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    Api.COHERE_V2: "/v2/chat",
    Api.SSE: "/v1/unknown/stream",
}
_PROTOCOLS = {
    "openai_chat": Api.OPENAI_CHAT,
    "openai_responses": Api.OPENAI_RESPONSES,
    "anthropic_messages": Api.ANTHROPIC_MESSAGES,
}
_DIALECTS = {"gemini_generate_content": Api.GEMINI, "cohere_chat_v2": Api.COHERE_V2}
_FIXTURE_PREFIXES = (
    ("openai-chat-", Api.OPENAI_CHAT),
    ("openai-responses-", Api.OPENAI_RESPONSES),
    ("openai-completions-", Api.OPENAI_COMPLETIONS),
    ("anthropic-", Api.ANTHROPIC_MESSAGES),
    ("gemini-", Api.GEMINI),
    ("cohere-v2-", Api.COHERE_V2),
)


@dataclass(frozen=True)
class Body:
    name: str
    api: Api
    raw: bytes

    @property
    def path(self) -> str:
        return PATHS[self.api]

    @property
    def events(self) -> list[bytes]:
        """One upstream write per SSE event, as real upstreams send them."""
        return list(sse_events(self.raw))


def _chat(*chunks: bytes, eol: str = "\n") -> bytes:
    return b"".join(chunks) + f"data: [DONE]{eol}{eol}".encode()


def _delta(text: str, finish: str | None = None, eol: str = "\n") -> bytes:
    return chat_chunk({"content": text}, finish, eol=eol)


def edge_bodies() -> list[Body]:
    """Shapes the corpus may lack: line endings, BOM, comments, multi-line data, emoji, a 2 MiB event."""
    chat = Api.OPENAI_CHAT
    big_args = json.dumps({"blob": "x" * (2 << 20)})
    call = {"index": 0, "id": "t1", "function": {"name": "f", "arguments": big_args}}
    tool = chat_chunk({"tool_calls": [call]})
    return [
        Body(
            "edge/crlf",
            chat,
            _chat(_delta("a", eol="\r\n"), _delta("b", "stop", eol="\r\n"), eol="\r\n"),
        ),
        Body(
            "edge/cr-only",
            chat,
            _chat(_delta("a", eol="\r"), _delta("b", "stop", eol="\r"), eol="\r"),
        ),
        Body(
            "edge/bom-comments",
            chat,
            b"\xef\xbb\xbf: hello\n\n" + _chat(_delta("a"), b": keep\n\n", _delta("b", "stop")),
        ),
        Body(
            "edge/multiline-data",
            Api.SSE,
            b"event: x\ndata: line1\ndata: line2\n\nid: 7\ndata: z\n\n",
        ),
        Body("edge/emoji", chat, _chat(_delta("\U0001f600\U0001f9e0 \u00e9"), _delta("", "stop"))),
        Body("edge/2MiB-tool-call", chat, _chat(tool, _delta("", "tool_calls"))),
    ]


def corpus_bodies() -> list[Body]:
    """Every stream of the shared corpus (empty when the corpus is absent)."""
    root = find_corpus() / "llm-streams"
    index = root / "index.json"
    if not index.is_file():
        return []
    out = []
    for row in json.loads(index.read_text("utf-8")):
        api = _PROTOCOLS.get(row["protocol"]) or _DIALECTS.get(row.get("dialect") or "", Api.SSE)
        out.append(
            Body(
                row["file"].removeprefix("llm-streams/"),
                api,
                (root.parent / row["file"]).read_bytes(),
            )
        )
    return out


def fixture_bodies() -> list[Body]:
    out = []
    for path in sorted(FIXTURE_STREAMS.glob("*.sse")):
        api = next((a for p, a in _FIXTURE_PREFIXES if path.name.startswith(p)), Api.SSE)
        out.append(Body(f"fixtures/{path.name}", api, path.read_bytes()))
    return out


def summary_of_log(line: dict[str, object]) -> dict[str, object]:
    """The chunking-independent analysis results of a ``stream.*`` log line."""
    keys = (
        "outcome",
        "frames",
        "output_events",
        "finish_reasons",
        "terminal_frame",
        "error_frames",
    )
    keys += ("input_tokens", "output_tokens", "tool_calls", "oversize_events", "body_bytes")
    return {k: line.get(k) for k in keys}


def expected_summary(body: Body) -> dict[str, object]:
    """What the analyzer reports for ``body`` fed in one piece in-process (the reference run)."""
    analyzer = StreamAnalyzer(body.api, 0, request_model="gpt-4o")
    analyzer.feed(body.raw, 1000)
    _, record = analyzer.close(2000, CloseCause.UPSTREAM_EOF)
    usage = record.usage
    return {
        "outcome": record.outcome.value,
        "frames": record.frames,
        "output_events": record.output_events,
        "finish_reasons": list(record.finish_reasons),
        "terminal_frame": record.terminal_frame,
        "error_frames": [e.error_type for e in record.error_frames],
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": record.output_tokens,
        "tool_calls": len(record.tool_calls),
        "oversize_events": record.oversize_events,
        "body_bytes": record.body_bytes,
    }
