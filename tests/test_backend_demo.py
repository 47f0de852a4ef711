"""DemoBackend(parts=True): every kind of part, offline and deterministic, and the
client-side tool round trip; the default mode is unchanged (tests/test_backends.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from flask_sse_stream.chat import (
    Data,
    DemoBackend,
    Finish,
    Reasoning,
    Source,
    ToolCall,
    ToolResult,
    Usage,
)
from flask_sse_stream.chat.backends.demo import DEMO_SOURCE, word_count

ASK = {"type": "function", "function": {"name": "ask_user", "parameters": {
    "type": "object",
    "properties": {"question": {"type": "string"}, "count": {"type": "integer"},
                   "sure": {"type": "boolean"}, "tone": {"enum": ["kind", "blunt"]},
                   "optional": {"type": "string"}},
    "required": ["question", "count", "sure", "tone"],
}}}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def kinds(items: list[Any]) -> list[str]:
    """The item kinds in order, runs of the same kind folded into one."""
    out: list[str] = []
    for item in items:
        name = type(item).__name__
        if not out or out[-1] != name:
            out.append(name)
    return out


def test_parts_mode_shows_every_part_in_order() -> None:
    messages = user("How do server-sent events work?")
    items = list(DemoBackend(delay=0, parts=True).stream(messages))
    assert kinds(items) == ["Reasoning", "ToolCall", "ToolResult", "Source", "Data", "str",
                            "Usage"]
    reasoning = "".join(p.text for p in items if isinstance(p, Reasoning))
    assert reasoning == DemoBackend.reasoning_for(messages)
    assert "".join(p for p in items if isinstance(p, str)) == DemoBackend.reply_for(messages)
    [call] = [p for p in items if isinstance(p, ToolCall)]
    counts = word_count("How do server-sent events work?")
    assert call.name == "word_count" and call.arguments == {"text": messages[0]["content"]}
    assert [p for p in items if isinstance(p, ToolResult)] == [ToolResult(call.id, counts)]
    assert [p for p in items if isinstance(p, Source)] == [DEMO_SOURCE]
    assert [p for p in items if isinstance(p, Data)] == [Data("word-count", counts)]
    assert items == list(DemoBackend(delay=0, parts=True).stream(messages))  # deterministic


def test_parts_mode_sleeps_before_each_streamed_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    items = list(DemoBackend(delay=0.25, parts=True).stream(user("hi")))
    streamed = [p for p in items if isinstance(p, str | Reasoning | ToolCall | ToolResult
                                               | Source)]
    assert calls == [0.25] * len(streamed)


def test_default_mode_ignores_request_tools() -> None:
    messages = user("plain")
    items = list(DemoBackend(delay=0).stream(messages, tools=[ASK]))
    assert kinds(items) == ["str", "Usage"]
    assert "".join(p for p in items if isinstance(p, str)) == DemoBackend.reply_for(messages)


def test_parts_mode_calls_a_client_tool_of_the_request() -> None:
    items = list(DemoBackend(delay=0, parts=True).stream(user("two words"), tools=[ASK]))
    assert kinds(items) == ["Reasoning", "ToolCall", "Finish", "Usage"]
    [call] = [p for p in items if isinstance(p, ToolCall)]
    assert call.name == "ask_user"
    assert call.arguments == {"question": "two words", "count": 2, "sure": True,
                              "tone": "kind"}
    assert Finish("tool_calls") in items
    with_none = list(DemoBackend(delay=0, parts=True).stream(user("x"), tools=[ASK],
                                                             tool_choice="none"))
    assert [p.name for p in with_none if isinstance(p, ToolCall)] == ["word_count"]


def test_parts_mode_answers_the_client_tool_result() -> None:
    messages = [
        *user("two words"),
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "ask_user", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "yes, go ahead"},
    ]
    items = list(DemoBackend(delay=0, parts=True).stream(messages, tools=[ASK]))
    assert kinds(items) == ["str", "Usage"]
    text = "".join(p for p in items if isinstance(p, str))
    assert text.startswith("The tool answered: yes, go ahead.")
    assert isinstance(items[-1], Usage)
