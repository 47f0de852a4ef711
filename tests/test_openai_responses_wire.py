"""The Responses wire format (chat/protocols/openai_responses.py and
openai_responses_input.py), checked against the installed openai SDK: every event
validated by the ``ResponseStreamEvent`` union, the SDK's own ``ResponseStreamState``
(what ``client.responses.stream()`` runs, strict about order and ids) run over the
events, the non-streamed ``response`` object, and the request's input as the backend
gets it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import omit
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from flask_sse_stream.chat import Reasoning, ToolCall, ToolResult
from flask_sse_stream.chat.protocols.openai_responses import ResponseBuilder
from flask_sse_stream.chat.protocols.openai_responses_input import responses_request
from flask_sse_stream.chat.validation import ChatInputError as OpenAIInputError
from flask_sse_stream.chat.validation import ChatLimits
from tests.openai_wire import (
    SCENARIOS,
    STREAM_ID,
    TEXTS,
    USAGE,
    WEATHER,
    reply,
    responses_stream,
    sse,
)

EVENT = TypeAdapter(ResponseStreamEvent)
LIMITS = ChatLimits()

MESSAGE = ["response.output_item.added", "response.content_part.added",
           "response.output_text.delta", "response.output_text.done",
           "response.content_part.done", "response.output_item.done"]
REASONING = ["response.output_item.added", "response.content_part.added",
             "response.reasoning_text.delta", "response.reasoning_text.done",
             "response.content_part.done", "response.output_item.done"]
CALL = ["response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done"]
OPENING = ["response.created", "response.in_progress"]


def events(raw: bytes) -> list[Any]:
    """Every event, validated by the SDK's union; its ``event:`` name is its ``type``,
    sequence numbers count 0, 1, 2, ..., and no event carries an ``id:``."""
    parsed = []
    for kind, data in sse(raw):
        event = EVENT.validate_python(json.loads(data))
        assert event.type == kind
        parsed.append(event)
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    assert b"\nid:" not in raw and b"[DONE]" not in raw
    return parsed


def shape(parsed: list[Any]) -> list[str]:
    """The event types, runs of deltas joined into one."""
    out: list[str] = []
    for event in parsed:
        if not (event.type.endswith(".delta") and out and out[-1] == event.type):
            out.append(event.type)
    return out


def sdk_run(parsed: list[Any]) -> list[Any]:
    """The SDK's stream state over the events (it raises on anything out of order)."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    return [out for event in parsed for out in state.handle_event(event)]


def final(parsed: list[Any]) -> Response:
    """What ``client.responses.stream(...).get_final_response()`` returns."""
    completed = [e for e in sdk_run(parsed) if e.type == "response.completed"]
    assert len(completed) == 1
    return completed[0].response  # type: ignore[no-any-return]


def test_text_is_one_message_item_and_output_text_works() -> None:
    parsed = events(responses_stream(SCENARIOS["text"]))
    assert shape(parsed) == [*OPENING, *MESSAGE, "response.completed"]
    assert "".join(e.delta for e in parsed if e.type == "response.output_text.delta") == \
        TEXTS["text"]
    response = final(parsed)
    assert response.output_text == TEXTS["text"]
    assert response.status == "completed"
    assert response.usage is not None and (response.usage.input_tokens,
                                           response.usage.output_tokens,
                                           response.usage.total_tokens) == (
        USAGE["prompt_tokens"], USAGE["completion_tokens"], USAGE["total_tokens"])
    assert {e.response.id for e in parsed if hasattr(e, "response")} == {f"resp_{STREAM_ID}"}


def test_reasoning_is_a_reasoning_item_with_reasoning_text_before_the_message() -> None:
    parsed = events(responses_stream(SCENARIOS["reasoning"]))
    assert shape(parsed) == [*OPENING, *REASONING, *MESSAGE, "response.completed"]
    assert "".join(e.delta for e in parsed if e.type == "response.reasoning_text.delta") == \
        "Let me think."
    response = final(parsed)
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.content is not None
    assert [(c.type, c.text) for c in reasoning.content] == [("reasoning_text", "Let me think.")]
    assert message.type == "message" and response.output_text == TEXTS["reasoning"]


