"""Fast tier: the AI SDK routes in process (Flask's test client, no server): the client
cookie that binds a chat's reply to the browser, the header assistant-ui resumes with,
the request's tools, and refusals that name the UI message at fault.

The same behaviour on real gunicorn servers, with real clients: tests/test_ai_sdk_server.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Request
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_sse_stream import SSE
from flask_sse_stream.chat import create_ai_sdk_blueprint
from flask_sse_stream.chat.protocols.ai_sdk import COOKIE
from flask_sse_stream.testing import read_events
from tests.apps.scripted import ScriptedBackend


class GateBackend:
    """Says "first ", then waits for ``gate`` before "second": a reply that is still
    running for as long as a test needs. (The empty pieces while it waits let the
    runner's thread mode see a cancel: it checks between pieces.)"""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def stream(self, messages: list[dict[str, Any]]) -> Iterator[str]:
        yield "first "
        while not self.gate.wait(0.01):
            yield ""
        yield "second"


def user_id(request: Request) -> bool | str:
    return request.headers.get("X-User") or True


def make_app(backend: Any, **options: Any) -> Flask:
    app = Flask(__name__)
    SSE(app)
    app.register_blueprint(create_ai_sdk_blueprint(backend, authorize=user_id, **options),
                           url_prefix="/api/chat")
    return app


def body(chat_id: str, *texts: str, **extra: Any) -> dict[str, Any]:
    messages = [{"id": f"m{i}", "role": "user" if i % 2 == 0 else "assistant",
                 "parts": [{"type": "text", "text": text}]} for i, text in enumerate(texts)]
    return {"id": chat_id, "messages": messages, "trigger": "submit-message", **extra}


def chunks(raw: bytes) -> list[Any]:
    from tests.sse_parser import parse

    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in parse(raw).events]


def set_cookie_header(response: Any) -> str:
    [header] = [v for k, v in response.headers.items() if k == "Set-Cookie"]
    return str(header)


@pytest.fixture
def gate() -> Iterator[GateBackend]:
    backend = GateBackend()
    yield backend
    backend.gate.set()  # let every reply still waiting end


# -- the client cookie ------------------------------------------------------------------------


def test_the_first_response_sets_the_client_cookie_httponly_lax_on_the_prefix() -> None:
    client = make_app(ScriptedBackend()).test_client()
    first = client.get("/api/chat/never/stream")
    assert first.status_code == 204
    header = set_cookie_header(first)
    name, _, value = header.split(";")[0].partition("=")
    assert name == COOKIE and len(value) == 32 and int(value, 16) >= 0  # 128 bits, hex
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in header.split(";")[1:]}
    assert attributes["path"] == "Path=/api/chat"
    assert attributes["samesite"] == "SameSite=Lax"
    assert "httponly" in attributes and "secure" not in attributes
    assert "expires" not in attributes and "max-age" not in attributes  # a session cookie
    # every response of the blueprint to a request without it: a refusal and a stream too
    assert COOKIE in set_cookie_header(make_app(ScriptedBackend()).test_client().post(
        "/api/chat", json={"id": "x"}))
    assert COOKIE in set_cookie_header(make_app(ScriptedBackend()).test_client().post(
        "/api/chat", json=body("x", "hi")))
    # kept from then on: the next requests carry it, nothing new is set
    again = client.get("/api/chat/never/stream")
    assert "Set-Cookie" not in again.headers
    assert client.get_cookie(COOKIE, path="/api/chat").value == value  # type: ignore[union-attr]


def test_on_https_the_cookie_is_secure_and_its_path_includes_the_script_root() -> None:
    client = make_app(ScriptedBackend()).test_client()
    response = client.get("/api/chat/never/stream", base_url="https://chat.example/app")
    header = set_cookie_header(response)
    assert "; Secure" in header and "Path=/app/api/chat" in header


@pytest.mark.parametrize("forged", ["", "x" * 32, "A" * 32, "0" * 31, "0" * 33, "é" * 32])
def test_a_cookie_this_blueprint_did_not_set_is_replaced(forged: str) -> None:
    client = make_app(ScriptedBackend()).test_client()
    client.set_cookie(COOKIE, forged, path="/api/chat")
    name, _, value = set_cookie_header(client.get("/api/chat/never/stream")).split(";")[0] \
        .partition("=")
    assert name == COOKIE and value != forged and len(value) == 32


