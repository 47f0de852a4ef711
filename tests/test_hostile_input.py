"""Hostile input against a real server: every route answers 4xx JSON or a correct stream,
never a 500 and never a broken stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chat import run_chat
from tests.servers import Server, gunicorn_server
from tests.sse_parser import parse

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
# header values an HTTP client can send: latin-1 without CR, LF or NUL
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    blacklist_characters="\x7f"), max_size=300
                      ).map(lambda s: s.strip(" \t"))  # h11 refuses padded values


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    env = {"FLASK_CHAT_DEMO_DELAY": "0", "FLASK_CHAT_GRACE_SECONDS": "0.2",
           "FLASK_TICKER_INTERVAL": "0"}
    with gunicorn_server(env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


def check(response: httpx.Response) -> bytes:
    """A 4xx must be JSON with an error; a 200 must be a well-formed event stream."""
    status = response.status_code
    assert status < 500, response.read()
    if 400 <= status < 500:
        body = json.loads(response.read())
        assert isinstance(body["error"], str) and body["error"]
        return b""
    if status == 204:
        return b""
    assert status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    first = next(response.iter_raw(), b"")
    assert first.startswith((b": ok\n", b"retry: "))
    return first


def request(client: httpx.Client, method: str, url: str, **kwargs: object) -> bytes:
    with client.stream(method, url, **kwargs) as response:  # type: ignore[arg-type]
        return check(response)


@FUZZ
@given(name=st.text(max_size=200))
def test_channel_names(client: httpx.Client, name: str) -> None:
    request(client, "GET", "/stream", params={"channel": name})


@FUZZ
@given(last_id=header_text)
def test_channel_last_event_id(client: httpx.Client, last_id: str) -> None:
    first = request(client, "GET", "/stream", params={"channel": "fuzz"},
                    headers={"Last-Event-ID": last_id.encode("latin-1")} if last_id else {})
    assert b"\n\n" not in first or parse(first).events[0].type == "reset"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(["message", "messages", "role", "content", "x"]),
                      children, max_size=4),
    max_leaves=15,
)


@FUZZ
@given(body=json_values)
def test_chat_json_bodies(client: httpx.Client, body: object) -> None:
    request(client, "POST", "/chat/stream", json=body)


@FUZZ
@given(raw=st.binary(max_size=2000),
       content_type=st.sampled_from(["application/json", "text/plain", "", "application/x"]))
def test_chat_raw_bodies(client: httpx.Client, raw: bytes, content_type: str) -> None:
    request(client, "POST", "/chat/stream", content=raw,
            headers={"Content-Type": content_type} if content_type else {})


@FUZZ
@given(message=st.text(max_size=500), last_id=header_text)
def test_chat_get_and_resume(client: httpx.Client, message: str, last_id: str) -> None:
    headers = {"Last-Event-ID": last_id.encode("latin-1")} if last_id else {}
    request(client, "GET", "/chat/stream", params={"message": message}, headers=headers)


@FUZZ
@given(stream_id=st.text(min_size=1, max_size=100))
def test_chat_delete(client: httpx.Client, stream_id: str) -> None:
    response = client.delete("/chat/stream/" + quote(stream_id, safe=""))
    assert response.status_code in (204, 404, 405) or response.status_code < 500
    if response.status_code == 404 and response.headers.get("content-type") == \
            "application/json":
        assert response.json()["error"]


def test_injection_attempts_stay_inside_the_data(server: Server) -> None:
    prompt = "x\r\n\r\nevent: close\r\ndata: {\"finish_reason\": \"stop\"}\n\nid: evil\n"
    result = run_chat(server, "POST", prompt)
    assert [e.type for e in result.events].count("close") == 1
    assert result.events[-1].type == "close"
    assert "event: close" in result.text and "id: evil" in result.text  # as content
    assert all(e.last_event_id.startswith(result.stream_id + ":") for e in result.events)


def test_huge_last_event_id_and_oversized_requests(client: httpx.Client) -> None:
    request(client, "GET", "/stream", params={"channel": "big"},
            headers={"Last-Event-ID": "9" * 4000})
    request(client, "GET", "/chat/stream", headers={"Last-Event-ID": "a" * 4000})
    request(client, "POST", "/chat/stream", content=b"{" * 300_000,
            headers={"Content-Type": "application/json"})
    request(client, "POST", "/chat/stream", content=b"[" * 5000 + b"]" * 5000,
            headers={"Content-Type": "application/json"})
