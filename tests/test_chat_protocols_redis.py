"""AI SDK replies on the Redis store: started on one server, resumed and stopped on
another (the scripted backend of tests/apps/scripted.py: replies with parts)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flask_sse_stream.chat.protocols.ai_sdk import COOKIE
from tests.ai_sdk_live import (
    APP,
    PARTS_TYPES,
    Reading,
    check_parts_message,
    chunks_of,
    need_node,
    run_node,
    scripted_env,
    text_of,
    ui_body,
)
from tests.apps.scripted import script_text
from tests.rawsse import RawResponse, open_stream
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(redis: Server) -> Iterator[tuple[Server, Server]]:
    env = scripted_env(0.15, FLASK_SSE_BROKER_URL=f"redis://127.0.0.1:{redis.port}/2",
                       FLASK_CHAT_GRACE_SECONDS="5")
    with gunicorn_server(APP, env=env) as a, gunicorn_server(APP, env=env, workers=2) as b:
        for _ in range(4):  # a worker's first store access connects to Redis: not in a test
            for server in (a, b):
                assert httpx.get(f"{server.url}/api/chat/warm-up/stream").status_code == 204
        yield a, b


def post(server: Server, chat_id: str, text: str) -> RawResponse:
    raw = json.dumps(ui_body(chat_id, text)).encode()
    return open_stream(server.url + "/api/chat", "POST", body=raw, timeout=10,
                       headers={"Content-Type": "application/json"})


def test_reply_started_on_one_server_resumes_on_another(pair: tuple[Server, Server]) -> None:
    a, b = pair
    with post(a, "redis-resume", "parts across hosts") as first:
        first.read_until(b'"text-delta"')
    resumed = httpx.get(b.url + "/api/chat/redis-resume/stream", timeout=30)
    assert resumed.status_code == 200
    assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    chunks = chunks_of(resumed.content)
    assert text_of(chunks) == script_text("parts")
    assert chunks[-2]["type"] == "finish" and chunks[-1] == "[DONE]"
    for server in (a, b):
        assert httpx.get(server.url + "/api/chat/redis-resume/stream").status_code == 204


def test_delete_on_another_server_aborts(pair: tuple[Server, Server]) -> None:
    a, b = pair
    with post(a, "redis-stop", "parts to stop from afar") as stream:
        stream.read_until(b'"text-delta"')
        assert httpx.delete(b.url + "/api/chat/redis-stop/stream").status_code == 204
        chunks = chunks_of(stream.read_all())
    assert chunks[-2:] == [{"type": "abort"}, "[DONE]"]
    assert httpx.delete(b.url + "/api/chat/redis-stop/stream").status_code == 404


def test_the_ai_package_resumes_mid_parts_on_another_server(
        pair: tuple[Server, Server]) -> None:
    """Cut after the first tool call on one server; the Chat engine's resumeStream() on
    another replays the whole reply into the message the page had (no duplicate)."""
    need_node("ai")
    a, b = pair
    resume: dict[str, Any] = run_node(base=a.url, resumeBase=b.url, releases=[],
                                      scenarios=["resume"])["resume"]
    assert [p["type"] for p in resume["cut"]["parts"]] == PARTS_TYPES[:4]
    assert resume["errors"] == [] and resume["status"] == "ready"
    _user, assistant = resume["messages"]
    check_parts_message(assistant["parts"])
    assert resume["afterFinish"] is None


def test_a_reply_bound_to_a_cookie_is_found_with_it_on_every_server(
        pair: tuple[Server, Server]) -> None:
    a, b = pair
    chat = "redis-bound"
    with httpx.Client(timeout=20) as alice, httpx.Client(timeout=20) as mallory:
        for client in (alice, mallory):  # one request each: their cookies (host-wide)
            assert client.get(f"{a.url}/api/chat/warm-up/stream").status_code == 204
            assert client.cookies.get(COOKIE)
        with alice.stream("POST", f"{a.url}/api/chat",
                          json=ui_body(chat, "parts bound")) as mine:
            reading = Reading(mine)
            reading.until(b'"text-delta"')
            assert mallory.get(f"{b.url}/api/chat/{chat}/stream").status_code == 204
            assert httpx.get(f"{b.url}/api/chat/{chat}/stream").status_code == 204
            assert mallory.delete(f"{b.url}/api/chat/{chat}/stream").status_code == 404
            with alice.stream("GET", f"{b.url}/api/chat/{chat}/stream") as again:
                assert again.status_code == 200
                Reading(again).until(b'"reasoning-delta"')
            assert alice.delete(f"{b.url}/api/chat/{chat}/stream").status_code == 204
            assert reading.rest()[-2:] == [{"type": "abort"}, "[DONE]"]
