"""AI SDK chat ids are chosen by the client and global: without a user id from
``authorize`` (none, or a bool one as in the README and the example app), a chat id must
not be a bearer secret. The blueprint sets a random ``sse_chat_client`` cookie (HttpOnly,
SameSite=Lax, its own path) on a response to a request that has none, and binds a reply
started with that cookie to it: another client gets 204 on the resume, 404 on the
DELETE, and its POST with the same chat id starts a reply of its own, leaving the first
untouched. A request that carried no cookie keeps the old behaviour (cookie-less
clients, such as Node's fetch, still resume).

Each client is an ``httpx.Client``, which keeps its own cookies, as a browser profile
does; each makes one request first to get its cookie.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest

from flask_sse_stream.chat import DemoBackend
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow

COOKIE = "sse_chat_client"
TOKEN = "s3cret-token"


@pytest.fixture(scope="module", params=["no authorize", "bool authorize"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[Server, dict[str, str]]]:
    """The example app (replies of a few seconds), open or behind its bool ``authorize``
    (``CHAT_TOKEN``); the headers every request needs."""
    env = {"FLASK_CHAT_DEMO_DELAY": "0.05"}
    headers: dict[str, str] = {}
    if request.param == "bool authorize":
        env["FLASK_CHAT_TOKEN"] = TOKEN
        headers = {"token": TOKEN}
    with gunicorn_server(env=env) as server:
        yield server, headers


def client(server: tuple[Server, dict[str, str]]) -> httpx.Client:
    base, headers = server
    return httpx.Client(base_url=base.url, headers=headers, timeout=30)


def ui_body(chat_id: str, text: str) -> dict[str, Any]:
    return {"id": chat_id, "trigger": "submit-message", "messageId": None,
            "messages": [{"id": "u1", "role": "user",
                          "parts": [{"type": "text", "text": text}]}]}


def reply_for(text: str) -> str:
    return DemoBackend.reply_for([{"role": "user", "content": text}])


def chunks(lines: Iterator[str]) -> Iterator[Any]:
    for line in lines:
        if line.startswith("data: "):
            data = line[6:]
            yield data if data == "[DONE]" else json.loads(data)


def read_reply(stream: Iterator[Any]) -> tuple[str, list[Any]]:
    """The text of a UI message stream from here on, and its last two chunks."""
    text, seen = "", []
    for chunk in stream:
        seen.append(chunk)
        if isinstance(chunk, dict) and chunk["type"] == "text-delta":
            text += chunk["delta"]
    return text, seen[-2:]


def warm_up(c: httpx.Client) -> httpx.Response:
    """One request (a resume of a chat that has no reply), which sets this client's
    cookie."""
    response = c.get("/api/chat/no-such-chat/stream")
    assert response.status_code == 204
    return response


def get_cookie(c: httpx.Client) -> SimpleCookie:
    """The cookie the first request sets."""
    response = warm_up(c)
    cookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        cookie.load(header)
    assert COOKIE in cookie, f"no {COOKIE} cookie set: {response.headers}"
    return cookie


def test_each_client_gets_its_own_httponly_cookie_once(server) -> None:
    with client(server) as alice, client(server) as bob:
        mine, theirs = get_cookie(alice)[COOKIE], get_cookie(bob)[COOKIE]
        assert mine.value != theirs.value and len(mine.value) >= 16
        assert mine["httponly"] and mine["samesite"].lower() == "lax"
        assert mine["path"] == "/api/chat"
        again = alice.get("/api/chat/no-such-chat/stream")  # it carries the cookie now
        assert COOKIE not in again.headers.get("set-cookie", "")


def test_another_client_cannot_read_stop_or_replace_a_running_reply(server) -> None:
    chat = "shared-chat-id"
    with client(server) as alice, client(server) as mallory:
        warm_up(alice)
        warm_up(mallory)
        with alice.stream("POST", "/api/chat", json=ui_body(chat, "my private prompt")) as r:
            assert r.status_code == 200
            stream = chunks(r.iter_lines())
            text = ""
            for chunk in stream:
                if chunk != "[DONE]" and chunk["type"] == "text-delta":
                    text += chunk["delta"]
                    break
            # the other client knows the chat id: it gets nothing of alice's reply
            assert mallory.get(f"/api/chat/{chat}/stream").status_code == 204
            assert mallory.delete(f"/api/chat/{chat}/stream").status_code == 404
            assert httpx.get(f"{server[0].url}/api/chat/{chat}/stream",
                             headers=server[1]).status_code == 204  # nor a cookie-less one
            # its POST with the same chat id is a reply of its own
            theirs = mallory.post("/api/chat", json=ui_body(chat, "someone else's prompt"))
            their_text, their_end = read_reply(chunks(iter(theirs.text.splitlines())))
            assert their_text == reply_for("someone else's prompt")
            assert their_end[0]["type"] == "finish"
            # alice can still resume hers, which runs on untouched
            with alice.stream("GET", f"/api/chat/{chat}/stream") as resumed:
                assert resumed.status_code == 200
            rest, end = read_reply(stream)
        assert text + rest == reply_for("my private prompt")
        assert (end[0]["type"], end[0]["finishReason"], end[1]) == ("finish", "stop", "[DONE]")


def test_the_owner_can_stop_its_reply(server) -> None:
    chat = "stop-mine"
    with client(server) as alice:
        warm_up(alice)
        with alice.stream("POST", "/api/chat", json=ui_body(chat, "stop me")) as r:
            stream = chunks(r.iter_lines())
            next(c for c in stream if c != "[DONE]" and c["type"] == "text-delta")
            assert alice.delete(f"/api/chat/{chat}/stream").status_code == 204
            _, end = read_reply(stream)
        assert end == [{"type": "abort"}, "[DONE]"]


def test_clients_without_cookies_still_resume(server) -> None:
    """Node's fetch keeps no cookies: a reply it started is resumed by the chat id alone,
    as before."""
    base, headers = server
    chat = "cookie-less"
    with httpx.stream("POST", base.url + "/api/chat", json=ui_body(chat, "no cookies here"),
                      headers=headers, timeout=30) as r:
        stream = chunks(r.iter_lines())
        next(c for c in stream if c != "[DONE]" and c["type"] == "text-delta")
        resumed = httpx.get(f"{base.url}/api/chat/{chat}/stream", headers=headers, timeout=30)
        assert resumed.status_code == 200
        text, end = read_reply(chunks(iter(resumed.text.splitlines())))
        assert text == reply_for("no cookies here") and end[-1] == "[DONE]"