def test_each_mount_of_the_blueprint_scopes_the_cookie_to_its_own_prefix() -> None:
    app = Flask(__name__)
    SSE(app)
    bp = create_ai_sdk_blueprint(ScriptedBackend())
    app.register_blueprint(bp, url_prefix="/api/chat")
    app.register_blueprint(bp, url_prefix="/v2/chat/", name="ai_chat_v2")
    client = app.test_client()
    assert "Path=/api/chat;" in set_cookie_header(client.get("/api/chat/x/stream"))
    assert "Path=/v2/chat;" in set_cookie_header(client.get("/v2/chat/x/stream"))


# -- bindings -----------------------------------------------------------------------------------


def with_cookie(app: Flask) -> FlaskClient:
    """A test client (its own cookie jar) that already got its cookie."""
    client = app.test_client()
    client.get("/api/chat/warm-up/stream")
    assert client.get_cookie(COOKIE, path="/api/chat") is not None
    return client


def test_a_reply_is_bound_to_the_cookie_of_the_request_that_started_it(
        gate: GateBackend) -> None:
    app = make_app(gate)
    alice, mallory, plain = with_cookie(app), with_cookie(app), app.test_client()
    first = alice.post("/api/chat", json=body("c1", "hello"), buffered=False)
    assert first.status_code == 200
    read_events(first, count=3)  # start, start-step, text-start + the first delta
    assert mallory.get("/api/chat/c1/stream").status_code == 204
    assert plain.get("/api/chat/c1/stream").status_code == 204
    assert mallory.delete("/api/chat/c1/stream").status_code == 404
    assert plain.delete("/api/chat/c1/stream").status_code == 404
    resumed = alice.get("/api/chat/c1/stream", buffered=False)
    assert resumed.status_code == 200
    assert [json.loads(e.data)["type"] for e in read_events(resumed, count=4)] == \
        ["start", "start-step", "text-start", "text-delta"]
    assert alice.delete("/api/chat/c1/stream").status_code == 204


def test_a_user_id_from_authorize_binds_the_reply_whatever_the_cookie(
        gate: GateBackend) -> None:
    app = make_app(gate)
    laptop, phone, stranger = with_cookie(app), with_cookie(app), with_cookie(app)
    started = laptop.post("/api/chat", json=body("c2", "hi"), headers={"X-User": "ann"},
                          buffered=False)
    read_events(started, count=3)
    # the same user on another device (another cookie) finds it; nobody else does
    assert stranger.get("/api/chat/c2/stream").status_code == 204
    assert stranger.get("/api/chat/c2/stream", headers={"X-User": "bob"}).status_code == 204
    assert phone.delete("/api/chat/c2/stream", headers={"X-User": "ann"}).status_code == 204


def test_a_request_with_the_cookie_resumes_and_stops_an_unbound_reply_of_its_chat(
        gate: GateBackend) -> None:
    """A browser's very first POST carries no cookie yet: its reload resumes that reply
    and its Stop stops it, although later requests carry the cookie."""
    app = make_app(gate)
    browser = app.test_client()
    first = browser.post("/api/chat", json=body("c3", "hi"), buffered=False)
    read_events(first, count=3)
    assert browser.get_cookie(COOKIE, path="/api/chat") is not None  # it has one now
    resumed = browser.get("/api/chat/c3/stream", buffered=False)
    assert resumed.status_code == 200
    resumed.close()
    assert browser.delete("/api/chat/c3/stream").status_code == 204


# -- what the routes send and take ----------------------------------------------------------


def test_both_streams_name_the_chat_for_assistant_ui_to_resume(gate: GateBackend) -> None:
    client = make_app(gate).test_client()
    chat_id = "thread/ü 1?"
    posted = client.post("/api/chat", json=body(chat_id, "hi"), buffered=False)
    assert posted.headers["x-resumable-stream-id"] == "thread%2F%C3%BC%201%3F"
    assert posted.headers["x-vercel-ai-ui-message-stream"] == "v1"
    read_events(posted, count=3)
    resumed = client.get("/api/chat/plain-id/stream")
    assert resumed.status_code == 204 and "x-resumable-stream-id" not in resumed.headers
    client.post("/api/chat", json=body("plain-id", "hi"), buffered=False).close()
    again = client.get("/api/chat/plain-id/stream", buffered=False)
    assert again.headers["x-resumable-stream-id"] == "plain-id"
    again.close()


