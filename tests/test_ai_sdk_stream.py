"""Fast tier: the AI SDK framer (log entries -> UI message chunks), fed entry lists.

What the real ``ai`` releases make of these chunks is tests/test_ai_sdk_node.py; here:
the exact chunk sequences, the step and run rules, that the frames are a pure function of
(previous kind, entry) so one cached frame serves every follower, and (fuzzed) that any
reply frames into a sequence the SDK's stream processor accepts."""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_sse_stream.chat.entries import encode_close, encode_entry, parse_entry
from flask_sse_stream.chat.parts import Data, Part, Reasoning, Source, ToolCall, ToolResult
from flask_sse_stream.chat.protocols import ai_sdk_stream
from flask_sse_stream.chat.protocols.ai_sdk_stream import (
    DONE,
    UIMessageFramer,
    frame_entry,
)
from tests.ai_sdk_cases import REPLIES, STREAM_ID, framed, log_of
from tests.sse_parser import parse

S = STREAM_ID


def chunks(body: bytes) -> list[Any]:
    """The data payloads, JSON-decoded (``[DONE]`` as is); every payload is one line."""
    assert body.endswith(DONE)
    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in parse(body).events]


def types(body: bytes) -> list[str]:
    return [c if c == "[DONE]" else c["type"] for c in chunks(body)]


T_START, T_END = {"type": "text-start", "id": "text-0"}, {"type": "text-end", "id": "text-0"}
R_START = {"type": "reasoning-start", "id": "reasoning-0"}
R_END = {"type": "reasoning-end", "id": "reasoning-0"}
OPEN = [{"type": "start", "messageId": S}, {"type": "start-step"}]
STEP = [{"type": "finish-step"}, {"type": "start-step"}]


def text(delta: str) -> dict[str, str]:
    return {"type": "text-delta", "id": "text-0", "delta": delta}


def reasoning(delta: str) -> dict[str, str]:
    return {"type": "reasoning-delta", "id": "reasoning-0", "delta": delta}


def test_a_text_reply_is_one_text_run_then_the_finish_with_usage() -> None:
    assert chunks(framed("text")) == [
        *OPEN, T_START, text("Hel"), text("lo, wörld 👋"), text("\nline two"), T_END,
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop", "messageMetadata": {"usage": {
            "prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}},
        "[DONE]"]


def test_reasoning_then_text_are_two_runs() -> None:
    assert chunks(framed("reasoning")) == [
        *OPEN, R_START, reasoning("The user greets; "), reasoning("answer politely."), R_END,
        T_START, text("Hello"), text(" there"), T_END,
        {"type": "finish-step"}, {"type": "finish", "finishReason": "stop"}, "[DONE]"]


def test_server_side_tools_then_the_next_model_call_in_a_new_step() -> None:
    paris = {"toolCallId": "call_a", "toolName": "weather"}
    oslo = {"toolCallId": "call_b", "toolName": "weather"}
    got = chunks(framed("server_tools"))
    assert got[5:18] == [
        T_START, text("Let me check."), T_END,
        {"type": "tool-input-start", **paris},
        {"type": "tool-input-available", **paris, "input": {"city": "Paris"}},
        {"type": "tool-input-start", **oslo},
        {"type": "tool-input-available", **oslo, "input": {"city": "Oslo"}},
        {"type": "tool-output-available", "toolCallId": "call_a",
         "output": {"city": "Paris", "temperature": 21, "sky": "sunny ☀"}},
        {"type": "tool-output-available", "toolCallId": "call_b",
         "output": {"city": "Oslo", "temperature": -3}},
        *STEP, R_START, reasoning("Both known.")]
    assert types(framed("server_tools")).count("start-step") == 2


def test_a_client_side_tool_call_ends_the_reply_with_tool_calls() -> None:
    call = {"toolCallId": "call_c", "toolName": "getLocation"}
    assert chunks(framed("client_tool"))[5:] == [
        {"type": "tool-input-start", **call},
        {"type": "tool-input-available", **call, "input": {}},
        {"type": "finish-step"}, {"type": "finish", "finishReason": "tool-calls"}, "[DONE]"]


def test_a_tool_error_is_tool_output_error() -> None:
    assert chunks(framed("tool_error"))[4:7] == [
        {"type": "tool-output-error", "toolCallId": "call_e",
         "errorText": "unknown city: Atlantis"}, *STEP]


def test_data_and_sources() -> None:
    got = chunks(framed("data_sources"))
    assert got[2:5] == [
        {"type": "data-progress", "data": {"done": 1, "of": 2}},
        {"type": "source-url", "sourceId": f"{S}:2", "url": "https://example.org/a?x=1&y=2",
         "title": "Example A"},
        {"type": "source-url", "sourceId": f"{S}:3", "url": "https://example.org/b"}]
    assert got[8] == {"type": "data-chart", "data": [1, 2.5, None, "three"]}


