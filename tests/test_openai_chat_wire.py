"""The Chat Completions wire format (chat/protocols/openai_chat.py), checked against the
installed openai SDK's own types and stream accumulator: chunks for text, reasoning and
client-side tool calls, server-side tools kept on the server, the non-streamed
completion, and the request's messages, tools and tool_choice as the backend gets them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from flask_sse_stream.chat import Reasoning, ToolCall, ToolResult
from flask_sse_stream.chat.protocols.openai_chat import (
    ChatCompletionBuilder,
    chat_messages,
    chat_request,
)
from flask_sse_stream.chat.validation import ChatInputError as OpenAIInputError
from flask_sse_stream.chat.validation import ChatLimits
from tests.openai_wire import SCENARIOS, TEXTS, USAGE, WEATHER, chat_stream, reply, sse_json

LIMITS = ChatLimits()


def chunks(raw: bytes) -> list[ChatCompletionChunk]:
    """Every chunk of a successful stream, validated by the SDK's type; the stream ends
    with exactly one ``[DONE]``."""
    events = sse_json(raw)
    assert events[-1] == ("message", "[DONE]")
    assert all(kind == "message" for kind, _ in events)
    assert b"\nid:" not in raw and not raw.startswith(b"id:")
    return [ChatCompletionChunk.model_validate(data) for _, data in events[:-1]]


def accumulated(raw: bytes) -> Any:
    """The completion the SDK's own stream accumulator builds from the stream."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks(raw):
        state.handle_chunk(chunk)
    return state.get_final_completion()


def content(parsed: list[ChatCompletionChunk], field: str = "content") -> str:
    return "".join(getattr(c.choices[0].delta, field, None) or "" for c in parsed if c.choices)


def test_text_streams_as_content_deltas_and_ends_with_stop() -> None:
    parsed = chunks(chat_stream(SCENARIOS["text"]))
    assert parsed[0].choices[0].delta.role == "assistant"
    assert content(parsed) == TEXTS["text"]
    assert [c.choices[0].finish_reason for c in parsed][-1] == "stop"
    assert all(c.usage is None for c in parsed)
    assert {c.id for c in parsed} == {parsed[0].id} and {c.created for c in parsed} == {
        1_700_000_000}


def test_include_usage_adds_a_last_chunk_with_usage_and_no_choices() -> None:
    parsed = chunks(chat_stream(SCENARIOS["text"], include_usage=True))
    assert all(c.usage is None for c in parsed[:-1])
    assert parsed[-1].choices == []
    assert parsed[-1].usage is not None and parsed[-1].usage.model_dump() == {
        **USAGE, "completion_tokens_details": None, "prompt_tokens_details": None}


def test_reasoning_streams_as_reasoning_content_before_the_text() -> None:
    raw = chat_stream(SCENARIOS["reasoning"])
    parsed = chunks(raw)
    assert content(parsed, "reasoning_content") == "Let me think."
    assert content(parsed) == TEXTS["reasoning"]
    message = accumulated(raw).choices[0].message
    assert message.content == TEXTS["reasoning"]
    assert message.reasoning_content == "Let me think."


def test_client_tool_calls_stream_with_indexes_and_the_sdk_accumulates_them() -> None:
    raw = chat_stream(SCENARIOS["client_tool"])
    parsed = chunks(raw)
    deltas = [call for c in parsed for call in c.choices[0].delta.tool_calls or ()]
    assert [(d.index, d.id, d.type, d.function and d.function.name) for d in deltas] == [
        (0, "call_a", "function", "get_weather"), (1, "call_b", "function", "get_time")]
    final = accumulated(raw).choices[0]
    assert final.finish_reason == "tool_calls"
    calls = final.message.tool_calls
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("call_a", "get_weather", WEATHER), ("call_b", "get_time", {})]
    assert final.message.content == "Checking."


def test_server_side_tools_are_not_shown_and_the_text_around_them_is() -> None:
    raw = chat_stream(SCENARIOS["server_tool"])
    parsed = chunks(raw)
    assert content(parsed) == TEXTS["server_tool"]
    assert all(not c.choices or c.choices[0].delta.tool_calls is None for c in parsed)
    assert b"lookup" not in raw and b"found" not in raw and b"example.com" not in raw
    assert parsed[-1].choices[0].finish_reason == "stop"


def test_only_the_unanswered_call_of_a_mixed_step_is_shown_with_index_zero() -> None:
    entries = reply("Two tools. ", ToolCall("srv", "lookup", {"q": 1}),
                    ToolCall("cli", "ask_user", {"question": "ok?"}),
                    ToolResult("srv", error="no such thing"),
                    close={"finish_reason": "tool_calls"})
    final = accumulated(chat_stream(entries)).choices[0]
    assert [(c.id, c.function.name) for c in final.message.tool_calls] == [("cli", "ask_user")]
    assert final.message.tool_calls[0].index == 0
    assert final.finish_reason == "tool_calls"


