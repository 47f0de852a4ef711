"""The AI SDK and OpenAI wire formats of the chat, and the caps on running generations,
against real gunicorn servers (the official ``openai`` Python SDK as the OpenAI client)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from flask_sse_stream.chat import DemoBackend
from tests.fake_openai import DEFAULT_PIECES, MIDSTREAM_ERROR_MESSAGE, FakeOpenAI
from tests.rawsse import open_stream
from tests.servers import Server, gunicorn_server
from tests.sse_parser import parse

pytestmark = pytest.mark.slow

APP = "tests.apps.protocols_app:create_app()"


def ui_body(chat_id: str, *texts: str) -> dict[str, Any]:
    """What DefaultChatTransport posts: UI messages with parts, alternating user/assistant."""
    messages = [
        {"id": f"m{i}", "role": "user" if i % 2 == 0 else "assistant",
         "parts": [{"type": "step-start"}, {"type": "text", "text": text}]}
        for i, text in enumerate(texts)
    ]
    return {"id": chat_id, "messages": messages, "trigger": "submit-message",
            "messageId": None}


def ui_chunks(raw: bytes) -> list[Any]:
    """The ``data:`` payloads of a UI message stream, JSON-decoded (``[DONE]`` as is)."""
    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in parse(raw).events]


def post_ui(server: Server, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(server.url + "/api/chat", json=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(delay=0.01) as server:
        yield server


@pytest.fixture(scope="module")
def upstream_server(fake: FakeOpenAI) -> Iterator[Server]:
    env = {"FLASK_CHAT_BACKEND": "openai", "FLASK_OPENAI_BASE_URL": fake.base_url}
    with gunicorn_server(APP, env=env, config=None) as server:
        yield server


@pytest.fixture(scope="module")
def slow_demo() -> Iterator[Server]:
    """Pieces 0.3 s apart with heartbeats every 0.1 s: comments between every two chunks."""
    env = {"FLASK_CHAT_DEMO_DELAY": "0.3", "FLASK_SSE_HEARTBEAT_INTERVAL": "0.1"}
    with gunicorn_server(APP, env=env, config=None) as server:
        yield server


# -- AI SDK wire format --------------------------------------------------------------------


def test_ai_sdk_stream_headers_chunk_order_and_done(upstream_server: Server) -> None:
    response = post_ui(upstream_server, ui_body("wire-1", "hello"))
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = ui_chunks(response.content)
    types = [c if c == "[DONE]" else c["type"] for c in chunks]
    n = len(DEFAULT_PIECES)
    assert types == ["start", "start-step", "text-start", *["text-delta"] * n, "text-end",
                     "finish-step", "finish", "[DONE]"]
    assert "".join(c["delta"] for c in chunks if c != "[DONE]" and c["type"] == "text-delta") \
        == "".join(DEFAULT_PIECES)
    finish = chunks[-2]
    assert finish["finishReason"] == "stop"
    assert finish["messageMetadata"]["usage"]["total_tokens"] > 0


def test_ai_sdk_failing_upstream_is_an_error_chunk_not_a_broken_stream(
        upstream_server: Server) -> None:
    response = post_ui(upstream_server, ui_body("wire-2", "mode:error_midstream go"))
    chunks = ui_chunks(response.content)
    assert chunks[-1] == "[DONE]"
    errors = [c for c in chunks[:-1] if c["type"] == "error"]
    assert len(errors) == 1 and MIDSTREAM_ERROR_MESSAGE in errors[0]["errorText"]
    assert chunks[-2] == {"type": "finish", "finishReason": "error"}


@pytest.mark.parametrize(("mode", "ai_reason"), [("length", "length"),
                                                 ("content_filter", "content-filter")])
def test_the_models_finish_reason_reaches_every_protocol(
        upstream_server: Server, mode: str, ai_reason: str) -> None:
    prompt = f"mode:{mode} write a long story"
    native = parse(httpx.get(upstream_server.url + "/chat/stream",
                             params={"message": prompt}, timeout=30).content)
    assert json.loads(native.events[-1].data)["finish_reason"] == mode
    chunks = ui_chunks(post_ui(upstream_server, ui_body(f"fr-{mode}", prompt)).content)
    assert chunks[-2]["type"] == "finish" and chunks[-2]["finishReason"] == ai_reason
    client = openai.OpenAI(base_url=upstream_server.url + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": prompt}], stream=True)
    reasons = [c.choices[0].finish_reason for c in stream if c.choices]
    assert reasons[-1] == mode
    whole = client.chat.completions.create(model="m",
                                           messages=[{"role": "user", "content": prompt}])
    assert whole.choices[0].finish_reason == mode


def test_ai_sdk_resume_replays_the_active_reply_then_204_after_it_finished(
        slow_demo: Server) -> None:
    body = ui_body("resume-1", "tell me a story")
    raw = json.dumps(body).encode()
    with open_stream(slow_demo.url + "/api/chat", "POST", body=raw, timeout=10,
                     headers={"Content-Type": "application/json"}) as first:
        first.read_until(b'"text-delta"')
    # the first connection is gone; the reply goes on (grace period): replay it whole
    resumed = httpx.get(slow_demo.url + "/api/chat/resume-1/stream", timeout=60)
    assert resumed.status_code == 200
    chunks = ui_chunks(resumed.content)
    text = "".join(c["delta"] for c in chunks if c != "[DONE]" and c["type"] == "text-delta")
    assert text == DemoBackend.reply_for([{"role": "user", "content": "tell me a story"}])
    assert chunks[0]["type"] == "start" and chunks[-1] == "[DONE]"
    assert httpx.get(slow_demo.url + "/api/chat/resume-1/stream").status_code == 204
    assert httpx.get(slow_demo.url + "/api/chat/never-started/stream").status_code == 204
    # nothing active to stop any more
    assert httpx.delete(slow_demo.url + "/api/chat/resume-1/stream").status_code == 404


def test_ai_sdk_delete_stops_the_reply_with_an_abort(slow_demo: Server) -> None:
    raw = json.dumps(ui_body("stop-1", "a long one")).encode()
    with open_stream(slow_demo.url + "/api/chat", "POST", body=raw, timeout=10,
                     headers={"Content-Type": "application/json",
                              "Authorization": "Bearer alice"}) as stream:
        stream.read_until(b'"text-delta"')
        assert httpx.delete(slow_demo.url + "/api/chat/stop-1/stream",
                            headers={"Authorization": "Bearer bob"}).status_code == 404
        assert httpx.delete(slow_demo.url + "/api/chat/stop-1/stream",
                            headers={"Authorization": "Bearer alice"}).status_code == 204
        rest = stream.read_all()
    chunks = ui_chunks(rest)
    assert chunks[-1] == "[DONE]"
    assert chunks[-2] == {"type": "abort"}
    assert httpx.delete(slow_demo.url + "/api/chat/stop-1/stream",
                        headers={"Authorization": "Bearer alice"}).status_code == 404


@pytest.mark.parametrize(("body", "status"), [
    ({"id": "x", "messages": []}, 400),
    ({"id": "x", "messages": [{"role": "user", "content": "old format"}]}, 400),
    ({"messages": [{"id": "a", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]},
     400),
    ({"id": "x", "messages": [{"id": "a", "role": "user", "parts": [{"type": "file"}]}]}, 400),
    ({"id": "x", "messages": [{"id": "a", "role": "wizard",
                               "parts": [{"type": "text", "text": "hi"}]}]}, 400),
])
def test_ai_sdk_bad_input_is_a_json_4xx(upstream_server: Server, body: Any,
                                        status: int) -> None:
    response = post_ui(upstream_server, body)
    assert response.status_code == status
    assert response.json()["error"]
    assert post_ui(upstream_server, ui_body("x", "hi"),
                   Authorization="Bearer bad").status_code == 401


# -- OpenAI-compatible endpoint --------------------------------------------------------------


def test_openai_sdk_streams_through_heartbeats(slow_demo: Server) -> None:
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "second turn"}]}]
    expected = DemoBackend.reply_for([
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second turn"}])
    client = openai.OpenAI(base_url=slow_demo.url + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(model="anything", messages=messages,  # type: ignore[call-overload]
                                            stream=True, stream_options={"include_usage": True})
    text, usage, reasons = "", None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            reasons.append(choice.finish_reason)
    assert text == expected
    assert reasons[-1] == "stop"
    assert usage is not None and usage.total_tokens > 0
    # the same stream seen raw: heartbeat comments between chunks, and no id: field
    raw = httpx.post(slow_demo.url + "/v1/chat/completions", timeout=60,
                     json={"messages": messages[-1:], "stream": True}).content
    lines = raw.decode().split("\n")
    assert any(line.startswith(":") for line in lines[3:-4])
    assert not any(line.startswith("id") for line in lines)


def test_openai_sdk_non_stream_and_models(slow_demo: Server) -> None:
    client = openai.OpenAI(base_url=slow_demo.url + "/v1", api_key="x", max_retries=0)
    completion = client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": "whole please"}])
    assert completion.choices[0].message.content == DemoBackend.reply_for(
        [{"role": "user", "content": "whole please"}])
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert [m.id for m in client.models.list()] == ["flask-sse-stream"]


def test_openai_bad_input_gets_openai_style_errors(upstream_server: Server) -> None:
    client = openai.OpenAI(base_url=upstream_server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[], stream=True)
    assert info.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert "messages" in info.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "wizard", "content": "x"}])  # type: ignore[list-item,misc]
    bad = openai.OpenAI(base_url=upstream_server.url + "/v1", api_key="bad", max_retries=0,
                        default_headers={"Authorization": "Bearer bad"})
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    raw = httpx.post(upstream_server.url + "/v1/chat/completions", content=b"{",
                     headers={"Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["message"]


def test_openai_upstream_error_mid_stream_raises_in_the_sdk(upstream_server: Server) -> None:
    client = openai.OpenAI(base_url=upstream_server.url + "/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "mode:error_midstream x"}],
        stream=True)
    with pytest.raises(openai.APIError, match="fake error"):
        for _chunk in stream:
            pass


# -- caps ---------------------------------------------------------------------------------


def test_caps_per_caller_and_per_process() -> None:
    env = {"FLASK_CHAT_DEMO_DELAY": "0.2", "FLASK_CHAT_GRACE_SECONDS": "60",
           "FLASK_CHAT_MAX_GENERATIONS_PER_CALLER": "2", "FLASK_CHAT_MAX_GENERATIONS": "4"}
    with gunicorn_server(APP, env=env, config=None) as server:
        url = server.url

        def native(user: str) -> Any:
            return open_stream(url + "/chat/stream?message=long", timeout=10,
                               headers={"Authorization": f"Bearer {user}"})

        def refused(response: httpx.Response) -> None:
            assert response.status_code == 429
            assert int(response.headers["Retry-After"]) > 0

        alice_1 = native("alice")
        assert alice_1.status == 200
        alice_1.read_until(b"content")
        raw = json.dumps(ui_body("caps", "second")).encode()
        alice_2 = open_stream(url + "/api/chat", "POST", body=raw, timeout=10,
                              headers={"Content-Type": "application/json",
                                       "Authorization": "Bearer alice"})
        assert alice_2.status == 200
        # the third, on any protocol, is refused; the body is JSON in that protocol's shape
        refused(third := httpx.get(url + "/chat/stream?message=x",
                                   headers={"Authorization": "Bearer alice"}))
        assert third.json()["error"]
        refused(oa := httpx.post(url + "/v1/chat/completions",
                                 headers={"Authorization": "Bearer alice"},
                                 json={"messages": [{"role": "user", "content": "x"}]}))
        assert oa.json()["error"]["type"] == "rate_limit_error"
        # a dropped client's generation runs on (grace period) and still counts
        alice_1.close()
        alice_2.close()
        refused(httpx.get(url + "/chat/stream?message=x",
                          headers={"Authorization": "Bearer alice"}))
        # another caller is not affected, until the process cap (4) is reached
        bob = [native("bob"), native("bob")]
        assert [b.status for b in bob] == [200, 200]
        refused(httpx.get(url + "/chat/stream?message=x"))  # anonymous: the process cap
        for stream in bob:
            stream.close()