@pytest.mark.parametrize(("name", "ending"), [
    ("error_close", [T_END, {"type": "finish-step"},
                     {"type": "error", "errorText": "upstream failed: 502 Bad Gateway"},
                     {"type": "finish", "finishReason": "error"}, "[DONE]"]),
    ("cancelled", [T_END, {"type": "finish-step"}, {"type": "abort"}, "[DONE]"]),
    ("expired", [{"type": "start-step"}, {"type": "finish-step"},
                 {"type": "error", "errorText": "this reply expired"},
                 {"type": "finish", "finishReason": "error"}, "[DONE]"]),
    ("length", [T_END, {"type": "finish-step"},
                {"type": "finish", "finishReason": "length"}, "[DONE]"]),
])
def test_every_ending(name: str, ending: list[Any]) -> None:
    assert chunks(framed(name))[-len(ending):] == ending


@pytest.mark.parametrize(("reason", "sdk"), [
    ("content_filter", "content-filter"), ("function_call", "tool-calls"),
    ("something_new", "other"), (None, "stop")])
def test_finish_reasons_as_the_sdk_spells_them(reason: str | None, sdk: str) -> None:
    close = parse_entry(encode_close(S, 1, {"finish_reason": reason}))
    assert chunks(frame_entry(None, close))[1] == {"type": "finish", "finishReason": sdk}


def test_a_continuation_opens_with_the_message_it_continues() -> None:
    assert chunks(UIMessageFramer().opening("msg-1") + DONE)[:2] == \
        [{"type": "start", "messageId": "msg-1"}, {"type": "start-step"}]


def test_consecutive_tool_results_stay_in_one_step_and_a_close_starts_none() -> None:
    items: list[str | Part] = [ToolCall("a", "t", {}), ToolCall("b", "t", {}),
                               ToolResult("a", result=1), ToolResult("b", result=None)]
    body = frames(items, {"finish_reason": "stop"})
    assert types(body) == [
        "start", "start-step", "tool-input-start", "tool-input-available",
        "tool-input-start", "tool-input-available", "tool-output-available",
        "tool-output-available", "finish-step", "finish", "[DONE]"]
    assert chunks(body)[7] == {"type": "tool-output-available", "toolCallId": "b",
                               "output": None}


def test_an_unknown_entry_kind_is_skipped_but_still_ends_a_run() -> None:
    entries = [encode_entry(S, 1, "a"), b"event: hologram\nid: %s:2\ndata: {}\n\n" % S.encode(),
               encode_entry(S, 3, "b"), encode_close(S, 4, {"finish_reason": "stop"})]
    follower = UIMessageFramer().follower()
    assert types(follower.opening(S) + follower.frame_many(b"".join(entries)))[2:8] == \
        ["text-start", "text-delta", "text-end", "text-start", "text-delta", "text-end"]


def frames(items: list[str | Part], close: dict[str, Any]) -> bytes:
    follower = UIMessageFramer().follower()
    return follower.opening(S) + follower.frame_many(b"".join(log_of(items, close)))


def test_a_frame_is_a_pure_function_of_the_previous_kind_and_the_entry() -> None:
    for name in REPLIES:
        entries = [parse_entry(c) for c in log_of(*REPLIES[name])]
        kinds = [None, *(e.kind for e in entries)]
        expected = UIMessageFramer().opening(S) + b"".join(
            frame_entry(previous, entry) for previous, entry in zip(kinds, entries, strict=False))
        assert framed(name) == expected, name


def test_one_cached_frame_per_entry_shared_by_every_follower(
        monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []

    def counting(chunk: bytes) -> Any:
        parsed.append(chunk)
        return parse_entry(chunk)

    monkeypatch.setattr(ai_sdk_stream, "parse_entry", counting)
    framer = UIMessageFramer()
    log = log_of(*REPLIES["server_tools"])
    bodies = set()
    frames_of_one_entry = []
    for _ in range(50):
        follower = framer.follower()
        out = [follower.frame(bytes(chunk)) for chunk in log]  # equal bytes, new objects
        frames_of_one_entry.append(out[-2])  # a text delta inside a run
        bodies.add(b"".join(out))
    assert len(parsed) == len(log) and len(bodies) == 1
    assert all(f is frames_of_one_entry[0] for f in frames_of_one_entry)  # no copy per follower


def test_the_cache_is_bounded() -> None:
    framer = UIMessageFramer(cache_size=8)
    follower = framer.follower()
    for seq in range(1, 100):
        follower.frame(encode_entry(S, seq, f"piece {seq}"))
    assert framer.body(encode_entry(S, 1, "again"))[0] == "text"
    assert 0 < len(framer._cache) <= 8  # white-box: the bound itself


# -- fuzz: any reply frames into what the SDK's stream processor accepts ---------------

_text = st.text(max_size=20)  # all of Unicode but lone surrogates (the log maps those)
_json = st.recursive(st.none() | st.booleans() | st.integers() | _text,
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_text, inner, max_size=3), max_leaves=8)


