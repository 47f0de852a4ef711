"""Chat with the Redis store: a generation runs on one server and is resumed on another."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.chat import demo_reply, partial_chat, run_chat
from tests.rawsse import open_stream
from tests.servers import Server, gunicorn_server
from tests.sse_parser import parse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(redis: Server) -> Iterator[tuple[Server, Server]]:
    env = {"FLASK_SSE_BROKER_URL": f"redis://127.0.0.1:{redis.port}/1",
           "FLASK_CHAT_DEMO_DELAY": "0.05", "FLASK_CHAT_GRACE_SECONDS": "5"}
    with gunicorn_server(env=env) as a, gunicorn_server(env=env, workers=2) as b:
        yield a, b


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_generation_started_on_one_server_resumes_on_another(pair, method: str) -> None:
    a, b = pair
    prompt = f"cross-host {method}"
    first = partial_chat(a, method, prompt, count=5)
    rest = run_chat(b, method, prompt, headers={"Last-Event-ID": first.events[-1].last_event_id})
    assert rest.stream_id == first.stream_id
    assert rest.seqs() == list(range(6, 6 + len(rest.events)))
    assert first.text + rest.text == demo_reply(prompt)
    assert rest.close["finish_reason"] == "stop"
    # finished: both servers answer 204 to a resume after the close event
    for server in (a, b):
        done = httpx.get(server.url + "/chat/stream",
                         headers={"Last-Event-ID": rest.events[-1].last_event_id})
        assert done.status_code == 204


def test_delete_on_another_server_cancels(pair) -> None:
    a, b = pair
    with open_stream(a.url + "/chat/stream?message=cancel+me+remotely") as resp:
        stream_id = resp.headers["x-stream-id"]
        body = b""
        while not parse(body).events:
            body += resp.read_chunk()
        assert httpx.delete(f"{b.url}/chat/stream/{stream_id}").status_code == 204
        body += resp.read_all()
    events = parse(body).events
    assert events[-1].type == "close"
    assert json.loads(events[-1].data)["finish_reason"] == "cancelled"
    assert httpx.delete(f"{b.url}/chat/stream/unknown-id-000").status_code == 404


def test_redis_down_gives_503_json_and_recovery() -> None:
    from tests.servers import redis_server

    with redis_server() as first:
        port = first.port
        env = {"FLASK_SSE_BROKER_URL": f"redis://127.0.0.1:{port}/1",
               "FLASK_CHAT_DEMO_DELAY": "0"}
        with gunicorn_server(env=env) as app:
            assert run_chat(app, "POST", "before").close["finish_reason"] == "stop"
            first.proc.terminate()
            first.proc.wait(10)
            down = httpx.post(app.url + "/chat/stream", json={"message": "during"}, timeout=30)
            assert down.status_code == 503
            assert "unavailable" in down.json()["error"]
            assert down.headers["retry-after"]
            with redis_server(port=port):
                assert run_chat(app, "POST", "after").text == demo_reply("after")


def test_followers_elsewhere_are_released_when_the_owner_process_dies(redis: Server) -> None:
    import signal

    import psutil

    env = {"FLASK_SSE_BROKER_URL": f"redis://127.0.0.1:{redis.port}/3",
           "FLASK_CHAT_DEMO_DELAY": "0.3", "FLASK_SSE_HEARTBEAT_INTERVAL": "1"}
    with gunicorn_server(env=env) as owner, gunicorn_server(env=env) as other:
        first = partial_chat(owner, "GET", "doomed", count=2)
        last = first.events[-1].last_event_id
        with open_stream(other.url + "/chat/stream", headers={"Last-Event-ID": last},
                         timeout=30) as follower:
            body = b""
            while len(parse(body).events) < 1:
                body += follower.read_chunk()
            for proc in [psutil.Process(owner.proc.pid), *psutil.Process(
                    owner.proc.pid).children(recursive=True)]:
                proc.send_signal(signal.SIGKILL)  # a crash: no shutdown hooks run
            body += follower.read_all()  # ends once the owner's alive key expires
        assert body.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"retry: ")
        after = parse(body).events[-1].last_event_id
        result = run_chat(other, "GET", "doomed", headers={"Last-Event-ID": after})
        assert result.close["finish_reason"] == "error"
        assert "no longer available" in result.close["error"]