def test_client_tool_calls_are_function_call_items() -> None:
    parsed = events(responses_stream(SCENARIOS["client_tool"]))
    assert shape(parsed) == [*OPENING, *REASONING, *MESSAGE, *CALL, *CALL,
                             "response.completed"]
    response = final(parsed)
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments), c.status) for c in calls] == [
        ("call_a", "get_weather", WEATHER, "completed"), ("call_b", "get_time", {}, "completed")]
    assert [e.output_index for e in parsed if e.type == "response.output_item.added"] == [
        0, 1, 2, 3]
    assert len({item.id for item in response.output}) == 4
    assert response.output_text == "Checking."


def test_the_sdk_parses_the_arguments_of_strict_function_tools() -> None:
    tools: Any = [{"type": "function", "name": "get_weather", "strict": True,
                   "parameters": {"type": "object", "additionalProperties": False,
                                  "properties": {}}}]
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=tools, text_format=omit)
    out: list[Any] = [o for e in events(responses_stream(SCENARIOS["client_tool"]))
                      for o in state.handle_event(e)]
    response = out[-1].response
    parsed = [getattr(item, "parsed_arguments", None) for item in response.output
              if item.type == "function_call"]
    assert parsed == [WEATHER, None]


def test_server_side_tools_are_not_shown_and_each_step_is_its_own_message() -> None:
    raw = responses_stream(SCENARIOS["server_tool"])
    parsed = events(raw)
    assert shape(parsed) == [*OPENING, *MESSAGE, *MESSAGE, "response.completed"]
    assert b"lookup" not in raw and b"found" not in raw and b"example.com" not in raw
    assert final(parsed).output_text == TEXTS["server_tool"]


def test_a_failure_closes_the_open_item_as_incomplete_then_response_failed() -> None:
    parsed = events(responses_stream(SCENARIOS["failure"]))
    assert shape(parsed) == [*OPENING, *MESSAGE, "response.failed"]
    assert parsed[-2].item.status == "incomplete"
    failed = parsed[-1].response
    assert failed.status == "failed"
    assert failed.error is not None and (failed.error.code, failed.error.message) == (
        "server_error", "upstream broke")
    out = sdk_run(parsed)
    assert out[-1].type == "response.failed"
    assert out[-1].response.output[0].content[0].text == TEXTS["failure"]


def test_a_cancel_is_response_incomplete_with_status_cancelled() -> None:
    parsed = events(responses_stream(SCENARIOS["cancel"]))
    assert shape(parsed) == [*OPENING, *REASONING, *MESSAGE, "response.incomplete"]
    cancelled = parsed[-1].response
    assert cancelled.status == "cancelled" and cancelled.incomplete_details is None
    assert cancelled.output_text == TEXTS["cancel"]
    assert sdk_run(parsed)[-1].type == "response.incomplete"


@pytest.mark.parametrize(("reason", "detail"), [("length", "max_output_tokens"),
                                                ("content_filter", "content_filter")])
def test_a_cut_reply_is_response_incomplete_with_its_reason(reason: str, detail: str) -> None:
    parsed = events(responses_stream(reply("cut", close={"finish_reason": reason})))
    last = parsed[-1].response
    assert (parsed[-1].type, last.status, last.incomplete_details.reason) == (
        "response.incomplete", "incomplete", detail)


def test_calls_still_held_when_a_reply_fails_are_dropped() -> None:
    raw = responses_stream(reply("x", ToolCall("c1", "f", {}),
                                 close={"finish_reason": "error", "error": "e"}))
    assert b"function_call" not in raw


def test_an_empty_reply_completes_with_no_output() -> None:
    parsed = events(responses_stream(reply()))
    assert shape(parsed) == [*OPENING, "response.completed"]
    assert final(parsed).output_text == ""


