"""What a chat backend may yield besides text: the typed parts of a reply.

A backend's ``stream(messages)`` yields ``str`` pieces of text and any of these. Each
part except :class:`Usage` and :class:`Finish` becomes one entry of the generation's log,
so resume, replay, stop, the caps and Redis hold for parts exactly as for text; every
protocol frames the entry in its own wire format (see the table in the docs).

Parts are frozen and checked when they are made (like h11's events): a malformed part
fails in the backend that made it, never half-way through a client's stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Data",
    "Finish",
    "Part",
    "Reasoning",
    "Source",
    "ToolCall",
    "ToolResult",
    "Usage",
]

_DATA_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the AI SDK's chunk type is "data-<name>"


def _require_text(owner: str, field: str, value: Any, *, empty: bool = False) -> None:
    if not isinstance(value, str) or (not empty and not value):
        raise TypeError(f"{owner}.{field} must be a {'' if empty else 'non-empty '}str, "
                        f"not {value!r}")


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's reasoning ("thinking"), streamed like text."""

    text: str

    def __post_init__(self) -> None:
        _require_text("Reasoning", "text", self.text, empty=True)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model calls the tool ``name`` with ``arguments`` (a JSON object).

    ``id`` ties the call to its :class:`ToolResult`. A call that gets no result in the
    reply is a client-side tool: the reply ends with ``finish_reason: "tool_calls"`` and
    the client's next request carries the result.
    """

    id: str
    name: str
    arguments: dict[str, Any]

    def __post_init__(self) -> None:
        _require_text("ToolCall", "id", self.id)
        _require_text("ToolCall", "name", self.name)
        if not isinstance(self.arguments, dict):
            raise TypeError(f"ToolCall.arguments must be a dict, not {self.arguments!r}")


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The result (any JSON value) of the call ``id``, or its ``error`` text."""

    id: str
    result: Any = None
    error: str | None = None

    def __post_init__(self) -> None:
        _require_text("ToolResult", "id", self.id)
        if self.error is not None:
            _require_text("ToolResult", "error", self.error, empty=True)
            if self.result is not None:
                raise ValueError("a ToolResult has a result or an error, not both")


@dataclass(frozen=True, slots=True)
class Data:
    """An app-defined JSON value for the page (progress, a chart, citations).

    ``name`` (1 to 64 characters of ``A-Z a-z 0-9 _ -``) says what it is: the AI SDK
    shows it as a ``data-<name>`` part.
    """

    name: str
    data: Any

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or _DATA_NAME.fullmatch(self.name) is None:
            raise ValueError(f"Data.name must be 1 to 64 characters of A-Z a-z 0-9 _ -, "
                             f"not {self.name!r}")


@dataclass(frozen=True, slots=True)
class Source:
    """A source the reply draws on: a URL and, optionally, its title."""

    url: str
    title: str | None = None

    def __post_init__(self) -> None:
        _require_text("Source", "url", self.url)
        if self.title is not None:
            _require_text("Source", "title", self.title, empty=True)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token accounting for one reply, as reported by the backend.

    Not a log entry: it is carried by the reply's end (the ``close`` event, the AI SDK
    ``finish`` chunk's metadata, OpenAI's ``usage``). Any field may be None when the
    server did not say.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        """The counts as a JSON-ready dict (the shape OpenAI uses for ``usage``)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Finish:
    """Why the model stopped, when it said so (the OpenAI ``finish_reason``).

    Not a log entry: every protocol carries ``reason`` at the reply's end, so
    ``"length"`` (cut at the token limit), ``"content_filter"`` or ``"tool_calls"`` are
    not reported as a normal ``"stop"``. Without one, a reply that ends normally
    finishes with ``"stop"``, or ``"tool_calls"`` when a tool call got no result.
    """

    reason: str


Part = Reasoning | ToolCall | ToolResult | Data | Source
