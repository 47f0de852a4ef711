"""OpenAIBackend's parts against a fake upstream on loopback: reasoning, tool calls joined
from fragments, tools forwarded, and the server-side tool loop with ``max_steps``.

Real sockets and the real httpx client, in-process (the fake runs in a thread). Every
upstream request body is recorded by the fake, so the loop is checked on the wire."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flask_sse_stream.chat import (
    BackendError,
    Finish,
    OpenAIBackend,
    Reasoning,
    Tool,
    ToolCall,
    ToolResult,
    Usage,
)
from tests.fake_openai import DEFAULT_PIECES, FakeOpenAI
from tests.fake_openai_parts import DEFAULT_REASONING, DEFAULT_TOOL_CALLS, TOOL_REPLY_PREFIX

HANG_GUARD = 20.0
WEATHER = {"city": "Paris", "unit": "c"}
CLIENT_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


def user(text: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(delay=0.0) as server:
        yield server


class Weather:
    """A server-side tool that records its calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def get_weather(self, city: str, unit: str = "c") -> dict[str, Any]:
        """The weather in a city."""
        self.calls.append({"city": city, "unit": unit})
        if self.fail:
            raise RuntimeError(f"the weather service is down for {city}")
        return {"city": city, "temperature": 21, "unit": unit}


def make(fake: FakeOpenAI, **kwargs: Any) -> OpenAIBackend:
    return OpenAIBackend(base_url=fake.base_url, api_key="sk-test", model="fake-1", **kwargs)


def texts(items: list[Any]) -> str:
    return "".join(p for p in items if isinstance(p, str))


def of(kind: type, items: list[Any]) -> list[Any]:
    return [p for p in items if isinstance(p, kind)]


# --------------------------------------------------------------------------- reasoning


@pytest.mark.parametrize("mode", ["reasoning_content", "reasoning"])
def test_reasoning_from_either_field_comes_before_the_text(fake: FakeOpenAI, mode: str) -> None:
    fake.mode = mode
    items = list(make(fake).stream(user()))
    reasoning = of(Reasoning, items)
    assert [r.text for r in reasoning] == DEFAULT_REASONING
    assert texts(items) == "".join(DEFAULT_PIECES)
    last_reasoning = max(i for i, p in enumerate(items) if isinstance(p, Reasoning))
    first_text = min(i for i, p in enumerate(items) if isinstance(p, str))
    assert last_reasoning < first_text
    assert items[-2:] == [Finish("stop"), items[-1]] and isinstance(items[-1], Usage)


def test_reasoning_only_reply_is_not_empty(fake: FakeOpenAI) -> None:
    fake.mode = "reasoning_only"
    items = list(make(fake).stream(user()))
    assert texts(items) == ""
    assert "".join(r.text for r in of(Reasoning, items)) == "".join(DEFAULT_REASONING)
    assert Finish("stop") in items


def test_a_server_sending_both_reasoning_fields_is_read_once(fake: FakeOpenAI) -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    fake.mode = "raw"
    fake.raw_chunks = [
        chunk({"reasoning": "think", "reasoning_content": "think"}),
        chunk({"content": "done"}),
        chunk({}, "stop"),
        b"data: [DONE]\n\n",
    ]
    assert list(make(fake).stream(user())) == [Reasoning("think"), "done", Finish("stop")]


# --------------------------------------------------------------------------- tool calls


def test_client_tool_call_is_joined_from_many_fragments(fake: FakeOpenAI) -> None:
    fake.mode = "tool_call"
    fake.argument_chunk = 1  # one character of the JSON arguments per chunk
    items = list(make(fake).stream(user(), tools=CLIENT_TOOLS, tool_choice="auto"))
    assert of(ToolCall, items) == [ToolCall("call_1_0", "get_weather", WEATHER)]
    assert of(ToolResult, items) == []  # the client runs it
    assert Finish("tool_calls") in items
    assert len(fake.requests) == 1
    body = fake.requests[0].body
    assert body["tools"] == CLIENT_TOOLS
    assert body["tool_choice"] == "auto"


def test_two_calls_interleaved_by_index(fake: FakeOpenAI) -> None:
    fake.mode = "tool_calls"
    fake.argument_chunk = 2
    items = list(make(fake).stream(user(), tools=CLIENT_TOOLS))
    assert of(ToolCall, items) == [
        ToolCall("call_1_0", DEFAULT_TOOL_CALLS[0]["name"], DEFAULT_TOOL_CALLS[0]["arguments"]),
        ToolCall("call_1_1", DEFAULT_TOOL_CALLS[1]["name"], DEFAULT_TOOL_CALLS[1]["arguments"]),
    ]
    assert items[-2:] == [Finish("tool_calls"), items[-1]]


