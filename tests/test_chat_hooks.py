"""What an app hooks around the chat blueprints (tests/apps/hooks_app.py on real gunicorn
gevent workers, a fake OpenAI upstream on loopback):

* a ``before_request`` hook that reads ``request.get_json()`` leaves the body readable for
  every chat route;
* ``stop_on_disconnect=True`` cancels a reply (its upstream request closed) as soon as its
  last client is gone, instead of after ``CHAT_GRACE_SECONDS``; the OpenAI blueprint does
  so by default (nothing can resume its streams), the others keep resuming by default;
* ``on_finish=callback`` gets every finished, stopped or failed reply once, with its chat
  id, messages, text and parts, on the process that ran it, after its close was written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.fake_openai import DEFAULT_PIECES, MIDSTREAM_ERROR_MESSAGE, FakeOpenAI
from tests.races import (
    JSON,
    native_close,
    openai_body,
    stream_to_end,
    ui_body,
    ui_ended_properly,
    wait_until,
)
from tests.rawsse import open_stream
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow

APP = "tests.apps.hooks_app:create_app()"
GRACE = "120"  # seconds: far longer than any wait here
NOTICE = 10.0  # seconds a reply gets to be stopped once its client is gone
REPLY = "".join(DEFAULT_PIECES)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(delay=0.01) as server:
        yield server


@contextmanager
def hooks_server(env: dict[str, str]) -> Iterator[Server]:
    """The hooks app on gunicorn. It is built once in this process first, so an option
    the blueprints do not take fails here with its TypeError, not as a server that exits
    at startup."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        from tests.apps.hooks_app import create_app

        create_app()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    with gunicorn_server(APP, env=env, config=None, args=("--no-control-socket",)) as server:
        yield server


def upstream(fake: FakeOpenAI, **env: str) -> dict[str, str]:
    """The environment of a hooks app in front of ``fake``, with a long grace period."""
    return {"FLASK_CHAT_BACKEND": "openai", "FLASK_OPENAI_BASE_URL": fake.base_url,
            "FLASK_CHAT_GRACE_SECONDS": GRACE, **env}


@pytest.fixture(scope="module")
def peeking(fake: FakeOpenAI) -> Iterator[Server]:
    """An app hook that reads the JSON body before every request."""
    with hooks_server(upstream(fake, FLASK_HOOKS_PEEK_JSON="1")) as server:
        yield server


@pytest.fixture(scope="module")
def plain(fake: FakeOpenAI) -> Iterator[Server]:
    """Each blueprint's defaults."""
    with hooks_server(upstream(fake)) as server:
        yield server


@pytest.fixture(scope="module")
def stopping(fake: FakeOpenAI) -> Iterator[Server]:
    with hooks_server(upstream(fake, FLASK_HOOKS_STOP_ON_DISCONNECT="true")) as server:
        yield server


@pytest.fixture(scope="module")
def finishing(fake: FakeOpenAI) -> Iterator[Server]:
    with hooks_server(upstream(fake, FLASK_HOOKS_ON_FINISH="1")) as server:
        yield server


def running(server: Server) -> int:
    return int(httpx.get(server.url + "/healthz", timeout=10).json()["chat"]["running"])


# -- a before_request hook that reads the body --------------------------------------------


def test_an_app_hook_reading_the_json_body_leaves_it_for_every_chat_route(
        peeking: Server) -> None:
    ai = stream_to_end(peeking.url + "/api/chat", "POST", body=ui_body("peek", "hi"),
                       headers=JSON, wait=NOTICE)
    assert (ai.status, ai.headers.get("x-peeked")) == (200, "dict"), ai.body[:300]
    assert ui_ended_properly(ai)
    assert "".join(c["delta"] for c in ai.chunks()
                   if isinstance(c, dict) and c["type"] == "text-delta") == REPLY
    native = stream_to_end(peeking.url + "/chat/stream", "POST", headers=JSON, wait=NOTICE,
                           body=json.dumps({"message": "hi"}).encode())
    assert (native.status, native_close(native.body)) == (200, "stop"), native.body[:300]
    completion = httpx.post(peeking.url + "/v1/chat/completions", timeout=NOTICE,
                            json={"messages": [{"role": "user", "content": "hi"}]})
    assert completion.status_code == 200, completion.text[:300]
    assert completion.json()["choices"][0]["message"]["content"] == REPLY


# -- stop on disconnect -------------------------------------------------------------------


