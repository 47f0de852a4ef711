"""The example app's token mode (``CHAT_TOKEN``), in process: who gets past ``authorize``.

No generation is started here: a request that passes the check is shown by what comes
after it (400 for a missing message, 404 for an unknown stream id), never by a stream.
The browser side (the page sends the header; EventSource uses the cookie) is in
tests/test_browser.py.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from example_app import TOKEN_COOKIE, create_app, make_authorize

TOKEN = "t0ken-é"  # non-ASCII on purpose: compared as bytes, no TypeError


def make(token: str | None) -> Flask:
    return create_app({"CHAT_TOKEN": token, "TICKER_INTERVAL": 0, "TESTING": True})


@pytest.fixture
def client() -> FlaskClient:
    return make(TOKEN).test_client()


def test_without_a_token_the_routes_are_open() -> None:
    app = make(None)
    assert make_authorize(app) is None
    client = app.test_client()
    page = client.get("/")
    assert "data-chat-token" not in page.text
    assert "Set-Cookie" not in page.headers
    assert client.post("/chat/stream", json={}).status_code == 400  # validation, not 401


def test_page_gets_the_token_and_the_cookie(client: FlaskClient) -> None:
    page = client.get("/")
    assert 'data-chat-token="t0ken-é"' in page.text
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}=")
    for part in ("HttpOnly", "SameSite=Strict", "Path=/chat"):
        assert part in cookie


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
def test_no_or_wrong_token_is_401_json(client: FlaskClient, method: str) -> None:
    path = "/chat/stream/abc" if method == "DELETE" else "/chat/stream"
    for headers in ({}, {"token": "nope"}, {"token": TOKEN.upper()}):
        response = client.open(path, method=method, headers=headers, json={"message": "hi"})
        assert response.status_code == 401, headers
        assert response.get_json() == {"error": "not authorized"}


def test_the_header_lets_every_route_in(client: FlaskClient) -> None:
    header = {"token": TOKEN}
    assert client.post("/chat/stream", headers=header, json={}).status_code == 400
    assert client.get("/chat/stream", headers=header).status_code == 400
    assert client.delete("/chat/stream/abc", headers=header).status_code == 404


def test_the_cookie_counts_for_get_only(client: FlaskClient) -> None:
    client.set_cookie(TOKEN_COOKIE, TOKEN, path="/chat")
    assert client.get("/chat/stream").status_code == 400  # past the check: no message
    assert client.post("/chat/stream", json={}).status_code == 401  # POST needs the header
    assert client.delete("/chat/stream/abc").status_code == 401
