"""The prompt of a request, read from its JSON body only when content capture is on.

Reads the chat ``messages`` of OpenAI Chat Completions and Anthropic Messages and the ``input`` of
the Responses API; Anthropic's ``system`` and Responses' ``instructions`` are the system
instructions. Text is kept within one budget for the whole prompt (``capture_limit`` characters);
other parts (images, audio, files) are named by their type only, never copied. Roles and part
types are capped like every client string, and so are the numbers of messages and parts, so a
request with a million tiny messages costs telemetry what a short one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from streamwatch.core.limits import MAX_PROMPT_MESSAGES, MAX_PROMPT_PARTS, cap


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a message: its type, and its text (cut to the budget) if it is text."""

    type: str
    content: str | None = None


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Prompt:
    """What the request asked: its system instructions and its messages (None where it had none)."""

    system: tuple[Part, ...] | None
    messages: tuple[Message, ...] | None


class _Budget:
    """Characters of text and parts left for the whole prompt."""

    __slots__ = ("chars", "parts")

    def __init__(self, chars: int) -> None:
        self.chars = chars
        self.parts = MAX_PROMPT_PARTS

    def text(self, text: str) -> Part:
        kept = text[: max(self.chars, 0)]
        self.chars -= len(kept)
        return Part("text", kept)


def _parts(content: object, budget: _Budget) -> tuple[Part, ...]:
    """Message content as parts: text kept within the budget, other parts by type only."""
    if isinstance(content, str):
        budget.parts -= 1
        return (budget.text(content),) if budget.parts >= 0 else ()
    parts: list[Part] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            budget.parts -= 1
            if budget.parts < 0:
                break
            text = block.get("text")
            if isinstance(text, str):
                parts.append(budget.text(text))
            else:
                parts.append(Part(cap(str(block.get("type", "unknown")))))
    return tuple(parts)


def read_prompt(body: bytes, limit: int) -> Prompt | None:
    """The prompt of a JSON request body, text cut to ``limit`` characters in total; None if the
    body is not a JSON object or has neither messages nor system instructions."""
    try:
        request = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    return prompt_of(request, limit) if isinstance(request, dict) else None


def prompt_of(request: dict[str, Any], limit: int) -> Prompt | None:
    """:func:`read_prompt` of a body already parsed (the proxy parses each body once)."""
    budget = _Budget(limit)
    system = request.get("system", request.get("instructions"))
    system_parts = _parts(system, budget) if system is not None else None
    messages = request.get("messages", request.get("input"))
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    read: tuple[Message, ...] | None = None
    if isinstance(messages, list):
        read = tuple(
            Message(cap(str(m.get("role", "user"))), _parts(m.get("content"), budget))
            for m in messages[:MAX_PROMPT_MESSAGES]
            if isinstance(m, dict)
        )
    if system_parts is None and read is None:
        return None
    return Prompt(system_parts, read)
