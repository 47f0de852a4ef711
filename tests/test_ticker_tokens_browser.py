"""The example page's ticker with subscribe tokens on, in Chromium: tokens expire fast and
streams are ended often, so each reconnect of the EventSource meets an expired token (401,
final for EventSource); the page fetches a new token and opens a new EventSource that
resumes with ?lastEventId=."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests import browser
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow


ENV = {
    **browser.SERVER_ENV,
    "FLASK_SECRET_KEY": "ticker-test-secret",
    "FLASK_SSE_SUBSCRIBE_TOKENS": "true",
    "FLASK_TICKER_TOKEN_SECONDS": "1",
    "FLASK_SSE_MAX_STREAM_SECONDS": "2",
}


@pytest.fixture(scope="module")
def chat_server() -> Iterator[Server]:
    with gunicorn_server(env=ENV) as server:
        yield server


def test_server_requires_a_token(chat_server: Server) -> None:
    response = httpx.get(chat_server.url + "/stream?channel=ticker", timeout=10)
    assert response.status_code == 401 and "token" in response.json()["error"]
    token = httpx.get(chat_server.url + "/ticker-token", timeout=10).json()["token"]
    other = httpx.get(f"{chat_server.url}/stream?channel=other&token={token}", timeout=10)
    assert other.status_code == 403


def test_ticker_survives_expired_tokens(open_chat) -> None:
    chat = open_chat()
    page = chat.page
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "channel=ticker" in r.url else None)
    page.wait_for_function("() => Number(document.getElementById('ticker').dataset.sources) >= 3",
                           timeout=30_000)
    tick = int(page.text_content("#ticker-tick") or "0")
    page.wait_for_function(
        "n => Number(document.getElementById('ticker-tick').textContent) > n", arg=tick,
        timeout=10_000)
    assert page.locator("#ticker").get_attribute("data-state") == "live"
    assert "resynced" not in (page.text_content("#ticker-status") or "")
    # the expired tokens were refused, and new ones accepted (the test would pass
    # vacuously if the streams never met an expired token)
    assert 401 in statuses and 200 in statuses
