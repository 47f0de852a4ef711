"""AI SDK replies on the Redis store: started on one server, resumed and stopped on another."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.chat import demo_reply
from tests.rawsse import open_stream
from tests.servers import Server, gunicorn_server
from tests.test_chat_protocols import ui_body, ui_chunks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(redis: Server) -> Iterator[tuple[Server, Server]]:
    env = {"FLASK_SSE_BROKER_URL": f"redis://127.0.0.1:{redis.port}/2",
           "FLASK_CHAT_DEMO_DELAY": "0.05", "FLASK_CHAT_GRACE_SECONDS": "5",
           "FLASK_TICKER_INTERVAL": "0"}
    with gunicorn_server(env=env) as a, gunicorn_server(env=env, workers=2) as b:
        yield a, b


def post(server: Server, chat_id: str, text: str) -> object:
    raw = json.dumps(ui_body(chat_id, text)).encode()
    return open_stream(server.url + "/api/chat", "POST", body=raw, timeout=10,
                       headers={"Content-Type": "application/json"})


def test_reply_started_on_one_server_resumes_on_another(pair: tuple[Server, Server]) -> None:
    a, b = pair
    with post(a, "redis-resume", "across hosts") as first:  # type: ignore[attr-defined]
        first.read_until(b'"text-delta"')
    resumed = httpx.get(b.url + "/api/chat/redis-resume/stream", timeout=30)
    assert resumed.status_code == 200
    assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    chunks = ui_chunks(resumed.content)
    text = "".join(c["delta"] for c in chunks if c != "[DONE]" and c["type"] == "text-delta")
    assert text == demo_reply("across hosts")
    assert chunks[-2]["type"] == "finish" and chunks[-1] == "[DONE]"
    for server in (a, b):
        assert httpx.get(server.url + "/api/chat/redis-resume/stream").status_code == 204


def test_delete_on_another_server_aborts(pair: tuple[Server, Server]) -> None:
    a, b = pair
    with post(a, "redis-stop", "stop me from afar") as stream:  # type: ignore[attr-defined]
        stream.read_until(b'"text-delta"')
        assert httpx.delete(b.url + "/api/chat/redis-stop/stream").status_code == 204
        chunks = ui_chunks(stream.read_all())
    assert chunks[-2:] == [{"type": "abort", "reason": "cancelled"}, "[DONE]"]
    assert httpx.delete(b.url + "/api/chat/redis-stop/stream").status_code == 404