def test_calls_without_index_are_told_apart_by_id(fake: FakeOpenAI) -> None:
    def call(id_: str, name: str, arguments: str) -> bytes:
        delta = {"tool_calls": [{"id": id_, "type": "function",
                                 "function": {"name": name, "arguments": arguments}}]}
        return b"data: " + json.dumps({"choices": [{"delta": delta}]}).encode() + b"\n\n"

    fake.mode = "raw"
    fake.raw_chunks = [
        call("a", "get_weather", '{"city": "Oslo"}'),
        call("b", "get_time", "{}"),
        b'data: {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    items = list(make(fake).stream(user(), tools=CLIENT_TOOLS))
    assert of(ToolCall, items) == [ToolCall("a", "get_weather", {"city": "Oslo"}),
                                   ToolCall("b", "get_time", {})]


def test_a_tool_call_without_a_name_is_malformed(fake: FakeOpenAI) -> None:
    fake.mode = "raw"
    fake.raw_chunks = [
        b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": '
        b'{"arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    with pytest.raises(BackendError, match="without a name"):
        list(make(fake).stream(user()))


def test_own_tools_merge_with_the_request_tools(fake: FakeOpenAI) -> None:
    weather = Weather()
    backend = make(fake, tools=[weather.get_weather])
    list(backend.stream(user(), tools=CLIENT_TOOLS))
    sent = fake.requests[0].body["tools"]
    # the backend's get_weather wins over the request's tool of the same name
    assert sent == [Tool.from_function(weather.get_weather).schema(), CLIENT_TOOLS[1]]
    list(make(fake).stream(user()))
    assert "tools" not in fake.requests[1].body and "tool_choice" not in fake.requests[1].body


# --------------------------------------------------------------------------- the loop


def test_server_tool_runs_once_and_the_model_gets_its_result(fake: FakeOpenAI) -> None:
    fake.mode = "tool_call"
    weather = Weather()
    items = list(make(fake, tools=[weather.get_weather]).stream(
        user("weather?"), tool_choice="required"))
    assert weather.calls == [WEATHER]
    result = {"city": "Paris", "temperature": 21, "unit": "c"}
    call = ToolCall("call_1_0", "get_weather", WEATHER)
    assert items[:2] == [call, ToolResult("call_1_0", result=result)]
    content = json.dumps(result, separators=(",", ":"))
    assert texts(items) == TOOL_REPLY_PREFIX + content
    assert len(fake.requests) == 2
    second = fake.requests[1].body
    assert second["messages"][0] == user("weather?")[0]
    assert second["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1_0", "type": "function",
         "function": {"name": "get_weather", "arguments": json.dumps(WEATHER)}}]}
    assert second["messages"][2] == {"role": "tool", "tool_call_id": "call_1_0",
                                     "content": content}
    assert fake.requests[0].body["tool_choice"] == "required"
    assert "tool_choice" not in second  # only the first request is forced
    assert items[-2] == Finish("stop")
    usage = items[-1]
    # summed over both requests (the fake counts words of every message's content)
    assert usage == Usage(prompt_tokens=1 + 3, completion_tokens=0 + 2, total_tokens=6)


def test_a_raising_tool_becomes_an_error_result_the_model_sees(fake: FakeOpenAI) -> None:
    fake.mode = "tool_call"
    weather = Weather(fail=True)
    items = list(make(fake, tools=[weather.get_weather]).stream(user()))
    error = "RuntimeError: the weather service is down for Paris"
    assert of(ToolResult, items) == [ToolResult("call_1_0", error=error)]
    tool_message = fake.requests[1].body["messages"][-1]
    assert json.loads(tool_message["content"]) == {"error": error}
    assert error in texts(items)
    assert Finish("stop") in items