def test_heartbeat_comments_between_events_change_nothing() -> None:
    plain = sse(responses_stream(SCENARIOS["client_tool"]))
    assert sse(responses_stream(SCENARIOS["client_tool"], heartbeat=b": ping\n")) == plain


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.text(min_size=1)), max_size=12))
def test_any_unicode_text_and_reasoning_arrive_exactly(pieces: list[tuple[bool, str]]) -> None:
    pieces = [(is_text, piece.encode("utf-8", "replace").decode("utf-8"))
              for is_text, piece in pieces]
    entries = reply(*[piece if is_text else Reasoning(piece) for is_text, piece in pieces])
    response = final(events(responses_stream(entries, heartbeat=b": ping\n")))
    assert response.output_text == "".join(p for is_text, p in pieces if is_text)
    assert "".join(c.text for item in response.output if item.type == "reasoning"
                   for c in item.content or ()) == "".join(
        p for is_text, p in pieces if not is_text)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_response_object_is_the_streams_last_response(scenario: str) -> None:
    builder = ResponseBuilder("resp_wireTest0001", "wire-model", created_at=1_700_000_000)
    for entry in SCENARIOS[scenario]:
        assert not builder.done
        builder.add(entry)
    assert builder.done
    whole = Response.model_validate(builder.response())
    last = events(responses_stream(SCENARIOS[scenario]))[-1].response
    assert whole.model_dump(exclude={"completed_at"}) == last.model_dump(
        exclude={"completed_at"})
    assert whole.output_text == TEXTS[scenario]
    assert builder.failure == {"failure": "upstream broke",
                               "cancel": "the reply was cancelled"}.get(scenario)


def test_the_request_settings_are_echoed_and_stay_valid() -> None:
    request = responses_request({
        "input": "hi", "instructions": "Be brief.", "temperature": 0.2, "top_p": 1,
        "max_output_tokens": 100, "parallel_tool_calls": False, "metadata": {"k": "v"},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"},
                   "strict": True}],
        "tool_choice": {"type": "function", "name": "f"}}, LIMITS)
    raw = responses_stream(SCENARIOS["text"], echo=request.echo)
    response = final(events(raw))
    assert response.instructions == "Be brief." and response.temperature == 0.2
    assert response.parallel_tool_calls is False and response.metadata == {"k": "v"}
    dumped = response.model_dump(exclude_none=True)
    assert dumped["tools"] == [{"type": "function", "name": "f", "strict": True,
                                "parameters": {"type": "object"}}]
    assert dumped["tool_choice"] == {"type": "function", "name": "f"}


# -- input ------------------------------------------------------------------------------

def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    request = responses_request({"input": "Hello", "instructions": "Be brief.",
                                 "stream": True}, LIMITS)
    assert request.messages == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hello"}]
    assert (request.stream, request.tools, request.tool_choice) == (True, None, None)


