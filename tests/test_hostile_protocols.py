"""Hostile input against the AI SDK and OpenAI routes of a real server: a 4xx JSON error
in the protocol's shape or a correct reply, never a 500 and never a broken stream."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import gunicorn_server

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

KEYS = ["id", "messages", "role", "parts", "type", "text", "content", "stream",
        "stream_options", "include_usage", "model", "trigger"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.sampled_from(["user", "assistant", "system", "text", "developer", "tool"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    env = {"FLASK_CHAT_DEMO_DELAY": "0", "FLASK_CHAT_GRACE_SECONDS": "0.2",
           "FLASK_TICKER_INTERVAL": "0"}
    with gunicorn_server(env=env) as server, \
            httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


def check(response: httpx.Response, *, openai_shape: bool) -> None:
    status = response.status_code
    body = response.read()
    assert status < 500, body
    if status >= 400:
        error = json.loads(body)["error"]
        message = error["message"] if openai_shape else error
        assert isinstance(message, str) and message
        return
    assert status == 200
    if response.headers["content-type"].startswith("application/json"):
        assert json.loads(body)["object"] == "chat.completion"
        return
    assert response.headers["content-type"].startswith("text/event-stream")
    assert body.endswith(b"data: [DONE]\n\n")


@FUZZ
@given(body=json_values)
def test_ai_sdk_bodies(client: httpx.Client, body: object) -> None:
    with client.stream("POST", "/api/chat", json=body) as response:
        check(response, openai_shape=False)


@FUZZ
@given(body=json_values)
def test_openai_bodies(client: httpx.Client, body: object) -> None:
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        check(response, openai_shape=True)


@FUZZ
@given(chat_id=st.text(min_size=1, max_size=300).filter(lambda s: "/" not in s))
def test_ai_sdk_chat_ids(client: httpx.Client, chat_id: str) -> None:
    from urllib.parse import quote

    for method in ("GET", "DELETE"):
        response = client.request(method, f"/api/chat/{quote(chat_id, safe='')}/stream")
        assert response.status_code in (204, 400, 404), response.text
