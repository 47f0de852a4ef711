"""One entry of a generation's log: how it is encoded, and how it is read back.

The log stores every entry once, encoded as this project's own chat protocol (the native
SSE events), and the same bytes go to every native follower, local or on another host:

========================  ===================  =========================================
what the backend yielded  ``event:``           ``data:`` (compact JSON)
========================  ===================  =========================================
``str``                   (none: ``message``)  ``{"content"}``
``Reasoning``             ``reasoning``        ``{"content"}``
``ToolCall``              ``tool-call``        ``{"id", "name", "arguments"}``
``ToolResult``            ``tool-result``      ``{"id", "result"}`` or ``{"id", "error"}``
``Data``                  ``data``             ``{"name", "data"}``
``Source``                ``source``           ``{"url", "title"}``
the end                   ``close``            ``{"finish_reason", "error"?, "usage"?}``
========================  ===================  =========================================

Every entry has ``id: <stream_id>:<seq>`` (seq from 1). Other protocols read entries back
with :func:`parse_entry` and frame them for their wire (``protocols/framing.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..wire.event import encode_message
from .parts import Data, Part, Reasoning, Source, ToolCall, ToolResult

__all__ = [
    "CLOSE",
    "DATA",
    "KINDS",
    "REASONING",
    "SOURCE",
    "TEXT",
    "TOOL_CALL",
    "TOOL_RESULT",
    "Entry",
    "encode_close",
    "encode_entry",
    "entry_fields",
    "parse_entries",
    "parse_entry",
]

TEXT = "text"
REASONING = "reasoning"
TOOL_CALL = "tool-call"
TOOL_RESULT = "tool-result"
DATA = "data"
SOURCE = "source"
CLOSE = "close"
KINDS = frozenset({TEXT, REASONING, TOOL_CALL, TOOL_RESULT, DATA, SOURCE, CLOSE})


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry read back: its kind (the native event name, ``text`` for the
    default ``message`` event) and its JSON data."""

    stream_id: str
    seq: int
    kind: str
    data: dict[str, Any]

    @property
    def close(self) -> bool:
        return self.kind == CLOSE

    @property
    def content(self) -> str:
        """The text of a ``text`` or ``reasoning`` entry."""
        return str(self.data.get("content") or "")


def entry_fields(item: str | Part) -> tuple[str | None, dict[str, Any]]:
    """The native event name (None for text) and data of what a backend yielded."""
    if isinstance(item, str):
        return None, {"content": item}
    if isinstance(item, Reasoning):
        return REASONING, {"content": item.text}
    if isinstance(item, ToolCall):
        return TOOL_CALL, {"id": item.id, "name": item.name, "arguments": item.arguments}
    if isinstance(item, ToolResult):
        if item.error is not None:
            return TOOL_RESULT, {"id": item.id, "error": item.error}
        return TOOL_RESULT, {"id": item.id, "result": item.result}
    if isinstance(item, Data):
        return DATA, {"name": item.name, "data": item.data}
    if isinstance(item, Source):
        return SOURCE, {"url": item.url, "title": item.title}
    raise TypeError(f"not a reply part: {item!r}")


def encode_entry(stream_id: str, seq: int, item: str | Part) -> bytes:
    """The log's bytes for ``item``; ``TypeError`` if a value is not JSON."""
    event, data = entry_fields(item)
    return encode_message(data, event, f"{stream_id}:{seq}")


def encode_close(stream_id: str, seq: int, data: dict[str, Any]) -> bytes:
    """The log's last entry: ``event: close`` with the reply's end (finish reason, ...)."""
    return encode_message(data, CLOSE, f"{stream_id}:{seq}")


def parse_entry(chunk: bytes) -> Entry:
    """Read back one entry as :func:`encode_entry` wrote it (compact JSON data: one
    ``data:`` line)."""
    stream_id, seq, kind, data = "", 0, TEXT, ""
    for line in chunk.decode("utf-8").split("\n"):
        name, _, value = line.partition(": ")
        if name == "id":
            stream_id, _, number = value.rpartition(":")
            seq = int(number)
        elif name == "event":
            kind = value
        elif name == "data":
            data = value
    return Entry(stream_id, seq, kind, json.loads(data) if data else {})


def parse_entries(chunks: bytes) -> list[Entry]:
    """The entries of a prelude or a batch (entries joined, each ending with a blank
    line)."""
    return [parse_entry(part) for part in chunks.split(b"\n\n") if part.strip()]