def test_a_client_call_followed_by_text_is_shown_before_that_text() -> None:
    entries = reply(ToolCall("c1", "note", {"n": 1}), "after the call")
    parsed = chunks(chat_stream(entries))
    kinds = ["call" if c.choices[0].delta.tool_calls else "text"
             for c in parsed[1:] if c.choices and c.choices[0].finish_reason is None]
    assert kinds == ["call", "text"]
    assert parsed[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(("scenario", "message"), [("failure", "upstream broke"),
                                                   ("cancel", "the reply was cancelled")])
def test_a_failed_or_cancelled_reply_ends_with_an_error_event_and_done(
        scenario: str, message: str) -> None:
    events = sse_json(chat_stream(SCENARIOS[scenario]))
    assert events[-1] == ("message", "[DONE]")
    assert events[-2][1] == {"error": {"message": message, "type": "server_error",
                                       "param": None, "code": None}}
    for _, data in events[:-2]:
        ChatCompletionChunk.model_validate(data)


def test_calls_still_held_when_a_reply_fails_are_dropped() -> None:
    entries = reply("x", ToolCall("c1", "f", {}), close={"finish_reason": "error", "error": "e"})
    assert b"tool_calls" not in chat_stream(entries)


@pytest.mark.parametrize(("reason", "calls", "expected"), [
    ("stop", False, "stop"), ("length", False, "length"),
    ("content_filter", False, "content_filter"), ("end_turn", False, "stop"),
    ("tool_calls", False, "stop"), ("stop", True, "tool_calls"), ("length", True, "length"),
])
def test_finish_reason_is_one_the_sdk_types_allow_and_says_whether_to_run_tools(
        reason: str, calls: bool, expected: str) -> None:
    items = [ToolCall("c1", "f", {})] if calls else ["text"]
    entries = reply(*items, close={"finish_reason": reason})
    assert chunks(chat_stream(entries))[-1].choices[0].finish_reason == expected
    builder = ChatCompletionBuilder("chatcmpl-x", "m")
    for entry in entries:
        builder.add(entry)
    assert builder.completion()["choices"][0]["finish_reason"] == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.text(min_size=1)), max_size=12))
def test_any_unicode_text_and_reasoning_arrive_exactly(pieces: list[tuple[bool, str]]) -> None:
    pieces = [(is_text, piece.encode("utf-8", "replace").decode("utf-8"))
              for is_text, piece in pieces]  # the log cannot hold lone surrogates
    entries = reply(*[piece if is_text else Reasoning(piece) for is_text, piece in pieces])
    parsed = chunks(chat_stream(entries, heartbeat=b": ping\n"))
    assert content(parsed) == "".join(p for is_text, p in pieces if is_text)
    assert content(parsed, "reasoning_content") == "".join(
        p for is_text, p in pieces if not is_text)


def build(entries: list[Any]) -> ChatCompletionBuilder:
    builder = ChatCompletionBuilder("chatcmpl-t", "wire-model", created=5)
    for entry in entries:
        assert not builder.done
        builder.add(entry)
    assert builder.done
    return builder


@pytest.mark.parametrize("scenario", ["text", "reasoning", "client_tool", "server_tool"])
def test_the_completion_holds_what_the_stream_gives(scenario: str) -> None:
    builder = build(SCENARIOS[scenario])
    assert builder.failure is None
    whole = ChatCompletion.model_validate(builder.completion())
    streamed = accumulated(chat_stream(SCENARIOS[scenario]))
    assert whole.choices[0].message.content == streamed.choices[0].message.content == TEXTS[
        scenario]
    assert whole.choices[0].finish_reason == streamed.choices[0].finish_reason
    assert [c.model_dump() for c in whole.choices[0].message.tool_calls or ()] == [
        {"id": c.id, "type": "function",
         "function": {"name": c.function.name, "arguments": c.function.arguments}}
        for c in streamed.choices[0].message.tool_calls or ()]
    assert whole.usage is not None and whole.usage.total_tokens == USAGE["total_tokens"]


def test_the_completion_always_carries_reasoning_content() -> None:
    assert build(SCENARIOS["text"]).completion()["choices"][0]["message"][
        "reasoning_content"] is None
    message = ChatCompletion.model_validate(build(SCENARIOS["reasoning"]).completion()).choices[
        0].message
    assert message.reasoning_content == "Let me think."  # type: ignore[attr-defined]