@pytest.mark.parametrize(("arguments", "problem"), [
    ('{"city": "Par', "the arguments are not valid JSON"),
    ("[1, 2]", "the arguments must be a JSON object"),
    ({"town": "Paris"}, "invalid arguments: 'city' is required"),
    ({"city": 7}, "invalid arguments: 'city' must be string, not integer"),
])
def test_invalid_arguments_go_back_to_the_model(fake: FakeOpenAI, arguments: Any,
                                                problem: str) -> None:
    fake.mode = "tool_call"
    fake.tool_calls = [{"name": "get_weather", "arguments": arguments}]
    weather = Weather()
    items = list(make(fake, tools=[weather.get_weather]).stream(user()))
    assert weather.calls == []
    [result] = of(ToolResult, items)
    assert result.error is not None and result.error.startswith(problem)
    assert len(fake.requests) == 2  # the model is asked again, with the error
    second = fake.requests[1].body["messages"]
    sent = arguments if isinstance(arguments, str) else json.dumps(arguments)
    assert second[1]["tool_calls"][0]["function"]["arguments"] == sent  # as the model said
    assert json.loads(second[2]["content"])["error"] == result.error


def test_an_unknown_tool_is_an_error_result(fake: FakeOpenAI) -> None:
    fake.mode = "tool_call"
    fake.tool_calls = [{"name": "launch_rocket", "arguments": {}}]
    items = list(make(fake).stream(user()))
    assert of(ToolResult, items) == [
        ToolResult("call_1_0", error="there is no tool named 'launch_rocket'")]
    assert Finish("stop") in items


def test_max_steps_bounds_a_model_that_calls_tools_forever(fake: FakeOpenAI) -> None:
    fake.mode = "tools_forever"
    weather = Weather()
    items = list(make(fake, tools=[weather.get_weather], max_steps=3).stream(user()))
    assert len(fake.requests) == 3
    assert len(weather.calls) == 2  # the third model request's call is not run
    results = of(ToolResult, items)
    assert len(of(ToolCall, items)) == 3 and len(results) == 3
    assert results[-1].error == "not run: the reply reached its limit of 3 model requests"
    assert items[-2] == Finish("length")
    usage = items[-1]
    assert isinstance(usage, Usage) and usage.prompt_tokens is not None


def test_server_and_client_calls_in_one_step(fake: FakeOpenAI) -> None:
    fake.mode = "tool_calls"  # get_weather (the backend's) and get_time (the client's)
    weather = Weather()
    items = list(make(fake, tools=[weather.get_weather]).stream(user(), tools=CLIENT_TOOLS))
    kinds = [type(p).__name__ for p in items]
    assert kinds == ["ToolCall", "ToolCall", "ToolResult", "Finish", "Usage"]
    assert items[2] == ToolResult("call_1_0", result={"city": "Paris", "temperature": 21,
                                                      "unit": "c"})
    assert items[3] == Finish("tool_calls")
    assert len(fake.requests) == 1  # the client answers get_time; its next request goes on


def test_a_client_request_carrying_tool_results_is_forwarded(fake: FakeOpenAI) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function",
             "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "12:00"},
    ]
    fake.mode = "tool_call"
    items = list(make(fake).stream(messages, tools=CLIENT_TOOLS))
    assert texts(items) == TOOL_REPLY_PREFIX + "12:00"
    assert fake.requests[0].body["messages"] == messages


def test_closing_at_the_tool_call_runs_no_tool_and_sends_nothing_more(
    fake: FakeOpenAI,
) -> None:
    fake.mode = "tool_call"
    weather = Weather()
    stream = make(fake, tools=[weather.get_weather]).stream(user())
    assert isinstance(next(stream), ToolCall)
    stream.close()
    assert weather.calls == []
    assert len(fake.requests) == 1


def test_a_blocking_tool_is_bounded_by_tool_timeout(fake: FakeOpenAI) -> None:
    fake.mode = "tool_call"
    release = threading.Event()

    def get_weather(city: str, unit: str = "c") -> str:
        release.wait(HANG_GUARD)
        return "late"

    try:
        items = list(make(fake, tools=[get_weather], tool_timeout=0.2).stream(user()))
    finally:
        release.set()
    [result] = of(ToolResult, items)
    assert result.error == "the tool did not finish within 0.2 s"
    assert len(fake.requests) == 2 and Finish("stop") in items


def test_a_reply_cut_at_the_token_limit_runs_no_tool(fake: FakeOpenAI) -> None:
    fake.mode = "raw"
    fake.raw_chunks = [
        b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c", "function": '
        b'{"name": "get_weather", "arguments": "{\\"ci"}}]}, "finish_reason": "length"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    weather = Weather()
    items = list(make(fake, tools=[weather.get_weather]).stream(user()))
    assert items == [Finish("length")] and weather.calls == []
