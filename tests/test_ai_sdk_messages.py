"""Fast tier: the UI messages useChat posts, as backend (OpenAI chat) messages.

The round trip through the real SDK (a client-side tool's output posted back) is in
tests/test_ai_sdk_node.py; here every part type, state and refusal."""

from __future__ import annotations

from typing import Any

import pytest

from flask_sse_stream.chat.protocols.ai_sdk_messages import response_message_id, ui_messages
from flask_sse_stream.chat.validation import ChatInputError, ChatLimits

LIMITS = ChatLimits()


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"u{len(text)}", "role": "user", "parts": [{"type": "text", "text": text}],
            **extra}


def assistant(*parts: dict[str, Any], id: str = "a1") -> dict[str, Any]:
    return {"id": id, "role": "assistant", "parts": list(parts)}


def tool(name: str, call_id: str, state: str | None = "output-available",
         **fields: Any) -> dict[str, Any]:
    return {"type": f"tool-{name}", "toolCallId": call_id, "state": state, **fields}


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments}}


def refused(messages: Any, limits: ChatLimits = LIMITS) -> tuple[int, str]:
    with pytest.raises(ChatInputError) as caught:
        ui_messages(messages, limits)
    return caught.value.status, caught.value.message


STEP = {"type": "step-start"}


def test_text_parts_are_joined_and_other_parts_left_out() -> None:
    messages = [
        {"id": "s", "role": "system", "parts": [{"type": "text", "text": "Be brief."}]},
        {"id": "u", "role": "user", "parts": [
            {"type": "text", "text": "Look "}, {"type": "file", "url": "data:,x",
                                                "mediaType": "text/plain"},
            {"type": "data-note", "data": 1}, {"type": "text", "text": "at this"}]},
        assistant(STEP, {"type": "reasoning", "text": "hm", "state": "done"},
                  {"type": "text", "text": "Done", "state": "done"},
                  {"type": "source-url", "sourceId": "x", "url": "https://a"},
                  {"type": "something-new"}),
    ]
    assert ui_messages(messages, LIMITS) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Look at this"},
        {"role": "assistant", "content": "Done"},
    ]


def test_a_message_without_text_is_left_out() -> None:
    messages = [user("hi"), assistant(STEP, {"type": "reasoning", "text": "only thinking"}),
                {"id": "u2", "role": "user", "parts": [{"type": "file", "url": "x",
                                                        "mediaType": "image/png"}]}]
    assert ui_messages(messages, LIMITS) == [{"role": "user", "content": "hi"}]


def test_each_step_is_an_assistant_message_followed_by_its_tool_messages() -> None:
    messages = [user("Weather in Paris and Oslo?"), assistant(
        STEP, {"type": "reasoning", "text": "two calls"},
        {"type": "text", "text": "Checking."},
        tool("weather", "c1", input={"city": "Paris"}, output={"t": 21}),
        {"type": "dynamic-tool", "toolName": "lookup", "toolCallId": "c2",
         "state": "output-available", "input": {"q": "Oslo"}, "output": "-3 °C"},
        STEP, {"type": "text", "text": "Paris 21, "}, {"type": "text", "text": "Oslo -3."},
    ), user("Thanks")]
    assert ui_messages(messages, LIMITS) == [
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            call("c1", "weather", '{"city":"Paris"}'), call("c2", "lookup", '{"q":"Oslo"}')]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"t":21}'},
        {"role": "tool", "tool_call_id": "c2", "content": "-3 °C"},  # a string as is
        {"role": "assistant", "content": "Paris 21, Oslo -3."},
        {"role": "user", "content": "Thanks"},
    ]


def test_errors_denials_and_outputs_of_every_json_shape() -> None:
    messages = [user("go"), assistant(
        tool("a", "c1", "output-error", input={"x": 1}, errorText="boom"),
        tool("b", "c2", "output-denied", input={}, approval={"id": "p", "approved": False,
                                                            "reason": "not today"}),
        tool("c", "c3", "output-denied", input={}),
        tool("d", "c4", input=None, output=None),
        tool("e", "c5", input=[1, "ü"], output=[{"k": None}, 2.5, True]),
    )]
    out = ui_messages(messages, LIMITS)
    assert [c["function"]["arguments"] for c in out[1]["tool_calls"]] == \
        ['{"x":1}', "{}", "{}", "{}", '[1,"ü"]']
    assert out[1]["content"] == ""
    assert [m["content"] for m in out[2:]] == \
        ["boom", "not today", "Tool call execution denied.", "null",
         '[{"k":null},2.5,true]']


@pytest.mark.parametrize("state", ["input-streaming", "input-available",
                                   "approval-requested", "approval-responded", None])
