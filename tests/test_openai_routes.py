"""Fast tier: the OpenAI blueprint's routes (``/v1/chat/completions``, ``/v1/responses``)
in process, driven by the real ``openai`` Python SDK over ``httpx2.WSGITransport`` (the
SDK's HTTP client; no server: the real-server checks are in ``test_openai_routes_sdk.py``),
and the sink that feeds a request's stateful framer in log order."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from flask import Flask, Request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import OpenAI

from flask_sse_stream import SSE
from flask_sse_stream.chat import BackendError, Reasoning, ToolCall, create_openai_blueprint
from flask_sse_stream.chat.entries import encode_close, encode_entry
from flask_sse_stream.chat.parts import Data, Part
from flask_sse_stream.chat.protocols.openai import OrderedFramingSink
from flask_sse_stream.chat.protocols.openai_responses import ResponseEventFramer
from flask_sse_stream.runtime.threads import ThreadMailbox
from tests.apps.scripted import ScriptedBackend, script_text
from tests.sse_parser import parse

TOOLS: Any = [{"type": "function", "function": {
    "name": "get_location", "description": "where the user is",
    "parameters": {"type": "object", "properties": {"precision": {"type": "string"}}}}}]
FLAT_TOOLS: Any = [{"type": "function", **TOOLS[0]["function"]}]


class FailingBackend:
    """Half a reply, then the upstream breaks."""

    def stream(self, messages: list[dict[str, Any]]) -> Iterator[str | Part]:
        yield Reasoning("hm")
        yield "Half a rep"
        raise BackendError("upstream broke")


def caller(request: Request) -> bool | str:
    return request.headers.get("Authorization") != "Bearer bad"


def make_app(backend: Any, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    SSE(app)
    app.register_blueprint(create_openai_blueprint(backend, authorize=caller, model="test-model"),
                           url_prefix="/v1")
    return app


@pytest.fixture(scope="module")
def scripted() -> ScriptedBackend:
    return ScriptedBackend(delay=0)


@pytest.fixture(scope="module")
def app(scripted: ScriptedBackend) -> Flask:
    return make_app(scripted)


def sdk(app: Flask, api_key: str = "x") -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=api_key, max_retries=0,
                  http_client=httpx2.Client(transport=httpx2.WSGITransport(app=app)))


@pytest.fixture(scope="module")
def client(app: Flask) -> OpenAI:
    return sdk(app)


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


# -- Chat Completions -------------------------------------------------------------------

def test_chat_completion_carries_reasoning_content_and_the_text(client: OpenAI) -> None:
    completion = client.chat.completions.create(model="m", messages=user("parts"))
    message = completion.choices[0].message
    assert message.content == script_text("parts")
    assert message.reasoning_content == "The user asks about the weather."  # type: ignore[attr-defined]
    assert message.tool_calls is None  # the server-side call stays on the server
    assert completion.model == "test-model" and completion.id.startswith("chatcmpl-")


def test_chat_client_tool_call_round_trip_reaches_the_backend_as_messages(
        client: OpenAI, scripted: ScriptedBackend) -> None:
    first = client.chat.completions.create(model="m", messages=user("client-tool"),
                                           tools=TOOLS, tool_choice="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (  # type: ignore[union-attr]
        "call_where", "get_location", {"precision": "city"})
    assert scripted.calls[-1]["tools"] == TOOLS and scripted.calls[-1]["tool_choice"] == "auto"
    assistant: Any = choice.message.model_dump(exclude_none=True)
    second = client.chat.completions.create(model="m", tools=TOOLS, messages=[
        *user("client-tool"), assistant,
        {"role": "tool", "tool_call_id": "call_where", "content": "Lyon"}])
    assert second.choices[0].message.content == "the tool said: Lyon"
    messages = scripted.calls[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["id"] == "call_where"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_where", "content": "Lyon"}


def test_chat_stream_shows_reasoning_and_client_tool_calls(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="m", messages=user("client-tool"), tools=TOOLS, stream=True,
        stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == script_text("client-tool")
    calls = [call for d in deltas for call in d.tool_calls or ()]
    assert [(c.index, c.id, c.function.name) for c in calls] == [  # type: ignore[union-attr]
        (0, "call_where", "get_location")]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_a_failed_reply_not_streamed_is_a_502_the_sdk_raises() -> None:
    client = sdk(make_app(FailingBackend()))
    for call in (lambda: client.chat.completions.create(model="m", messages=user("x")),
                 lambda: client.responses.create(model="m", input="x")):
        with pytest.raises(openai.InternalServerError, match="upstream broke") as info:
            call()
        assert info.value.status_code == 502
        assert info.value.body["type"] == "server_error"  # type: ignore[index]


def test_a_failed_reply_streamed_ends_with_the_sdks_error_or_response_failed() -> None:
    client = sdk(make_app(FailingBackend()))
    with pytest.raises(openai.APIError, match="upstream broke"):
        list(client.chat.completions.create(model="m", messages=user("x"), stream=True))
    events = list(client.responses.create(model="m", input="x", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.error.message == "upstream broke"  # type: ignore[union-attr]
    assert events[-1].response.output_text == "Half a rep"


# -- Responses ----------------------------------------------------------------------------

def test_responses_not_streamed_is_one_response_with_the_output_text(client: OpenAI) -> None:
    response = client.responses.create(model="m", input="parts", instructions="be brief")
    assert response.output_text == script_text("parts")
    assert response.status == "completed" and response.model == "test-model"
    assert response.id.startswith("resp_") and response.instructions == "be brief"
    assert [item.type for item in response.output] == ["reasoning", "message", "message"]
    assert response.usage is not None and response.usage.total_tokens > 0


def test_responses_stream_ids_its_response_after_the_generation(client: OpenAI) -> None:
    events = list(client.responses.create(model="m", input="reasoning-only", stream=True))
    created = events[0]
    assert created.type == "response.created"
    assert created.response.id == events[-1].response.id  # type: ignore[union-attr]
    assert "".join(getattr(e, "delta", "") for e in events
                   if e.type == "response.reasoning_text.delta") == "Only thinking, no text."


def test_responses_tools_and_tool_choice_reach_the_backend_in_the_chat_shape(
        client: OpenAI, scripted: ScriptedBackend) -> None:
    response = client.responses.create(
        model="m", input="options", tools=FLAT_TOOLS,
        tool_choice={"type": "function", "name": "get_location"})
    assert json.loads(response.output_text) == {
        "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_location"}}}
    assert scripted.calls[-1]["messages"] == user("options")


def test_responses_function_call_output_continues_the_reply(
        client: OpenAI, scripted: ScriptedBackend) -> None:
    first = client.responses.create(model="m", input="client-tool", tools=FLAT_TOOLS)
    [call] = [item for item in first.output if item.type == "function_call"]
    second = client.responses.create(model="m", tools=FLAT_TOOLS, input=[
        {"role": "user", "content": "client-tool"}, *first.output,  # type: ignore[list-item]
        {"type": "function_call_output", "call_id": call.call_id, "output": "Lyon"}])
    assert second.output_text == "the tool said: Lyon"
    assert [m["role"] for m in scripted.calls[-1]["messages"]] == ["user", "assistant", "tool"]


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": "x", "background": True}, "background"),
    ({"input": 5}, "input"),
])
def test_responses_refusals_are_bad_requests_naming_the_field(
        client: OpenAI, body: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="m", **body)
    assert info.value.param == param
    assert info.value.body["type"] == "invalid_request_error"  # type: ignore[index]


def test_a_refused_caller_gets_authentication_errors_on_every_route(app: Flask) -> None:
    bad = sdk(app, api_key="bad")
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model="m", input="x")
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="m", messages=user("x"), stream=True)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/chat/completions"])
def test_bodies_that_are_not_json_objects_get_openai_shaped_errors(app: Flask,
                                                                   path: str) -> None:
    web = app.test_client()
    for kwargs, status in (({"data": b"{", "content_type": "application/json"}, 400),
                           ({"data": b"[]", "content_type": "application/json"}, 400),
                           ({"data": b"input=x", "content_type": "text/plain"}, 415)):
        response = web.post(path, **kwargs)
        assert response.status_code == status
        error = response.get_json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error"
        assert "param" in error and "code" in error


def test_the_stream_cap_refuses_in_openais_shape_with_retry_after(
        scripted: ScriptedBackend) -> None:
    web = make_app(scripted, SSE_MAX_STREAMS=1).test_client()
    held = web.post("/v1/responses", json={"model": "m", "input": "x", "stream": True},
                    buffered=False)
    try:
        refused = web.post("/v1/responses", json={"model": "m", "input": "x", "stream": True})
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.get_json()["error"]["type"] == "server_error"
        # a request that is not a stream does not need a place
        whole = web.post("/v1/responses", json={"model": "m", "input": "x"})
        assert whole.status_code == 200
    finally:
        held.close()


# -- hostile bodies -------------------------------------------------------------------------

KEYS = ["model", "input", "instructions", "stream", "tools", "tool_choice", "type", "role",
        "content", "text", "name", "call_id", "output", "arguments", "messages",
        "tool_calls", "tool_call_id", "function", "parameters", "previous_response_id"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.sampled_from(["user", "assistant", "developer", "tool", "function", "message",
                       "function_call", "function_call_output", "input_text", "auto"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS), children, max_size=6),
    max_leaves=24,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_values, path=st.sampled_from(["/v1/responses", "/v1/chat/completions"]))
def test_any_json_body_is_a_reply_or_an_openai_4xx(app: Flask, body: Any, path: str) -> None:
    response = app.test_client().post(path, json=body)
    raw = response.get_data()
    assert response.status_code < 500, raw
    if response.status_code >= 400:
        error = json.loads(raw)["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert error["type"] == "invalid_request_error"
        return
    if response.mimetype == "application/json":
        assert json.loads(raw)["object"] in ("response", "chat.completion")
        return
    events = parse(raw).events
    last = events[-1].data if path.endswith("completions") else events[-1].type
    assert last in ("[DONE]", "response.completed")


# -- the ordered framing sink -----------------------------------------------------------------

def log(*items: str | Part) -> list[bytes]:
    """The log's encoded entries of a reply that yielded ``items``, then its close."""
    chunks = [encode_entry("s", seq, item) for seq, item in enumerate(items, 1)]
    return [*chunks, encode_close("s", len(items) + 1, {"finish_reason": "stop"})]