def test_assistant_ui_tools_reach_the_backend_as_function_tools() -> None:
    backend = ScriptedBackend()
    client = make_app(backend).test_client()
    tools = {"get_location": {"description": "Where the user is",
                              "parameters": {"type": "object", "properties": {}},
                              "providerOptions": {"x": 1}},
             "confirm": {"parameters": {"type": "object"}}}
    response = client.post("/api/chat", json=body("t1", "options please", tools=tools))
    text = "".join(c["delta"] for c in chunks(response.get_data())
                   if c != "[DONE]" and c["type"] == "text-delta")
    echoed = json.loads(text)  # (the test client sends JSON with its keys sorted)
    assert sorted(echoed["tools"], key=lambda t: t["function"]["name"], reverse=True) == [
        {"type": "function", "function": {"name": "get_location",
                                          "description": "Where the user is",
                                          "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "confirm",
                                          "parameters": {"type": "object"}}}]
    # none (assistant-ui sends {} without frontend tools): the backend gets no tools
    client.post("/api/chat", json=body("t2", "options", tools={}))
    assert backend.calls[-1]["tools"] is None


@pytest.mark.parametrize("tools", [
    "get_location", 42, {"bad name!": {"parameters": {}}}, {"ok": "not an object"},
    {"ok": {"parameters": "not a schema"}}, {f"t{i}": {} for i in range(129)},
    [{"type": "web_search"}],
])
def test_bad_tools_are_a_400_and_nothing_starts(tools: Any) -> None:
    backend = ScriptedBackend()
    response = make_app(backend).test_client().post("/api/chat",
                                                    json=body("t3", "hi", tools=tools))
    assert response.status_code == 400 and "tools" in response.get_json()["error"]
    assert backend.calls == []


def test_a_refusal_names_the_ui_message_not_the_backend_message() -> None:
    """The UI message at index 2 follows an assistant message that becomes three backend
    messages (its tool call and result): the error still says messages[2]."""
    assistant = {"id": "a", "role": "assistant", "parts": [
        {"type": "step-start"}, {"type": "text", "text": "Checking."},
        {"type": "tool-weather", "toolCallId": "c1", "state": "output-available",
         "input": {"city": "Paris"}, "output": {"sky": "sunny"}}]}
    messages = [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "hi"}]},
                assistant, {"id": "u2", "role": "user", "parts": [{"type": "text"}]}]
    client = make_app(ScriptedBackend()).test_client()
    response = client.post("/api/chat", json={"id": "e1", "messages": messages})
    assert response.status_code == 400
    assert response.get_json() == {"error": "messages[2].parts[0]: a text part needs text"}
    long = [*messages[:2], {"id": "u2", "role": "user",
                            "parts": [{"type": "text", "text": "x" * 9000}]}]
    too_long = client.post("/api/chat", json={"id": "e1", "messages": long})
    assert too_long.status_code == 413 and "(at messages[2])" in too_long.get_json()["error"]


# -- hostile input ----------------------------------------------------------------------------

FUZZ_APP = make_app(ScriptedBackend())  # one app for every example: hypothesis calls often
FUZZ_CLIENT = FUZZ_APP.test_client()

tool_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text() | st.sampled_from(["description", "parameters", "type",
                                                   "function", "name"]),
                      children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(tools=tool_values)
def test_any_tools_value_is_a_4xx_or_a_whole_reply(tools: Any) -> None:
    response = FUZZ_CLIENT.post("/api/chat", json=body("fuzz", "options", tools=tools))
    if response.status_code != 200:
        assert 400 <= response.status_code < 500
        assert isinstance(response.get_json()["error"], str)
        return
    assert response.get_data().endswith(b"data: [DONE]\n\n")


@settings(max_examples=150, deadline=None)
@given(value=st.text(alphabet=st.characters(min_codepoint=0x21, blacklist_categories=["Cs"],
                                            blacklist_characters=";,\\\""), max_size=64))
def test_any_cookie_value_is_either_ours_or_replaced(value: str) -> None:
    # as a client sends it: UTF-8 bytes, which WSGI hands over as latin-1 text
    raw = f"{COOKIE}={value}".encode().decode("latin-1")
    response = FUZZ_APP.test_client().get("/api/chat/fuzz/stream", headers={"Cookie": raw})
    assert response.status_code == 204
    ours = len(value) == 32 and all(c in "0123456789abcdef" for c in value)
    assert ("Set-Cookie" in response.headers) is not ours