def test_items_become_backend_messages_with_tool_calls_and_results() -> None:
    request = responses_request({"input": [
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Weather "},
                     {"type": "input_text", "text": "and time?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
        {"type": "function_call", "call_id": "a", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call", "call_id": "b", "name": "get_time", "arguments": "{}",
         "id": "fc_2", "status": "completed"},
        {"type": "function_call_output", "call_id": "a", "output": "sunny"},
        {"type": "function_call_output", "call_id": "b",
         "output": [{"type": "input_text", "text": "9:00"}]},
    ], "tools": [{"type": "function", "name": "get_weather"},
                 {"type": "function", "name": "get_time", "description": "Now"}],
        "tool_choice": "required"}, LIMITS)
    call = {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    assert request.messages == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "a", **call},
            {"id": "b", "type": "function", "function": {"name": "get_time",
                                                         "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "b", "content": "9:00"},
    ]
    assert request.tools == [{"type": "function", "function": {"name": "get_weather"}},
                             {"type": "function", "function": {"name": "get_time",
                                                               "description": "Now"}}]
    assert request.tool_choice == "required"


def test_the_sdks_own_output_items_are_accepted_back_as_input() -> None:
    response = final(events(responses_stream(SCENARIOS["client_tool"])))
    items = [{"role": "user", "content": "weather and time?"},
             *(item.model_dump(exclude_none=True) for item in response.output),
             {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
             {"type": "function_call_output", "call_id": "call_b", "output": "9:00"}]
    messages = responses_request({"input": items}, LIMITS).messages
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert messages[1]["content"] == "Checking."
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_a", "call_b"]
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == WEATHER


def test_a_function_call_with_no_message_before_it_starts_an_assistant_message() -> None:
    messages = responses_request({"input": [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "z", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "z", "output": ""}]}, LIMITS).messages
    assert messages[1] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "z", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert messages[2] == {"role": "tool", "tool_call_id": "z", "content": ""}


def refused(body: dict[str, Any], param: str, status: int = 400,
            limits: ChatLimits = LIMITS) -> OpenAIInputError:
    with pytest.raises(OpenAIInputError) as info:
        responses_request(body, limits)
    assert info.value.status == status
    assert info.value.param == param, info.value.message
    assert param.split("[")[0].split(".")[0] in info.value.message
    return info.value


FN = {"type": "function", "name": "f"}


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": "hi", "conversation": "conv_1"}, "conversation"),
    ({"input": "hi", "background": True}, "background"),
    ({"input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x",
                                         "schema": {}}}}, "text.format"),
    ({"input": "hi", "text": {"format": {"type": "json_object"}}}, "text.format"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "hi", "tools": [FN, {"type": "file_search", "vector_store_ids": ["v"]}]},
     "tools[1].type"),
    ({"input": "hi", "tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type"),
    ({"input": "hi", "tools": [{"type": "custom", "name": "x"}]}, "tools[0].type"),
    ({"input": "hi", "tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
    ({"input": "hi", "tools": [FN], "tool_choice": {"type": "web_search_preview"}},
     "tool_choice"),
    ({"input": "hi", "tools": [FN], "tool_choice": {"type": "function", "name": "g"}},
     "tool_choice"),
    ({"input": "hi", "stream": 1}, "stream"),
    ({"input": "hi", "model": None}, "model"),
    ({"input": "hi", "instructions": 5}, "instructions"),
    ({"input": "hi", "temperature": "hot"}, "temperature"),
    ({"input": "hi", "max_output_tokens": True}, "max_output_tokens"),
    ({"input": "hi", "metadata": {"k": 1}}, "metadata"),
    ({}, "input"),
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
    ({"input": ["hi"]}, "input[0]"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "see"},
        {"type": "input_image", "image_url": "https://x/y.png"}]}]}, "input[0].content[1].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": "hi"},
                {"type": "function_call_output", "call_id": "nope", "output": "x"}]},
     "input[1].call_id"),
    ({"input": [{"role": "user", "content": "hi"},
                {"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[1].call_id"),
    ({"input": [{"role": "user", "content": "\udfff"}]}, "input[0].content"),
    ({"input": [{"role": "system", "content": "no user"}]}, "input"),
])
def test_unsupported_or_bad_requests_are_refused_naming_the_field(
        body: dict[str, Any], param: str) -> None:
    refused(body, param)


def test_settings_that_change_nothing_here_are_accepted() -> None:
    request = responses_request({
        "input": "hi", "background": False, "store": True, "previous_response_id": None,
        "text": {"format": {"type": "text"}, "verbosity": "low"}, "include": [
            "reasoning.encrypted_content"], "reasoning": {"effort": "low"}, "user": "u",
        "prompt_cache_key": "k", "service_tier": "auto", "truncation": "auto",
        "stream_options": {"include_obfuscation": False}}, LIMITS)
    assert request.messages == [{"role": "user", "content": "hi"}]


def test_size_limits_hold_for_items_and_text() -> None:
    small = ChatLimits(max_chars=30, max_messages=3)
    refused({"input": [{"role": "user", "content": "x"}] * 4}, "input", 413, small)
    refused({"input": "y" * 31}, "input", 413, small)
    refused({"input": [{"role": "user", "content": "q"},
                       {"type": "function_call", "call_id": "c", "name": "f",
                        "arguments": "z" * 40}]}, "input", 413, small)


def test_tool_results_in_a_reply_do_not_leak_into_output_items() -> None:
    entries = reply(ToolCall("s", "srv", {}), ToolResult("s", result="secret-result"),
                    ToolCall("c", "cli", {"x": 1}), close={"finish_reason": "tool_calls"})
    response = final(events(responses_stream(entries)))
    assert [(item.type, getattr(item, "name", None)) for item in response.output] == [
        ("function_call", "cli")]
    assert "secret-result" not in response.model_dump_json()