def test_entries_that_frame_to_nothing_never_reach_the_mailbox() -> None:
    """An empty chunk in a mailbox is its END: a hidden entry must not end the stream."""
    mailbox = ThreadMailbox(10)
    sink = OrderedFramingSink(mailbox, ResponseEventFramer("resp_s", "m"))
    data, text, call = log(Data("progress", 1), "hi", ToolCall("c", "f", {}))[:3]
    assert sink.offer(data) and sink.offer(call)  # shown later, or never
    assert mailbox.take(0) is None
    assert sink.offer(text)
    assert b"response.output_text.delta" in b"".join(mailbox.take(0) or [])


def test_a_live_entry_that_overtakes_the_prelude_waits_for_it() -> None:
    """The generation's thread may hand over entry N+1 before the request's thread has
    framed the prelude 1..N: sequence numbers still count up by one, in log order."""
    chunks = log(*[f"w{n} " for n in range(60)])
    for attempt in range(200):
        framer = ResponseEventFramer("resp_s", "m")
        opening = framer.opening()
        mailbox = ThreadMailbox(100)
        sink = OrderedFramingSink(mailbox, framer)
        split = 1 + attempt % 40
        barrier = threading.Barrier(2)
        prelude: list[bytes] = []

        def frame_prelude(sink: OrderedFramingSink = sink, split: int = split,
                          barrier: threading.Barrier = barrier,
                          prelude: list[bytes] = prelude) -> None:
            barrier.wait()
            prelude.append(sink.frame(b"".join(chunks[:split])))

        thread = threading.Thread(target=frame_prelude)
        thread.start()
        barrier.wait()
        for chunk in chunks[split:]:
            sink.offer(chunk)
        thread.join()
        raw = opening + prelude[0] + b"".join(mailbox.take(0) or [])
        events = [json.loads(e.data) for e in parse(raw).events]
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert "".join(e["delta"] for e in events
                       if e["type"] == "response.output_text.delta") == \
            "".join(f"w{n} " for n in range(60))
        assert events[-1]["type"] == "response.completed"


def test_an_entry_handed_over_twice_is_framed_once() -> None:
    mailbox = ThreadMailbox(10)
    sink = OrderedFramingSink(mailbox, ResponseEventFramer("resp_s", "m"))
    first, second = log("a", "b")[:2]
    prelude = sink.frame(first + second)
    assert sink.offer(second)
    assert mailbox.take(0) is None
    assert prelude.count(b"event: response.output_text.delta") == 2
