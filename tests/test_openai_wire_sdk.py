"""The real openai SDKs (Python and npm) reading both OpenAI wire formats over a real
socket, with heartbeat comments (``: ping``, no blank line after) between every event.

No library server: a tiny ``http.server`` app parses each request with this library's
input parsers (so the SDKs' own request bodies are what they check) and streams the
framers' output for a fixed reply, picked by the request's ``model``
(``tests/openai_wire.py`` SCENARIOS)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from flask_sse_stream.chat.protocols.openai_chat import (
    ChatChunkFramer,
    ChatCompletionBuilder,
    chat_request,
)
from flask_sse_stream.chat.protocols.openai_responses import ResponseBuilder, ResponseEventFramer
from flask_sse_stream.chat.protocols.openai_responses_input import responses_request
from flask_sse_stream.chat.validation import ChatInputError as OpenAIInputError
from flask_sse_stream.chat.validation import ChatLimits
from tests.openai_wire import SCENARIOS, STREAM_ID, TEXTS, USAGE, WEATHER, with_heartbeats

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).parent / "node"
PING = b": ping\n"
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time"}},
]


class WireHandler(BaseHTTPRequestHandler):
    """POST /v1/chat/completions and /v1/responses, answered from SCENARIOS."""

    server: WireServer

    def log_message(self, format: str, *args: Any) -> None:  # the tests stay quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        entries = SCENARIOS[body.get("model", "text")]
        try:
            if self.path == "/v1/chat/completions":
                self._chat(body, entries)
            elif self.path == "/v1/responses":
                self._responses(body, entries)
            else:
                self._json(404, {"error": {"message": "no such route", "type": "not_found"}})
        except OpenAIInputError as error:
            self._json(error.status, {"error": {"message": error.message, "param": error.param,
                                                "type": "invalid_request_error", "code": None}})

    def _chat(self, body: dict[str, Any], entries: list[Any]) -> None:
        request = chat_request(body, ChatLimits())
        self.server.requests.append(request)
        if not request.stream:
            builder = ChatCompletionBuilder(f"chatcmpl-{STREAM_ID}", body["model"])
            for entry in entries:
                builder.add(entry)
            self._json(200, builder.completion())
            return
        framer = ChatChunkFramer(f"chatcmpl-{STREAM_ID}", body["model"],
                                 include_usage=request.include_usage)
        self._stream([framer.opening(), *(framer.frame(entry) for entry in entries)])

    def _responses(self, body: dict[str, Any], entries: list[Any]) -> None:
        request = responses_request(body, ChatLimits())
        self.server.requests.append(request)
        if not request.stream:
            builder = ResponseBuilder(f"resp_{STREAM_ID}", body["model"], echo=request.echo)
            for entry in entries:
                builder.add(entry)
            self._json(200, builder.response())
            return
        framer = ResponseEventFramer(f"resp_{STREAM_ID}", body["model"], echo=request.echo)
        self._stream([framer.opening(), *(framer.frame(entry) for entry in entries)])

    def _json(self, status: int, value: Any) -> None:
        raw = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _stream(self, frames: list[bytes]) -> None:
        """The frames, a heartbeat before, between and after every event, one write per
        event (the body ends when the connection closes: HTTP/1.0)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(PING)
        for event in with_heartbeats(frames, b"\0").split(b"\0"):
            if event:
                self.wfile.write(event + PING)
                self.wfile.flush()


class WireServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), WireHandler)
        self.requests: list[Any] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServer]:
    server = WireServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def client(wire: WireServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=wire.base_url, api_key="not-needed", max_retries=0) as sdk:
        yield sdk


def hi() -> list[Any]:
    return [{"role": "user", "content": "hi"}]


# -- Chat Completions -------------------------------------------------------------------

def test_chat_stream_carries_reasoning_content_and_usage(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="reasoning", messages=hi(), stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == TEXTS["reasoning"]
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == \
        "Let me think."
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == \
        USAGE["total_tokens"]


def test_chat_stream_helper_accumulates_client_tool_calls(client: OpenAI) -> None:
    with client.chat.completions.stream(model="client_tool", messages=hi(),
                                        tools=TOOLS) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [(c.id, c.function.name, json.loads(c.function.arguments))
            for c in choice.message.tool_calls or ()] == [
        ("call_a", "get_weather", WEATHER), ("call_b", "get_time", {})]


def test_chat_tools_and_tool_choice_reach_the_parser_as_the_sdk_sends_them(
        client: OpenAI, wire: WireServer) -> None:
    client.chat.completions.create(model="text", messages=hi(), tools=TOOLS,
                                   tool_choice={"type": "function",
                                                "function": {"name": "get_time"}})
    request = wire.requests[-1]
    assert request.tools == TOOLS
    assert request.tool_choice == {"type": "function", "function": {"name": "get_time"}}


def test_chat_completion_not_streamed_carries_tool_calls_and_reasoning(client: OpenAI) -> None:
    message = client.chat.completions.create(model="client_tool", messages=hi()).choices[
        0].message
    assert [c.id for c in message.tool_calls or ()] == ["call_a", "call_b"]
    assert message.reasoning_content == "I need the weather."  # type: ignore[attr-defined]


def test_chat_stream_failure_raises_the_sdks_api_error(client: OpenAI) -> None:
    with pytest.raises(openai.APIError, match="upstream broke"):
        list(client.chat.completions.create(model="failure", messages=hi(), stream=True))


def test_chat_tool_round_trip_reaches_the_backend_as_tool_messages(
        client: OpenAI, wire: WireServer) -> None:
    first = client.chat.completions.create(model="client_tool", messages=hi(), tools=TOOLS)
    assistant = first.choices[0].message.model_dump(exclude_none=True)
    client.chat.completions.create(model="text", tools=TOOLS, messages=[
        *hi(), assistant,  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "9:00"}])
    messages = wire.requests[-1].messages
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_a", "call_b"]


