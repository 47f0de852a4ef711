"""The OpenAI endpoints' replies end with their clients, and the caps refuse in OpenAI's
shape: a real gunicorn server (plain gevent workers) with ``CHAT_MAX_GENERATIONS=1``, the
scripted backend 0.1 s a piece, and ``GET /finished`` (what ``on_finish`` got) to see how
each reply ended. Every test waits for its replies to end, so the next starts under the
cap."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.apps.scripted import script_text
from tests.rawsse import RawResponse, open_stream
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow

APP = "tests.apps.protocols_app:create_app()"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    env = {"FLASK_CHAT_BACKEND": "scripted", "FLASK_CHAT_DEMO_DELAY": "0.1",
           "FLASK_CHAT_MAX_GENERATIONS": "1", "FLASK_CHAT_GRACE_SECONDS": "60"}
    with gunicorn_server(APP, env=env, config=None) as running:
        yield running


def finished(server: Server) -> list[dict[str, Any]]:
    return httpx.get(server.url + "/finished", timeout=5).json()["replies"]  # type: ignore[no-any-return]


def wait_finished(server: Server, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """``on_finish``'s record once it holds ``count`` replies (a poll: the end of a reply
    in the server process has no event a client could wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        replies = finished(server)
        if len(replies) >= count or time.monotonic() > deadline:
            return replies
        time.sleep(0.05)


def open_reply(server: Server, path: str, body: dict[str, Any]) -> RawResponse:
    stream = open_stream(server.url + path, "POST", body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
    assert stream.status == 200
    return stream


def stream_id_of(raw: bytes, prefix: str) -> str:
    """The generation's stream id, from the id the first event gives the reply."""
    data = json.loads(parse_first_data(raw))
    reply_id = data["response"]["id"] if "response" in data else data["id"]
    assert reply_id.startswith(prefix)
    return str(reply_id[len(prefix):])


def parse_first_data(raw: bytes) -> str:
    line = next(line for line in raw.split(b"\n") if line.startswith(b"data: "))
    return line[len(b"data: "):].decode()


@pytest.mark.parametrize(("path", "body", "needle", "prefix"), [
    ("/v1/responses", {"model": "m", "input": "parts", "stream": True},
     b"response.output_text.delta", "resp_"),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "parts"}],
                              "stream": True}, b'"content":"Let', "chatcmpl-"),
])
def test_a_dropped_stream_stops_its_generation(server: Server, path: str,
                                               body: dict[str, Any], needle: bytes,
                                               prefix: str) -> None:
    before = len(finished(server))
    with open_reply(server, path, body) as stream:
        seen = stream.read_until(needle)
    stream_id = stream_id_of(seen, prefix)
    replies = wait_finished(server, before + 1)
    [reply] = [r for r in replies if r["stream_id"] == stream_id]
    assert reply["finish_reason"] == "cancelled"  # not run out to the end of the script
    assert reply["text"].startswith("Let me look that up. ")
    assert reply["text"] != script_text("parts")


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/responses", {"model": "m", "input": "parts"}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "parts"}]}),
])
def test_a_client_that_leaves_a_reply_not_streamed_stops_it(server: Server, path: str,
                                                            body: dict[str, Any]) -> None:
    before = len(finished(server))
    raw = json.dumps(body).encode()
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(raw), raw))
    replies = wait_finished(server, before + 1)
    assert len(replies) == before + 1
    assert replies[-1]["finish_reason"] == "cancelled"
    assert len(replies[-1]["parts"]) < 10


def test_the_cap_answers_429_with_retry_after_that_the_sdks_raise(server: Server) -> None:
    before = len(finished(server))
    with OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
        with open_reply(server, "/v1/responses",
                        {"model": "m", "input": "parts", "stream": True}) as held:
            held.read_until(b"response.in_progress")
            with pytest.raises(openai.RateLimitError) as info:
                client.responses.create(model="m", input="second", stream=True)
            assert int(info.value.response.headers["Retry-After"]) > 0
            assert info.value.body["type"] == "rate_limit_error"  # type: ignore[index]
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "second"}])
        # the held reply stopped with its client, so its place under the cap is free
        assert wait_finished(server, before + 1)[-1]["finish_reason"] == "cancelled"
        assert client.responses.create(model="m", input="third").output_text == \
            "Hello from the script."
