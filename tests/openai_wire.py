"""Fixed replies as the generation log holds them, framed for the OpenAI wire formats,
and read back as a client's SSE parser reads them (shared by the unit tests and the
end-to-end check with the real SDKs)."""

from __future__ import annotations

import json
from typing import Any

from flask_sse_stream.chat import Reasoning, ToolCall, ToolResult
from flask_sse_stream.chat.entries import Entry, encode_close, encode_entry, parse_entry
from flask_sse_stream.chat.parts import Data, Part, Source
from flask_sse_stream.chat.protocols.openai_chat import ChatChunkFramer
from flask_sse_stream.chat.protocols.openai_responses import ResponseEventFramer
from tests.sse_parser import parse

STREAM_ID = "wireTest0001"
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
WEATHER = {"city": "Zürich", "when": ["today", "tomorrow"], "note": "line\nbreak \u2028"}


def reply(*items: str | Part, close: dict[str, Any] | None = None) -> list[Entry]:
    """The entries of a reply that yielded ``items`` and ended with ``close``, each
    encoded by the log and read back (what every framer gets)."""
    entries = [parse_entry(encode_entry(STREAM_ID, seq, item))
               for seq, item in enumerate(items, 1)]
    end = close if close is not None else {"finish_reason": "stop", "usage": USAGE}
    entries.append(parse_entry(encode_close(STREAM_ID, len(items) + 1, end)))
    return entries


SCENARIOS: dict[str, list[Entry]] = {
    "text": reply("Hello", ", wor", "ld!"),
    "reasoning": reply(Reasoning("Let me "), Reasoning("think."), "The answer", " is 42."),
    "client_tool": reply(
        Reasoning("I need the weather."), "Checking.",
        ToolCall("call_a", "get_weather", WEATHER), ToolCall("call_b", "get_time", {}),
        close={"finish_reason": "tool_calls", "usage": USAGE}),
    "server_tool": reply(
        "Let me look. ", ToolCall("call_s", "lookup", {"q": "x"}), Data("progress", 50),
        ToolResult("call_s", result={"found": True}), Source("https://example.com", "Ex"),
        "Found it."),
    "failure": reply("Half a rep", close={"finish_reason": "error", "error": "upstream broke"}),
    "cancel": reply(Reasoning("hm"), "Stopped mid",
                    close={"finish_reason": "cancelled"}),
}
TEXTS = {"text": "Hello, world!", "reasoning": "The answer is 42.", "client_tool": "Checking.",
         "server_tool": "Let me look. Found it.", "failure": "Half a rep",
         "cancel": "Stopped mid"}


def with_heartbeats(frames: list[bytes], heartbeat: bytes) -> bytes:
    """``frames`` with ``heartbeat`` before, between and after every event in them (a
    frame may hold several events), as a stream's heartbeat comments may fall."""
    events = [event + b"\n\n" for frame in frames for event in frame.split(b"\n\n")
              if event]
    return heartbeat + heartbeat.join(events) + heartbeat


def chat_stream(entries: list[Entry], *, include_usage: bool = False,
                heartbeat: bytes = b"") -> bytes:
    """The whole streamed Chat Completions body for ``entries`` (``heartbeat`` around
    every event, as the stream's heartbeat comments may come)."""
    framer = ChatChunkFramer(f"chatcmpl-{STREAM_ID}", "wire-model",
                             include_usage=include_usage, created=1_700_000_000)
    return with_heartbeats([framer.opening(), *(framer.frame(entry) for entry in entries)],
                           heartbeat)


def responses_stream(entries: list[Entry], *, echo: dict[str, Any] | None = None,
                     heartbeat: bytes = b"") -> bytes:
    """The whole streamed Responses body for ``entries``."""
    framer = ResponseEventFramer(f"resp_{STREAM_ID}", "wire-model", echo=echo,
                                 created_at=1_700_000_000)
    return with_heartbeats([framer.opening(), *(framer.frame(entry) for entry in entries)],
                           heartbeat)


def sse(raw: bytes) -> list[tuple[str, str]]:
    """``(event type, data)`` of every event in ``raw``, parsed by the spec's algorithm."""
    return [(event.type, event.data) for event in parse(raw).events]


def sse_json(raw: bytes) -> list[tuple[str, Any]]:
    """Like :func:`sse` with each data decoded (``[DONE]`` kept as the string)."""
    return [(kind, data if data == "[DONE]" else json.loads(data)) for kind, data in sse(raw)]
