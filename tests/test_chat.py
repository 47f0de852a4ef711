"""The chat blueprint on the example app, served by real gunicorn gevent workers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from flask_sse_stream.chat import DemoBackend
from tests.chat import demo_reply, partial_chat, run_chat
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chat_server() -> Iterator[Server]:
    # CHAT_MAX_CHARS below gunicorn's 4 KiB request line, so GET can exceed it too
    env = {"FLASK_CHAT_DEMO_DELAY": "0.005", "FLASK_CHAT_MAX_CHARS": "2000"}
    with gunicorn_server(env=env) as server:
        yield server


@pytest.fixture(scope="module")
def slow_server() -> Iterator[Server]:
    env = {"FLASK_CHAT_DEMO_DELAY": "0.25", "FLASK_CHAT_GRACE_SECONDS": "5",
           "FLASK_SSE_HEARTBEAT_INTERVAL": "0.5"}
    with gunicorn_server(env=env) as server:
        yield server


def test_get_and_post_stream_the_same_reply(chat_server: Server) -> None:
    prompt = "Why is the sky blue?"
    got = run_chat(chat_server, "GET", prompt)
    posted = run_chat(chat_server, "POST", prompt)
    assert got.text == posted.text == demo_reply(prompt)
    assert len(got.pieces) > 20  # token by token, not one blob
    assert got.close["finish_reason"] == "stop"
    assert "usage" in got.close
    assert got.stream_id != posted.stream_id
    for result in (got, posted):
        assert result.seqs() == list(range(1, len(result.events) + 1))  # consecutive from 1
        assert {e.last_event_id.split(":")[0] for e in result.events} == {result.stream_id}


def test_post_with_a_messages_list(chat_server: Server) -> None:
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "second question"}]
    result = run_chat(chat_server, "POST", body={"messages": messages})
    assert result.text == DemoBackend.reply_for(messages)
    assert "second question" in result.text


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_resume_after_a_drop_gets_exactly_the_missing_text(chat_server: Server,
                                                           method: str) -> None:
    prompt = f"resume me via {method}"
    first = partial_chat(chat_server, method, prompt, count=7)
    rest = run_chat(chat_server, method, prompt,
                    headers={"Last-Event-ID": first.events[-1].last_event_id})
    assert rest.stream_id == first.stream_id  # the same generation, not a new one
    assert rest.seqs()[0] == 8
    assert first.text + rest.text == demo_reply(prompt)
    # after the close event: 204, which stops EventSource from reconnecting
    done = httpx.request(method, chat_server.url + "/chat/stream",
                         headers={"Last-Event-ID": rest.events[-1].last_event_id,
                                  "Content-Type": "application/json"},
                         content=json.dumps({"message": prompt}) if method == "POST" else None)
    assert done.status_code == 204


def test_resume_from_the_query_parameter(chat_server: Server) -> None:
    first = partial_chat(chat_server, "GET", "query resume", count=3)
    last = first.events[-1].last_event_id
    response = httpx.get(chat_server.url + "/chat/stream", params={"lastEventId": last})
    assert response.status_code == 200
    assert f"id: {first.stream_id}:4\n".encode() in response.content


def test_unknown_stream_is_never_restarted(chat_server: Server) -> None:
    result = run_chat(chat_server, "GET", "anything",
                      headers={"Last-Event-ID": "AAAAAAAAAAAAAAAAAAAAAA:3"})
    assert result.pieces == []
    assert result.close["finish_reason"] == "error"
    assert "no longer available" in result.close["error"]


def test_delete_cancels_a_running_generation(slow_server: Server) -> None:
    from tests.rawsse import open_stream
    from tests.sse_parser import parse

    with open_stream(slow_server.url + "/chat/stream?message=stop+me", timeout=10) as resp:
        body = b""
        while not parse(body).events:
            body += resp.read_chunk()
        stream_id = parse(body).events[0].last_event_id.split(":")[0]
        assert resp.headers["x-stream-id"] == stream_id
        response = httpx.delete(f"{slow_server.url}/chat/stream/{stream_id}")
        assert response.status_code == 204
        body += resp.read_all()  # the stream ends by itself after the close event
    events = parse(body).events
    assert events[-1].type == "close"
    assert json.loads(events[-1].data) == {"finish_reason": "cancelled"}
    assert len(events) < 20  # the reply has ~70 pieces at 0.25 s: it stopped early
    again = httpx.delete(f"{slow_server.url}/chat/stream/{stream_id}")
    assert again.status_code == 204  # known (finished) stream: idempotent


def test_delete_unknown_stream_is_404(chat_server: Server) -> None:
    response = httpx.delete(chat_server.url + "/chat/stream/nope-nope-nope")
    assert response.status_code == 404
    assert response.json()["error"]


def test_dropped_client_generation_continues_within_grace(slow_server: Server) -> None:
    first = partial_chat(slow_server, "GET", "grace", count=2)
    # reconnect within the grace period (5 s, ample on a loaded machine): it kept running
    rest = run_chat(slow_server, "GET", "grace",
                    headers={"Last-Event-ID": first.events[-1].last_event_id})
    assert rest.close["finish_reason"] == "stop"
    assert first.text + rest.text == demo_reply("grace")


BAD_REQUESTS = [
    ("GET", "/chat/stream", None, {}, 400),  # no message
    ("GET", "/chat/stream?message=", None, {}, 400),  # empty
    ("GET", "/chat/stream?message=%20%20", None, {}, 400),  # blank
    ("GET", "/chat/stream?message=" + "x" * 3000, None, {}, 413),  # over the limit
    ("POST", "/chat/stream", b"{", {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", b'{"message": "hi"}', {"Content-Type": "text/plain"}, 415),
    ("POST", "/chat/stream", b'{"message": "hi"}', {}, 415),
    ("POST", "/chat/stream", b"[]", {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", b"{}", {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", b'{"message": 5}', {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", b'{"message": ""}', {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", b'{"message": null}', {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", b'{"messages": []}', {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", b'{"messages": [{"role": "wizard", "content": "x"}]}',
     {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", b'{"messages": [{"role": "user"}]}',
     {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", b'{"messages": ["hi"]}', {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", b'{"messages": [{"role": "system", "content": "x"}]}',
     {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", json.dumps({"messages": [{"role": "user", "content": "x"}] * 51}
                                        ).encode(), {"Content-Type": "application/json"}, 413),
    ("POST", "/chat/stream", json.dumps({"message": "x" * 9000}).encode(),
     {"Content-Type": "application/json"}, 413),
    ("POST", "/chat/stream", b"\xff\xfe{}", {"Content-Type": "application/json"}, 400),
    ("POST", "/chat/stream", b'{"message": "a", "messages": []}',
     {"Content-Type": "application/json"}, 400),
    ("GET", "/chat/stream?message=hi", None, {"Last-Event-ID": "not an id"}, 400),
    ("GET", "/chat/stream?message=hi", None, {"Last-Event-ID": "x" * 5000}, 400),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), BAD_REQUESTS,
                         ids=[f"{i}-{r[0]}-{r[4]}" for i, r in enumerate(BAD_REQUESTS)])
def test_bad_input_gets_a_4xx_json_error_and_no_stream(
    chat_server: Server, method: str, path: str, body: bytes | None,
    headers: dict[str, str], status: int,
) -> None:
    response = httpx.request(method, chat_server.url + path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert isinstance(error, str) and error.strip()
    # and the server keeps serving
    assert httpx.get(chat_server.url + "/healthz").json()["ok"] is True


def test_server_streams_fine_after_all_the_bad_input(chat_server: Server) -> None:
    assert run_chat(chat_server, "GET", "still alive").close["finish_reason"] == "stop"


def test_authorize_hook_is_checked_on_start_resume_and_cancel() -> None:
    with gunicorn_server("tests.apps.chat_app:create_app()") as server:
        ok = {"Authorization": "Bearer good"}
        assert httpx.get(server.url + "/ai/stream?message=hi").status_code == 401
        first = run_chat(server, "GET", "hi", headers=ok, prefix="/ai")
        assert first.close["finish_reason"] == "stop"
        last = first.events[2].last_event_id
        denied = httpx.get(server.url + "/ai/stream", headers={"Last-Event-ID": last})
        assert denied.status_code == 401 and denied.json()["error"]
        assert httpx.delete(f"{server.url}/ai/stream/{first.stream_id}").status_code == 401
        assert httpx.delete(f"{server.url}/ai/stream/{first.stream_id}",
                            headers=ok).status_code == 204

        # a generation bound to alice: bob's resume and DELETE get nothing
        alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
        hers = run_chat(server, "GET", "private", headers=alice, prefix="/ai")
        mid = hers.events[3].last_event_id
        stolen = run_chat(server, "GET", "x", headers={**bob, "Last-Event-ID": mid},
                          prefix="/ai")
        assert stolen.pieces == [] and stolen.close["finish_reason"] == "error"
        assert httpx.delete(f"{server.url}/ai/stream/{hers.stream_id}",
                            headers=bob).status_code == 404
        again = run_chat(server, "GET", "x", headers={**alice, "Last-Event-ID": mid},
                         prefix="/ai")
        assert hers.text.endswith(again.text) and again.pieces