# -- Responses --------------------------------------------------------------------------

def test_responses_create_stream_counts_sequence_numbers_and_gives_the_text(
        client: OpenAI) -> None:
    events = list(client.responses.create(model="reasoning", input="hi", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(getattr(e, "delta", "") for e in events
                   if e.type == "response.output_text.delta") == TEXTS["reasoning"]
    assert "".join(getattr(e, "delta", "") for e in events
                   if e.type == "response.reasoning_text.delta") == "Let me think."
    usage = events[-1].response.usage
    assert usage is not None and usage.total_tokens == USAGE["total_tokens"]


@pytest.mark.parametrize("scenario", ["text", "reasoning", "client_tool", "server_tool"])
def test_responses_stream_final_response_output_text(client: OpenAI, scenario: str) -> None:
    with client.responses.stream(model=scenario, input="hi") as stream:
        response = stream.get_final_response()
    assert response.output_text == TEXTS[scenario]
    assert response.status == "completed"


def test_responses_not_streamed_output_text(client: OpenAI) -> None:
    response = client.responses.create(model="server_tool", input="hi")
    assert response.output_text == TEXTS["server_tool"]
    assert [item.type for item in response.output] == ["message", "message"]


def test_responses_function_tool_round_trip(client: OpenAI, wire: WireServer) -> None:
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"},
                   "strict": False}, {"type": "function", "name": "get_time"}]
    with client.responses.stream(model="client_tool", input="weather?", tools=tools) as stream:
        first = stream.get_final_response()
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.call_id, json.loads(c.arguments)) for c in calls] == [
        ("call_a", WEATHER), ("call_b", {})]
    items: Any = [{"role": "user", "content": "weather?"}, *first.output,
                  *({"type": "function_call_output", "call_id": c.call_id, "output": "ok"}
                    for c in calls)]
    client.responses.create(model="text", tools=tools, input=items)
    messages = wire.requests[-1].messages
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert messages[1]["content"] == "Checking."
    assert [m.get("tool_call_id") for m in messages[2:]] == ["call_a", "call_b"]


def test_responses_failure_ends_with_response_failed(client: OpenAI) -> None:
    with client.responses.stream(model="failure", input="hi") as stream:
        events = list(stream)
        assert events[-1].type == "response.failed"
        assert events[-1].response.error.message == "upstream broke"  # type: ignore[union-attr]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()


def test_responses_cancel_ends_with_response_incomplete(client: OpenAI) -> None:
    events = list(client.responses.create(model="cancel", input="hi", stream=True))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "cancelled"
    assert last.response.output_text == TEXTS["cancel"]


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"background": True}, "background"),
])
def test_responses_unsupported_fields_raise_bad_request_naming_them(
        client: OpenAI, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="text", input="hi", **kwargs)
    assert info.value.param == param


# -- npm ----------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("node") is None
                    or not (NODE_DIR / "node_modules" / "openai").is_dir(),
                    reason="node or the npm packages are missing (scripts/test installs them)")
def test_the_npm_openai_package_reads_both_formats(wire: WireServer) -> None:
    done = subprocess.run(["node", "openai_wire.mjs", wire.base_url], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    chat = result["chat"]
    assert chat["reasoning"]["content"] == TEXTS["reasoning"]
    assert chat["reasoning"]["reasoning"] == "Let me think."
    assert chat["reasoning"]["usage"]["total_tokens"] == USAGE["total_tokens"]
    assert chat["serverTool"]["content"] == TEXTS["server_tool"]
    assert chat["toolCalls"] == {"finish": "tool_calls", "content": "Checking.", "calls": [
        ["call_a", "get_weather", WEATHER], ["call_b", "get_time", {}]]}
    assert chat["whole"] == {"content": TEXTS["reasoning"], "reasoning": "Let me think."}
    assert "upstream broke" in chat["failure"]

    responses = result["responses"]
    reasoning = responses["reasoning"]
    assert reasoning["sequence"] == list(range(len(reasoning["types"])))
    assert (reasoning["text"], reasoning["reasoning"]) == (TEXTS["reasoning"], "Let me think.")
    assert reasoning["types"][-1] == "response.completed"
    assert responses["failure"]["types"][-1] == "response.failed"
    assert responses["failure"]["last"]["error"]["message"] == "upstream broke"
    assert responses["cancel"]["types"][-1] == "response.incomplete"
    assert responses["cancel"]["last"]["status"] == "cancelled"
    assert responses["finalText"] == {"status": "completed", "text": TEXTS["text"],
                                      "types": ["message"], "calls": []}
    assert responses["finalTool"]["types"] == ["reasoning", "message", "function_call",
                                               "function_call"]
    assert responses["finalTool"]["calls"] == [["call_a", "get_weather", WEATHER],
                                               ["call_b", "get_time", {}]]
    assert responses["whole"] == {"text": TEXTS["server_tool"], "status": "completed"}
    assert responses["refused"] == {"status": 400, "param": "previous_response_id",
                                    "type": "invalid_request_error"}