def test_a_tool_calls_only_completion_has_null_content() -> None:
    message = build(reply(ToolCall("c", "f", {"a": 1}))).completion()["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]


@pytest.mark.parametrize(("scenario", "message"), [("failure", "upstream broke"),
                                                   ("cancel", "the reply was cancelled")])
def test_the_builder_reports_a_failed_or_cancelled_reply(scenario: str, message: str) -> None:
    assert build(SCENARIOS[scenario]).failure == message


# -- input ------------------------------------------------------------------------------

def refused(body: dict[str, Any], param: str, status: int = 400,
            limits: ChatLimits = LIMITS) -> OpenAIInputError:
    with pytest.raises(OpenAIInputError) as info:
        chat_request(body, limits)
    assert info.value.status == status
    assert info.value.param == param, info.value.message
    return info.value


def test_messages_become_backend_messages_with_tool_calls_and_results() -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    messages = chat_messages([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather "},
                                     {"type": "text", "text": "in Oslo?"}], "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
        {"role": "assistant", "content": "3 degrees."},
    ], LIMITS)
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
        {"role": "assistant", "content": "3 degrees."},
    ]


def test_the_sdks_own_assistant_message_is_accepted_back_as_input() -> None:
    completion = ChatCompletion.model_validate(build(SCENARIOS["client_tool"]).completion())
    assistant = completion.choices[0].message.model_dump(exclude_none=True)
    messages = chat_messages([
        {"role": "user", "content": "weather and time?"}, assistant,
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "9:00"}]},
    ], LIMITS)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_a", "call_b"]
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == WEATHER
    assert messages[3]["content"] == "9:00"


def test_tools_and_tool_choice_are_checked_and_returned_for_the_backend() -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather now", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "noop"}}]
    request = chat_request({"messages": [{"role": "user", "content": "hi"}], "tools": tools,
                            "tool_choice": {"type": "function",
                                            "function": {"name": "noop"}},
                            "stream": True, "stream_options": {"include_usage": True}}, LIMITS)
    assert request.tools == tools
    assert request.tool_choice == {"type": "function", "function": {"name": "noop"}}
    assert request.stream and request.include_usage
    plain = chat_request({"messages": [{"role": "user", "content": "hi"}]}, LIMITS)
    assert (plain.tools, plain.tool_choice, plain.stream, plain.include_usage) == (
        None, None, False, False)


USER = [{"role": "user", "content": "hi"}]
FN = {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "  "}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "messages[0].content[1].type"),
    ({"messages": [{"role": "system", "content": "only a system message"}]}, "messages"),
    ({"messages": [*USER, {"role": "tool", "tool_call_id": "nope", "content": "r"}]},
     "messages[1].tool_call_id"),
    ({"messages": [*USER, {"role": "tool", "content": "r"}]}, "messages[1].tool_call_id"),
    ({"messages": [*USER, {"role": "assistant", "tool_calls": [{"id": "c"}]}]},
     "messages[1].tool_calls[0].function"),
    ({"messages": [*USER, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "custom", "custom": {"name": "x", "input": "y"}}]}]},
     "messages[1].tool_calls[0]"),
    ({"messages": [*USER, {"role": "assistant", "function_call": {"name": "f",
                                                                  "arguments": "{}"}}]},
     "messages[1].function_call"),
    ({"messages": USER, "tools": {"f": 1}}, "tools"),
    ({"messages": USER, "tools": [{"type": "custom", "custom": {"name": "x"}}]},
     "tools[0].type"),
    ({"messages": USER, "tools": [{"type": "function"}]}, "tools[0].function"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "a b"}}]},
     "tools[0].function.name"),
    ({"messages": USER, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": "{}"}}]}, "tools[0].function.parameters"),
    ({"messages": USER, "tools": [FN, FN]}, "tools"),
    ({"messages": USER, "tools": [FN] * 129}, "tools"),
    ({"messages": USER, "tool_choice": "required"}, "tool_choice"),
    ({"messages": USER, "tool_choice": "always"}, "tool_choice"),
    ({"messages": USER, "tools": [FN], "tool_choice": {"type": "function",
                                                       "function": {"name": "g"}}},
     "tool_choice"),
    ({"messages": USER, "tools": [FN], "tool_choice": {"type": "allowed_tools"}},
     "tool_choice"),
    ({"messages": USER, "stream": "yes"}, "stream"),
    ({"messages": USER, "stream_options": []}, "stream_options"),
    ({"messages": USER, "model": 4}, "model"),
    ({"messages": USER, "n": 2}, "n"),
])
def test_bad_requests_are_refused_naming_the_field(body: dict[str, Any], param: str) -> None:
    refused(body, param)


def test_size_limits_hold_for_tool_arguments_and_message_counts() -> None:
    small = ChatLimits(max_chars=30, max_messages=3)
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "x" * 40}}
    refused({"messages": [*USER, {"role": "assistant", "tool_calls": [call]}]}, "messages",
            413, small)
    refused({"messages": USER * 4}, "messages", 413, small)
    refused({"messages": [{"role": "user", "content": "y" * 31}]}, "messages", 413, small)