def drop_after_first_piece(url: str, body: bytes, marker: bytes) -> dict[str, str]:
    """Start a long reply (the fake's ``slow`` mode), read up to ``marker``, hang up;
    the response's headers."""
    with open_stream(url, "POST", body=body, headers=JSON, timeout=NOTICE) as resp:
        assert resp.status == 200
        resp.read_until(marker)
        return resp.headers


def test_the_openai_endpoint_stops_a_reply_whose_client_left(
        plain: Server, fake: FakeOpenAI) -> None:
    """By default: no client can resume an OpenAI stream, so nothing waits for one."""
    before = fake.closed_by_client
    drop_after_first_piece(plain.url + "/v1/chat/completions",
                           openai_body("mode:slow a long story"), b"tok0")
    assert fake.wait_closed(timeout=NOTICE, count=before + 1), \
        "the upstream request ran on after the client left"
    assert wait_until(lambda: running(plain), lambda n: n == 0) == 0


def test_by_default_an_ai_sdk_reply_outlives_its_client_for_a_resume(plain: Server) -> None:
    drop_after_first_piece(plain.url + "/api/chat", ui_body("outlive", "mode:slow story"),
                           b"tok0")
    with httpx.stream("GET", plain.url + "/api/chat/outlive/stream", timeout=NOTICE) as r:
        assert r.status_code == 200
    assert httpx.delete(plain.url + "/api/chat/outlive/stream").status_code == 204


@pytest.mark.parametrize("protocol", ["ai_sdk", "native", "openai"])
def test_stop_on_disconnect_cancels_a_reply_when_its_client_leaves(
        stopping: Server, fake: FakeOpenAI, protocol: str) -> None:
    before = fake.closed_by_client
    path, body = {
        "ai_sdk": ("/api/chat", ui_body(f"leave-{before}", "mode:slow story")),
        "native": ("/chat/stream", json.dumps({"message": "mode:slow story"}).encode()),
        "openai": ("/v1/chat/completions", openai_body("mode:slow story")),
    }[protocol]
    headers = drop_after_first_piece(stopping.url + path, body, b"tok0")
    assert fake.wait_closed(timeout=NOTICE, count=before + 1), \
        "the upstream request ran on after the client left"
    assert wait_until(lambda: running(stopping), lambda n: n == 0) == 0
    if protocol == "ai_sdk":  # a reload does not bring the stopped reply back
        assert httpx.get(f"{stopping.url}/api/chat/leave-{before}/stream").status_code == 204
    if protocol == "native":  # a resume gets the end: cancelled
        resumed = stream_to_end(stopping.url + "/chat/stream", wait=NOTICE,
                                headers={"Last-Event-ID": f"{headers['x-stream-id']}:1"})
        assert resumed.status == 204 or native_close(resumed.body) == "cancelled"


def test_stop_on_disconnect_waits_for_the_last_client(
        stopping: Server, fake: FakeOpenAI) -> None:
    """Two tabs follow one reply: the first leaving does not stop it; the second does."""
    before = fake.closed_by_client
    with open_stream(stopping.url + "/api/chat", "POST", headers=JSON, timeout=NOTICE,
                     body=ui_body("two-tabs", "mode:slow x")) as first:
        first.read_until(b"tok0")
        second = open_stream(stopping.url + "/api/chat/two-tabs/stream", timeout=NOTICE)
        assert second.status == 200
        second.read_until(b"tok0")
    with second:  # the first tab left: the reply goes on for the second, a second more
        seen = second.read_until(b'"tok20 "')
        assert b'"abort"' not in seen
    assert fake.wait_closed(timeout=NOTICE, count=before + 1)
    assert wait_until(lambda: running(stopping), lambda n: n == 0) == 0


# -- on_finish ----------------------------------------------------------------------------


def finished(server: Server) -> list[dict[str, Any]]:
    return httpx.get(server.url + "/finished", timeout=10).json()["finished"]  # type: ignore[no-any-return]


def record_for(server: Server, stream_id: str) -> dict[str, Any]:
    """The one record of ``stream_id`` once it is there (bounded wait)."""
    records = wait_until(lambda: [r for r in finished(server) if r["stream_id"] == stream_id],
                         lambda found: bool(found))
    assert len(records) == 1, records
    return records[0]


