"""Chat request bodies that are valid JSON but hostile get a clear 4xx JSON error on all
three protocols (real gunicorn), never a 500 HTML page.

Python's JSON decoder refuses an integer of more than 4,300 digits (a ``ValueError``
that is not a ``JSONDecodeError``: the limit on int/str conversion guards against
quadratic-time parsing), wherever it is in the body. A chat id holding a lone surrogate
(``"\\ud800"``, valid JSON) cannot be encoded as UTF-8.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import Server, gunicorn_server
from tests.sse_parser import parse

pytestmark = pytest.mark.slow

BIG = "7" * 4301  # one digit past the decoder's limit, as JSON text
USER = '{"role": "user", "content": "hi"}'
UI_USER = '{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}'

# (path, body as JSON text): the big integer at the top, deep inside, negative
BIG_INTEGER_BODIES = [
    ("/chat/stream", f'{{"message": "hi", "n": {BIG}}}'),
    ("/chat/stream", f'{{"messages": [{USER}], "meta": {{"deep": [1, {{"x": -{BIG}}}]}}}}'),
    ("/chat/stream", f'{{"message": {BIG}}}'),
    ("/api/chat", f'{{"id": "c1", "messages": [{UI_USER}], "metadata": {BIG}}}'),
    ("/api/chat", '{"id": "c1", "messages": [{"id": "u1", "role": "user", "parts": '
                  f'[{{"type": "text", "text": "hi", "n": [{BIG}]}}]}}]}}'),
    ("/api/chat", f'{{"id": {BIG}, "messages": [{UI_USER}]}}'),
    ("/v1/chat/completions", f'{{"messages": [{USER}], "max_tokens": {BIG}}}'),
    ("/v1/chat/completions", f'{{"messages": [{USER}], "stream": true, "seed": -{BIG}}}'),
    ("/v1/chat/completions", f'{{"messages": [{{"role": "user", "content": {BIG}}}]}}'),
]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with gunicorn_server("tests.apps.protocols_app:create_app()", config=None,
                         args=("--no-control-socket",)) as server:
        yield server


def assert_json_refusal(response: httpx.Response, path: str) -> None:
    """A 4xx with a JSON body in the protocol's error shape."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.text[:300]
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert isinstance(message, str) and message


@pytest.mark.parametrize(("path", "body"), BIG_INTEGER_BODIES,
                         ids=[f"{p}-{n}" for n, (p, _) in enumerate(BIG_INTEGER_BODIES)])
def test_an_integer_past_the_json_digit_limit_is_a_json_4xx(
        server: Server, path: str, body: str) -> None:
    response = httpx.post(server.url + path, content=body.encode(), timeout=30,
                          headers={"Content-Type": "application/json"})
    assert_json_refusal(response, path)


@pytest.mark.parametrize("chat_id", ["\\ud800", "\\udfff", "chat-\\udbff-x", "\\ud800\\u00e9"])
def test_an_ai_sdk_chat_id_with_a_lone_surrogate_is_refused_or_served_never_a_500(
        server: Server, chat_id: str) -> None:
    """The chat id is valid JSON that is not valid Unicode text: refused with a 4xx JSON
    error (or, if a design accepts it, a stream that ends properly), never a 500."""
    body = f'{{"id": "{chat_id}", "messages": [{UI_USER}], "trigger": "submit-message"}}'
    response = httpx.post(server.url + "/api/chat", content=body.encode(), timeout=30,
                          headers={"Content-Type": "application/json"})
    if response.status_code == 200:
        events = parse(response.content).events
        assert events and events[-1].data == "[DONE]"
        assert json.loads(events[-2].data)["type"] == "finish"
    else:
        assert_json_refusal(response, "/api/chat")
