"""Replies with parts as generation logs, framed by the AI SDK framer: the cases that the
unit tests (tests/test_ai_sdk_stream.py) and the real ``ai`` releases
(tests/test_ai_sdk_node.py) both read."""

from __future__ import annotations

from typing import Any

from flask_sse_stream.chat.entries import encode_close, encode_entry
from flask_sse_stream.chat.parts import Data, Part, Reasoning, Source, ToolCall, ToolResult
from flask_sse_stream.chat.protocols.ai_sdk_stream import UIMessageFramer

STREAM_ID = "s7Hq2xLp"
WEATHER = {"city": "Paris", "temperature": 21, "sky": "sunny ☀"}

# name: (what the backend yielded, the close entry's data)
REPLIES: dict[str, tuple[list[str | Part], dict[str, Any]]] = {
    "text": (["Hel", "lo, wörld 👋", "\nline two"], {"finish_reason": "stop",
             "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}),
    "reasoning": ([Reasoning("The user greets; "), Reasoning("answer politely."),
                   "Hello", " there"], {"finish_reason": "stop"}),
    "server_tools": ([
        Reasoning("Two cities: call the tool twice."),
        "Let me check.",
        ToolCall("call_a", "weather", {"city": "Paris"}),
        ToolCall("call_b", "weather", {"city": "Oslo"}),
        ToolResult("call_a", result=WEATHER),
        ToolResult("call_b", result={"city": "Oslo", "temperature": -3}),
        Reasoning("Both known."),
        "Paris is 21 °C, ", "Oslo -3 °C.",
    ], {"finish_reason": "stop"}),
    "client_tool": (["I will ask your browser.", ToolCall("call_c", "getLocation", {})],
                    {"finish_reason": "tool_calls"}),
    "tool_error": ([ToolCall("call_e", "weather", {"city": "Atlantis"}),
                    ToolResult("call_e", error="unknown city: Atlantis"),
                    "I could not find Atlantis."], {"finish_reason": "stop"}),
    "data_sources": ([Data("progress", {"done": 1, "of": 2}),
                      Source("https://example.org/a?x=1&y=2", "Example A"),
                      Source("https://example.org/b"),
                      "According to the sources, yes.",
                      Data("chart", [1, 2.5, None, "three"])], {"finish_reason": "stop"}),
    "error_close": (["Partial answ"], {"finish_reason": "error",
                                      "error": "upstream failed: 502 Bad Gateway"}),
    "cancelled": ([Reasoning("thinking"), "Cut off mid"], {"finish_reason": "cancelled"}),
    "expired": ([], {"finish_reason": "error", "error": "this reply expired"}),
    "length": (["cut at the token limit"], {"finish_reason": "length"}),
    # a server-side tool, then a client-side one in the next step (the browser test)
    "two_tools": ([Reasoning("Weather first, then where you are."),
                   ToolCall("call_w", "weather", {"city": "Paris"}),
                   ToolResult("call_w", result=WEATHER),
                   "Now your location.", ToolCall("call_c", "getLocation", {})],
                  {"finish_reason": "tool_calls"}),
    # the reply after the client posted getLocation's output (a new generation)
    "after_tool": (["You are in ", "Paris."], {"finish_reason": "stop"}),
}
LOCATION = {"city": "Paris", "lat": 48.86, "lon": 2.35}


def log_of(items: list[str | Part], close: dict[str, Any],
           stream_id: str = STREAM_ID) -> list[bytes]:
    """The generation log's entries for ``items`` then the close, as the runner writes
    them (seq from 1)."""
    entries = [encode_entry(stream_id, seq, item) for seq, item in enumerate(items, 1)]
    return [*entries, encode_close(stream_id, len(items) + 1, close)]


def framed(name: str, *, message_id: str | None = None, stream_id: str = STREAM_ID,
           framer: UIMessageFramer | None = None, upto: int | None = None) -> bytes:
    """The body a client of reply ``name`` gets: the opening and every entry (or the
    first ``upto``) framed by one follower."""
    items, close = REPLIES[name]
    follower = (framer or UIMessageFramer()).follower()
    entries = log_of(items, close, stream_id)[:upto]
    return follower.opening(message_id or stream_id) + follower.frame_many(b"".join(entries))