def test_a_tool_call_without_a_result_is_left_out(state: str | None) -> None:
    """OpenAI refuses an assistant tool call no tool message answers; refusing the request
    instead would wedge a chat whose call the user stopped."""
    messages = [user("go"), assistant(
        {"type": "text", "text": "Let me ask."}, tool("x", "c1", state, input={}),
        tool("y", "c2", input={}, output=1)), user("never mind")]
    assert ui_messages(messages, LIMITS) == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Let me ask.",
         "tool_calls": [call("c2", "y", "{}")]},
        {"role": "tool", "tool_call_id": "c2", "content": "1"},
        {"role": "user", "content": "never mind"},
    ]


def test_errors_name_the_ui_message_not_the_backend_message() -> None:
    """The first UI message becomes four backend messages; the error names UI index 1."""
    messages = [assistant(STEP, tool("t", "c1", input={}, output=1),
                          STEP, {"type": "text", "text": "x"}),
                {"id": "u", "role": "user", "parts": [{"type": "text", "text": 7}]}]
    assert refused(messages) == (400, "messages[1].parts[0]: a text part needs text")


@pytest.mark.parametrize(("messages", "status", "message"), [
    (None, 400, "messages must be a non-empty list"),
    ([], 400, "messages must be a non-empty list"),
    (["hi"], 400, "messages[0] must be a UI message with parts"),
    ([{"role": "user", "content": "hi"}], 400, "messages[0] must be a UI message with parts"),
    ([user("hi"), {"role": "tool", "parts": []}], 400,
     "messages[1].role must be one of ['assistant', 'system', 'user']"),
    ([user("hi", parts=["text"])], 400, "messages[0].parts[0] must be an object with a type"),
    ([user("hi", parts=[{"text": "x"}])], 400,
     "messages[0].parts[0] must be an object with a type"),
    ([user("a"), assistant(STEP, tool("t", "", input={}, output=1))], 400,
     "messages[1].parts[1].toolCallId must be a non-empty string"),
    ([user("a"), assistant(tool("", "c", input={}, output=1))], 400,
     "messages[1].parts[0] must name its tool"),
    ([user("a"), assistant({"type": "dynamic-tool", "toolCallId": "c",
                            "state": "output-available", "output": 1})], 400,
     "messages[1].parts[0] must name its tool"),
    ([user("a"), assistant(tool("t", "c", "output-error", input={}))], 400,
     "messages[1].parts[0].errorText must be a string"),
    ([user("a"), assistant(tool("t", "c", input={"n": float("nan")}, output=1))], 400,
     "messages[1].parts[0].input must be a JSON value (no NaN or Infinity)"),
    ([user("a"), assistant(tool("t", "c", input={}, output=float("inf")))], 400,
     "messages[1].parts[0].output must be a JSON value (no NaN or Infinity)"),
    ([user("\ud800")], 400,
     "messages[0].parts[0].text must be valid Unicode text (no lone surrogates)"),
    ([user("a"), assistant(tool("t", "c", input={}, output={"k": "\udfff"}))], 400,
     "messages[1].parts[0].output must be valid Unicode text (no lone surrogates)"),
    ([user("a"), assistant(tool("t", "c", "output-error", input={}, errorText="\ud800"))],
     400, "messages[1].parts[0].errorText must be valid Unicode text (no lone surrogates)"),
    ([user("   ")], 400, "messages hold no text"),
    ([assistant({"type": "text", "text": "hello"})], 400,
     "messages need at least one user message"),
])
def test_bad_ui_messages_are_refused_with_what_to_fix(
        messages: Any, status: int, message: str) -> None:
    assert refused(messages) == (status, message)


def test_the_limits_count_ui_messages_and_tool_arguments_and_outputs() -> None:
    limits = ChatLimits(max_chars=100, max_messages=3)
    assert refused([user("a")] * 4, limits) == (413, "at most 3 messages")
    big_input = [user("short"), assistant(tool("t", "c", input={"q": "x" * 90}, output=1))]
    assert refused(big_input, limits) == \
        (413, "messages are longer than 100 characters (at messages[1])")
    big_output = [user("short"), assistant(tool("t", "c", input={}, output="y" * 95))]
    assert refused(big_output, limits)[0] == 413
    fits = [user("short"), assistant(tool("t", "c", input={}, output="y" * 80))]
    assert len(ui_messages(fits, limits)) == 3


def test_the_reply_continues_the_last_assistant_message() -> None:
    continued = [user("hi"), assistant(tool("t", "c", input={}, output=1), id="msg-7")]
    assert response_message_id(continued, "stream-1") == "msg-7"
    assert response_message_id([*continued, user("next")], "stream-1") == "stream-1"
    for odd in ([user("hi"), {"role": "assistant", "parts": []}],
                [user("hi"), assistant(id="")], [user("hi"), assistant(id="x" * 201)],
                None, [], ["junk"]):
        assert response_message_id(odd, "stream-1") == "stream-1"
