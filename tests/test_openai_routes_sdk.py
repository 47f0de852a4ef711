"""The official openai SDKs (Python and npm) against a real gunicorn server's ``/v1``
(our worker class; ``tests/apps/protocols_app.py`` with the scripted backend), reading
Chat Completions and the Responses API through heartbeat comments: pieces 0.12 s apart,
a heartbeat every 0.05 s, so comments fall between every two events."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.apps.scripted import script_text
from tests.servers import OUR_WORKER, Server, gunicorn_server
from tests.sse_parser import parse

pytestmark = pytest.mark.slow

APP = "tests.apps.protocols_app:create_app()"
NODE_DIR = Path(__file__).parent / "node"
PARTS_REASONING = "The user asks about the weather."
LOCATION = {"precision": "city"}
CHAT_TOOLS: Any = [{"type": "function", "function": {
    "name": "get_location", "parameters": {"type": "object", "properties": {}}}}]
RESPONSE_TOOLS: Any = [{"type": "function", "name": "get_location",
                        "parameters": {"type": "object", "properties": {}}, "strict": False}]

OPENING = ["response.created", "response.in_progress"]


def item(kind: str, deltas: int) -> list[str]:
    """The events of one output item with ``deltas`` text deltas (``kind``: output_text
    or reasoning_text)."""
    return ["response.output_item.added", "response.content_part.added",
            *[f"response.{kind}.delta"] * deltas, f"response.{kind}.done",
            "response.content_part.done", "response.output_item.done"]


# the "parts" script: two reasoning pieces, a text piece, a server-side tool step (not
# shown, but it ends the message), three more text pieces
PARTS_EVENTS = [*OPENING, *item("reasoning_text", 2), *item("output_text", 1),
                *item("output_text", 3), "response.completed"]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    env = {"FLASK_CHAT_BACKEND": "scripted", "FLASK_CHAT_DEMO_DELAY": "0.12",
           "FLASK_SSE_HEARTBEAT_INTERVAL": "0.05"}
    with gunicorn_server(APP, env=env, config=None, worker_class=OUR_WORKER) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as sdk:
        yield sdk


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


# -- Responses ---------------------------------------------------------------------------

def test_responses_stream_events_in_order_counted_by_one_with_the_reply_and_usage(
        client: OpenAI) -> None:
    events = list(client.responses.create(model="m", input="parts", stream=True))
    assert [e.type for e in events] == PARTS_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(getattr(e, "delta", "") for e in events
                   if e.type == "response.output_text.delta") == script_text("parts")
    assert "".join(getattr(e, "delta", "") for e in events
                   if e.type == "response.reasoning_text.delta") == PARTS_REASONING
    final = events[-1].response  # type: ignore[union-attr]
    assert final.id == events[0].response.id and final.id.startswith("resp_")  # type: ignore[union-attr]
    assert final.model == "flask-sse-stream"  # the blueprint's model, not the request's
    assert final.usage is not None
    # the scripted backend counts its messages and pieces
    assert (final.usage.input_tokens, final.usage.output_tokens,
            final.usage.total_tokens) == (1, 10, 11)


def test_responses_stream_helper_gives_the_final_output_text(client: OpenAI) -> None:
    with client.responses.stream(model="m", input="parts") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        response = stream.get_final_response()
    assert response.output_text == "".join(deltas) == script_text("parts")
    assert response.status == "completed"


def test_responses_not_streamed_output_text(client: OpenAI) -> None:
    response = client.responses.create(model="m", input="parts")
    assert response.output_text == script_text("parts")
    assert [i.type for i in response.output] == ["reasoning", "message", "message"]


def test_responses_reasoning_only_reply_streams_reasoning_deltas(client: OpenAI) -> None:
    events = list(client.responses.create(model="m", input="reasoning-only", stream=True))
    assert [e.type for e in events] == [*OPENING, *item("reasoning_text", 3),
                                        "response.completed"]
    assert "".join(getattr(e, "delta", "") for e in events) == "Only thinking, no text."


def test_responses_function_tool_round_trip_with_function_call_output(
        client: OpenAI) -> None:
    with client.responses.stream(model="m", input="client-tool",
                                 tools=RESPONSE_TOOLS) as stream:
        first = stream.get_final_response()
    calls = [i for i in first.output if i.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_where", "get_location", LOCATION)]
    second = client.responses.create(model="m", tools=RESPONSE_TOOLS, input=[
        {"role": "user", "content": "client-tool"}, *first.output,  # type: ignore[list-item]
        {"type": "function_call_output", "call_id": "call_where", "output": "Lyon"}])
    assert second.output_text == "the tool said: Lyon"


def test_responses_tools_and_tool_choice_reach_the_backend(client: OpenAI) -> None:
    response = client.responses.create(model="m", input="options", tools=RESPONSE_TOOLS,
                                       tool_choice="required")
    assert json.loads(response.output_text) == {
        "tools": [{"type": "function", "function": {
            "name": "get_location", "parameters": {"type": "object", "properties": {}},
            "strict": False}}],
        "tool_choice": "required"}


def test_responses_errors_raise_the_sdks_exceptions(server: Server, client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="m", input="x", previous_response_id="resp_1")
    assert info.value.param == "previous_response_id"
    with OpenAI(base_url=server.url + "/v1", api_key="bad", max_retries=0) as refused, \
            pytest.raises(openai.AuthenticationError):
        refused.responses.create(model="m", input="x", stream=True)


def test_responses_stream_on_the_wire_has_heartbeats_between_events_and_no_ids(
        server: Server) -> None:
    raw = httpx.post(server.url + "/v1/responses", timeout=30,
                     json={"model": "m", "input": "two-steps", "stream": True}).content
    events = parse(raw).events
    assert events[-1].type == "response.completed"
    assert all(json.loads(e.data)["type"] == e.type for e in events)
    assert b"\nid:" not in raw and not raw.startswith(b"id:")
    between = raw.split(b"event: response.created", 1)[1].rsplit(b"event: response.completed")[0]
    assert between.count(b"\n:") >= 3  # comments fell between the events


# -- Chat Completions ----------------------------------------------------------------------

def test_chat_stream_carries_reasoning_content_the_text_and_usage(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="m", messages=user("parts"), stream=True, stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == script_text("parts")
    assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == \
        PARTS_REASONING
    assert not any(d.tool_calls for d in deltas)  # the server-side call is not shown
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 11


def test_chat_stream_helper_accumulates_the_client_tool_call(client: OpenAI) -> None:
    with client.chat.completions.stream(model="m", messages=user("client-tool"),
                                        tools=CHAT_TOOLS) as stream:
        choice = stream.get_final_completion().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == script_text("client-tool")
    assert [(c.id, c.function.name, json.loads(c.function.arguments))
            for c in choice.message.tool_calls or ()] == [("call_where", "get_location", LOCATION)]


def test_chat_not_streamed_carries_reasoning_content_and_tool_calls(client: OpenAI) -> None:
    message = client.chat.completions.create(model="m", messages=user("parts")).choices[0].message
    assert message.content == script_text("parts")
    assert message.reasoning_content == PARTS_REASONING  # type: ignore[attr-defined]
    called = client.chat.completions.create(model="m", messages=user("client-tool"),
                                            tools=CHAT_TOOLS).choices[0]
    assert called.finish_reason == "tool_calls"
    assert [c.id for c in called.message.tool_calls or ()] == ["call_where"]
    tool_result: Any = [*user("client-tool"), called.message.model_dump(exclude_none=True),
                        {"role": "tool", "tool_call_id": "call_where", "content": "Lyon"}]
    after = client.chat.completions.create(model="m", messages=tool_result, tools=CHAT_TOOLS)
    assert after.choices[0].message.content == "the tool said: Lyon"


def test_chat_tools_and_tool_choice_reach_the_backend(client: OpenAI) -> None:
    choice: Any = {"type": "function", "function": {"name": "get_location"}}
    stream = client.chat.completions.create(model="m", messages=user("options"), stream=True,
                                            tools=CHAT_TOOLS, tool_choice=choice)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert json.loads(text) == {"tools": CHAT_TOOLS, "tool_choice": choice}


def test_chat_bad_request_names_the_field(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[
            *user("x"), {"role": "tool", "tool_call_id": "nobody", "content": "?"}])
    assert info.value.param == "messages[1].tool_call_id"


# -- npm --------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("node") is None
                    or not (NODE_DIR / "node_modules" / "openai").is_dir(),
                    reason="node or the npm packages are missing (scripts/test installs them)")
def test_the_npm_openai_package_reads_both_streams(server: Server) -> None:
    done = subprocess.run(["node", "openai_routes.mjs", server.url + "/v1"], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    chat = result["chat"]
    assert chat["streamed"]["content"] == script_text("parts")
    assert chat["streamed"]["reasoning"] == PARTS_REASONING
    assert chat["streamed"]["finish"] == "stop"
    assert chat["streamed"]["usage"]["total_tokens"] == 11
    assert chat["toolCalls"] == {"finish": "tool_calls", "content": script_text("client-tool"),
                                 "calls": [["call_where", "get_location", LOCATION]]}
    assert chat["whole"] == {"content": script_text("parts"), "reasoning": PARTS_REASONING}

    responses = result["responses"]
    streamed = responses["streamed"]
    assert streamed["types"] == PARTS_EVENTS
    assert streamed["sequence"] == list(range(len(PARTS_EVENTS)))
    assert (streamed["text"], streamed["reasoning"]) == (script_text("parts"), PARTS_REASONING)
    assert streamed["usage"]["total_tokens"] == 11
    assert responses["final"] == {
        "status": "completed", "text": script_text("client-tool"),
        "types": ["message", "function_call"],
        "calls": [["call_where", "get_location", LOCATION]]}
    assert responses["whole"] == {"text": script_text("parts"), "status": "completed"}
    assert responses["refused"] == {"status": 400, "param": "previous_response_id",
                                    "type": "invalid_request_error"}