@st.composite
def replies(draw: st.DrawFn) -> tuple[list[str | Part], dict[str, Any]]:
    items: list[str | Part] = []
    calls: list[str] = []
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["text", "reasoning", "call", "result", "data", "source"]))
        if kind == "text":
            items.append(draw(_text))
        elif kind == "reasoning":
            items.append(Reasoning(draw(_text)))
        elif kind == "call":
            calls.append(f"call-{len(calls)}-{draw(st.text(min_size=1, max_size=5))}")
            items.append(ToolCall(calls[-1], draw(st.text(min_size=1, max_size=8)),
                                  draw(st.dictionaries(_text, _json, max_size=3))))
        elif kind == "result" and calls:
            call_id = draw(st.sampled_from(calls))
            items.append(draw(st.sampled_from([ToolResult(call_id, result=draw(_json)),
                                               ToolResult(call_id, error=draw(_text))])))
        elif kind == "data":
            items.append(Data(draw(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)),
                              draw(_json)))
        elif kind == "source":
            items.append(Source(draw(st.text(min_size=1, max_size=20)),
                                draw(st.none() | _text)))
    reason = draw(st.sampled_from(["stop", "length", "tool_calls", "error", "cancelled",
                                   "content_filter", "odd"]))
    return items, {"finish_reason": reason, "error": draw(_text)}


def check_well_formed(body: bytes) -> dict[str, Any]:
    """The rules processUIMessageStream and the chunk schemas hold the stream to (a delta
    needs its run's start, a tool output its call, ...) plus our own (steps balanced, runs
    closed before a step ends, one ending, [DONE] last). Returns what it carried."""
    got = chunks(body)
    assert got[0]["type"] == "start" and got[-1] == "[DONE]"
    run, in_step, calls = None, False, set()
    seen: dict[str, Any] = {"text": "", "reasoning": "", "calls": [], "steps": 0}
    if got[-3]["type"] == "error":
        assert got[-2]["type"] == "finish" and got[-2]["finishReason"] == "error"
        got = [*got[:-3], *got[-2:]]
    for chunk in got[1:-2]:
        kind = chunk["type"]
        if kind == "start-step":
            assert not in_step and run is None
            in_step, seen["steps"] = True, seen["steps"] + 1
        elif kind == "finish-step":
            assert in_step and run is None
            in_step = False
        elif kind in ("text-start", "reasoning-start"):
            assert in_step and run is None
            run = (kind.split("-")[0], chunk["id"])
        elif kind.endswith(("-delta", "-end")):
            assert run == (kind.split("-")[0], chunk["id"])
            if kind.endswith("-delta"):
                seen[run[0]] += chunk["delta"]
            else:
                run = None
        else:
            assert in_step and run is None, kind
            if kind == "tool-input-start":
                calls.add(chunk["toolCallId"])
            elif kind == "tool-input-available":
                assert chunk["toolCallId"] in calls
                seen["calls"].append((chunk["toolCallId"], chunk["toolName"], chunk["input"]))
            elif kind.startswith("tool-output"):
                assert chunk["toolCallId"] in calls
            elif kind == "source-url":
                assert isinstance(chunk.get("title", ""), str) and chunk["sourceId"]
            else:
                assert kind.startswith("data-"), kind
    assert not in_step and got[-2]["type"] in ("finish", "abort")
    return seen


@settings(max_examples=300, deadline=None)
@given(replies(), st.lists(st.integers(1, 20), max_size=6))
def test_any_reply_frames_well_formed_in_any_batching(
        reply: tuple[list[str | Part], dict[str, Any]], cuts: list[int]) -> None:
    items, close = reply
    log = log_of(items, close)
    whole = frames(items, close)
    seen = check_well_formed(whole)
    assert seen["text"] == "".join(i for i in items if isinstance(i, str))
    assert seen["reasoning"] == "".join(i.text for i in items if isinstance(i, Reasoning))
    assert seen["calls"] == [(i.id, i.name, i.arguments) for i in items
                             if isinstance(i, ToolCall)]
    kinds = [parse_entry(chunk).kind for chunk in log]
    assert seen["steps"] == 1 + sum(  # a step after each tool result that ends a run of them
        1 for a, b in pairwise(kinds) if a == "tool-result" and b not in (a, "close"))
    follower, at, out = UIMessageFramer().follower(), 0, [UIMessageFramer().opening(S)]
    for cut in [*cuts, len(log)]:  # the log handed over in batches of any size
        out.append(follower.frame_many(b"".join(log[at:at + cut])))
        at += cut
    assert b"".join(out) == whole
