"""Fast tier: framing log entries for other protocols, request mapping and the caps, in
process (Flask's test client; no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from flask_sse_stream import SSE
from flask_sse_stream.chat import (
    DemoBackend,
    create_ai_sdk_blueprint,
    create_chat_blueprint,
    create_openai_blueprint,
)
from flask_sse_stream.chat.entries import parse_entries, parse_entry
from flask_sse_stream.chat.protocols.ai_sdk import FollowerSink
from flask_sse_stream.chat.protocols.ai_sdk_messages import ui_messages
from flask_sse_stream.chat.protocols.ai_sdk_stream import UIMessageFramer
from flask_sse_stream.chat.protocols.openai_chat import ChatChunkFramer
from flask_sse_stream.chat.service import GenerationCaps
from flask_sse_stream.chat.validation import ChatInputError, ChatLimits
from flask_sse_stream.wire.event import Event
from tests.sse_parser import parse


def encode_entry(stream_id: str, seq: int, data: dict[str, Any], event: str | None) -> bytes:
    """A log entry as the log encodes it (chat/entries.py)."""
    return Event(data, event=event, id=f"{stream_id}:{seq}").encode()


def test_entries_read_back_exactly() -> None:
    piece = encode_entry("abcdefgh", 3, {"content": "multi\nline “ü”\r\n"}, None)
    close = encode_entry("abcdefgh", 4, {"finish_reason": "length"}, "close")
    entry = parse_entry(piece)
    assert (entry.stream_id, entry.seq, entry.content, entry.close) == \
        ("abcdefgh", 3, "multi\nline “ü”\r\n", False)
    assert [e.data for e in parse_entries(piece + close)] == \
        [{"content": "multi\nline “ü”\r\n"}, {"finish_reason": "length"}]
    assert parse_entries(piece + close)[1].close


def test_openai_chunks_carry_no_id_field_and_end_with_done() -> None:
    framer = ChatChunkFramer("chatcmpl-x", "m", include_usage=True)
    raw = framer.opening() + b"".join(framer.frame(entry) for entry in parse_entries(
        encode_entry("s", 1, {"content": "hi"}, None)
        + encode_entry("s", 2, {"finish_reason": "length"}, "close")))
    events = parse(raw).events
    assert all(e.last_event_id == "" for e in events)
    assert events[-1].data == "[DONE]"
    finish = json.loads(events[-3].data)
    assert finish["choices"][0]["finish_reason"] == "length"
    assert json.loads(events[-2].data)["choices"] == []  # the usage chunk


LIMITS = ChatLimits(max_chars=100, max_messages=5)


def test_ui_messages_keep_the_conversation_and_only_text() -> None:
    messages = ui_messages([
        {"id": "1", "role": "system", "parts": [{"type": "text", "text": "be kind"}]},
        {"id": "2", "role": "user", "parts": [{"type": "text", "text": "a"},
                                              {"type": "file", "url": "x"},
                                              {"type": "text", "text": "b"}]},
        {"id": "3", "role": "assistant", "parts": [{"type": "reasoning", "text": "hmm"}]},
        {"id": "4", "role": "assistant", "parts": [{"type": "text", "text": "c"}]},
        {"id": "5", "role": "user", "parts": [{"type": "text", "text": "d"}]},
    ], LIMITS)
    assert messages == [{"role": "system", "content": "be kind"},
                        {"role": "user", "content": "ab"},
                        {"role": "assistant", "content": "c"},
                        {"role": "user", "content": "d"}]


@pytest.mark.parametrize("value", [
    None, [], [{"role": "user", "content": "x"}], [{"role": "user", "parts": "x"}],
    [{"role": "user", "parts": [{"type": "text"}]}],
    [{"role": ["user"], "parts": [{"type": "text", "text": "x"}]}],  # unhashable role
    [{"role": "user", "parts": [{"type": "text", "text": "x" * 101}]}],
    [{"role": "user", "parts": [{"type": "text", "text": "x"}]}] * 6,
])
def test_bad_ui_messages_are_refused(value: Any) -> None:
    with pytest.raises(ChatInputError) as info:
        ui_messages(value, LIMITS)
    assert info.value.status in (400, 413)


def test_caps_count_per_caller_and_in_total() -> None:
    caps = GenerationCaps(total=3, per_caller=2)
    assert caps.acquire("a") and caps.acquire("a")
    assert not caps.acquire("a")
    assert caps.acquire("b")
    assert not caps.acquire("c")  # the total
    caps.release("a")
    assert caps.acquire("c")
    assert caps.by_caller == {"a": 1, "b": 1, "c": 1}


def make_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    SSE(app)
    backend = DemoBackend(delay=0)
    app.register_blueprint(create_chat_blueprint(backend), url_prefix="/chat")
    app.register_blueprint(create_ai_sdk_blueprint(backend), url_prefix="/api/chat")
    app.register_blueprint(create_openai_blueprint(backend, model="demo"), url_prefix="/v1")
    return app


def test_the_ai_sdk_route_takes_the_bare_prefix_without_a_redirect() -> None:
    client = make_app().test_client()
    body = {"id": "c", "messages": [{"id": "1", "role": "user",
                                     "parts": [{"type": "text", "text": "hi"}]}]}
    for path in ("/api/chat", "/api/chat/"):
        response = client.post(path, json=body)
        assert response.status_code == 200
        assert response.get_data().endswith(b"data: [DONE]\n\n")


def test_openai_non_stream_in_process() -> None:
    client = make_app().test_client()
    response = client.post("/v1/chat/completions",
                           json={"messages": [{"role": "user", "content": "hi"}]})
    body = response.get_json()
    assert body["object"] == "chat.completion" and body["model"] == "demo"
    assert body["choices"][0]["message"]["content"] == DemoBackend.reply_for(
        [{"role": "user", "content": "hi"}])
    bad = client.post("/v1/chat/completions", json={"messages": "x", "stream": "yes"})
    assert bad.status_code == 400 and bad.get_json()["error"]["type"] == "invalid_request_error"


def test_a_batch_handed_over_at_once_is_framed_entry_by_entry() -> None:
    """The Redis reader hands a burst of log entries to a follower as one chunk: every
    entry in it must reach an AI SDK client (found by the chaos run: words missing from
    replies resumed during bursts)."""
    from flask_sse_stream.runtime.threads import ThreadMailbox

    inner = ThreadMailbox(10)
    sink = FollowerSink(inner, UIMessageFramer().follower())
    assert sink.begin(b"") == b""
    batch = b"".join(encode_entry("s", n, {"content": w}, None)
                     for n, w in enumerate(["one ", "two ", "three"], start=1))
    assert sink.offer(batch)
    framed = b"".join(inner.take(0) or [])
    deltas = [json.loads(e.data)["delta"] for e in parse(framed).events
              if json.loads(e.data).get("type") == "text-delta"]
    assert deltas == ["one ", "two ", "three"]


def test_live_entries_handed_over_before_the_prelude_is_framed_come_after_it() -> None:
    """The Redis store may hand a follower live entries while it still reads the replay;
    the AI SDK follower frames each entry after the one before, so they wait for the
    prelude: one text run, in log order, opened once."""
    from flask_sse_stream.runtime.threads import ThreadMailbox

    inner = ThreadMailbox(10)
    sink = FollowerSink(inner, UIMessageFramer().follower())
    words = ["zero ", "one ", "two ", "three"]
    entries = [encode_entry("s", n, {"content": w}, None) for n, w in enumerate(words, 1)]
    assert sink.offer(entries[2]) and sink.offer(entries[3])  # live, before the prelude
    assert inner.take(0) is None  # held, not framed yet
    body = sink.begin(entries[0] + entries[1]) + b"".join(inner.take(0) or [])
    chunks = [json.loads(e.data) for e in parse(body).events]
    assert [c["type"] for c in chunks] == ["text-start", *["text-delta"] * 4]
    assert "".join(c["delta"] for c in chunks[1:]) == "".join(words)
    assert sink.offer(encode_entry("s", 5, {"finish_reason": "stop"}, "close"))
    end = [e.data if e.data == "[DONE]" else json.loads(e.data)["type"]
           for e in parse(b"".join(inner.take(0) or [])).events]
    assert end == ["text-end", "finish-step", "finish", "[DONE]"]