def test_on_finish_gets_a_finished_native_reply(finishing: Server) -> None:
    end = stream_to_end(finishing.url + "/chat/stream", "POST", headers=JSON, wait=NOTICE,
                        body=json.dumps({"message": "say hello"}).encode())
    assert native_close(end.body) == "stop"
    record = record_for(finishing, end.headers["x-stream-id"])
    assert record["chat_id"] is None
    assert record["messages"] == [{"role": "user", "content": "say hello"}]
    assert (record["text"], "".join(record["parts"])) == (REPLY, REPLY)
    assert (record["finish_reason"], record["error"]) == ("stop", None)
    assert record["usage"] is None or record["usage"]["total_tokens"] > 0


def test_on_finish_gets_an_ai_sdk_reply_with_its_chat_id_and_a_stopped_one(
        finishing: Server) -> None:
    end = stream_to_end(finishing.url + "/api/chat", "POST", headers=JSON, wait=NOTICE,
                        body=ui_body("saved-chat", "remember me"))
    assert ui_ended_properly(end)
    stream_id = end.chunks()[0]["messageId"]
    record = record_for(finishing, stream_id)
    assert (record["chat_id"], record["text"]) == ("saved-chat", REPLY)
    assert record["messages"] == [{"role": "user", "content": "remember me"}]
    stopped = stream_to_end(
        finishing.url + "/api/chat", "POST", headers=JSON, wait=NOTICE,
        body=ui_body("stopped-chat", "mode:slow x"), until=b"tok2",
        then=lambda _h: httpx.delete(finishing.url + "/api/chat/stopped-chat/stream"))
    record = record_for(finishing, stopped.chunks()[0]["messageId"])
    assert (record["chat_id"], record["finish_reason"], record["error"]) == (
        "stopped-chat", "cancelled", None)
    assert record["text"].startswith("tok0 tok1 tok2")


def test_on_finish_gets_a_failed_reply_and_openai_ones(finishing: Server) -> None:
    failed = stream_to_end(finishing.url + "/chat/stream", "POST", headers=JSON, wait=NOTICE,
                           body=json.dumps({"message": "mode:error_midstream x"}).encode())
    record = record_for(finishing, failed.headers["x-stream-id"])
    assert record["finish_reason"] == "error"
    assert MIDSTREAM_ERROR_MESSAGE in record["error"]
    before = len(finished(finishing))
    completion = httpx.post(finishing.url + "/v1/chat/completions", timeout=NOTICE,
                            json={"messages": [{"role": "user", "content": "openai"}]})
    assert completion.status_code == 200
    records = wait_until(lambda: finished(finishing)[before:], lambda new: bool(new))
    assert [(r["chat_id"], r["text"], r["messages"]) for r in records] == [
        (None, REPLY, [{"role": "user", "content": "openai"}])]


def test_on_finish_runs_after_the_close_was_written(finishing: Server) -> None:
    """While the callback is still running (held at a gate), the client already has the
    whole reply and its end; every reply is recorded exactly once."""
    assert httpx.post(finishing.url + "/finish-gate?hold=1").json() == {"held": True}
    try:
        end = stream_to_end(finishing.url + "/chat/stream", "POST", headers=JSON,
                            wait=NOTICE, body=json.dumps({"message": "gated"}).encode())
        assert end.ended and native_close(end.body) == "stop", \
            "the close reached the client only after on_finish returned"
        record_for(finishing, end.headers["x-stream-id"])
    finally:
        httpx.post(finishing.url + "/finish-gate?hold=0")
    ids = [r["stream_id"] for r in finished(finishing)]
    assert len(ids) == len(set(ids)), "a reply was recorded more than once"


def test_on_finish_runs_on_the_process_that_ran_the_reply(redis: Server) -> None:
    """Redis: a reply started on one server and followed to its end on another is
    recorded by the first only."""
    env = {"FLASK_SSE_BROKER_URL": f"redis://127.0.0.1:{redis.port}/13",
           "FLASK_HOOKS_ON_FINISH": "1", "FLASK_CHAT_DEMO_DELAY": "0.02"}
    with hooks_server(env) as a, hooks_server(env) as b:
        with open_stream(a.url + "/chat/stream?message=travel", timeout=NOTICE) as started:
            stream_id = started.headers["x-stream-id"]
            started.read_until(b'"content"')
        rest = stream_to_end(b.url + "/chat/stream", wait=NOTICE,
                             headers={"Last-Event-ID": f"{stream_id}:1"})
        assert native_close(rest.body) == "stop"
        record = record_for(a, stream_id)
        assert record["pid"] == httpx.get(a.url + "/healthz").json()["pid"]
        assert not [r for r in finished(b) if r["stream_id"] == stream_id]
