"""Hostile input against a real server, on the memory and on the Redis broker: every route
answers 4xx JSON, a 204, or a correct stream; never a 5xx and never a broken stream.

Text is drawn from all of Unicode; header values are sent as raw bytes over a socket
(Latin-1 obs-text included, which is how a lone 0xB2 byte reaches the app as "²"); query
values and path segments percent-encode any bytes. tests/unit/test_fuzz.py is the
in-process version of the same checks (seconds instead of a server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.chat import run_chat
from tests.fuzzing import (
    channel_ids,
    chat_bodies,
    chat_ids,
    header_values,
    raw_header_bytes,
)
from tests.rawsse import open_raw
from tests.servers import Server, gunicorn_server
from tests.sse_parser import ParsedEvent, parse

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
OPENINGS = (b": ok\n", b"retry: ")
HISTORY = 5


@dataclass
class Target:
    server: Server
    broker: str
    ids: list[str]  # published to channel "fuzz", oldest first; the last HISTORY are kept


@pytest.fixture(scope="module", params=["memory", "redis"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    env = {"TEST_HISTORY": str(HISTORY), "TEST_HEARTBEAT": "5"}
    if request.param == "redis":
        redis: Server = request.getfixturevalue("redis")
        env["TEST_BROKER_URL"] = f"redis://127.0.0.1:{redis.port}/5"
    with gunicorn_server("tests.apps.fuzz_app:create_app()", env=env) as server:
        published = httpx.post(server.url + "/publish", timeout=30,
                               json={"data": "x", "channel": "fuzz", "count": 8}).json()
        yield Target(server, request.param, published["ids"])


# --------------------------------------------------------------------------- checks


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(target: Target, method: str, path: bytes, headers: dict[bytes, bytes],
             body: bytes = b"", whole: bool = False) -> Answer:
    """One request sent byte for byte; a 200 stream is read to its end (``whole``) or for
    its first write (endless channel streams), anything else to the end."""
    lines = [method.encode() + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1",
             b"Accept: text/event-stream", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers.items()]
    if body or method == "POST":
        lines.append(b"Content-Length: %d" % len(body))
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with open_raw("127.0.0.1", target.server.port, request, timeout=15) as resp:
        data = resp.read_chunk() if resp.status == 200 and not whole else resp.read_all()
        return Answer(resp.status, resp.headers, data)


def check(answer: Answer) -> list[ParsedEvent]:
    """A 4xx is JSON with an error; a 204 is empty; a 200 is a well-formed event stream.
    Returns the events of a 200."""
    assert answer.status < 500, answer.body[:500]
    if answer.status == 204:
        assert answer.body == b""
        return []
    if answer.status != 200:
        assert 400 <= answer.status < 500, answer
        assert answer.headers["content-type"] == "application/json", answer
        error = json.loads(answer.body)["error"]
        assert isinstance(error, str) and error
        return []
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.body.startswith(OPENINGS), answer.body[:200]
    answer.body.decode("utf-8")  # strict: the stream is UTF-8
    assert b"\r" not in answer.body  # LF only: nothing injected a line break
    return parse(answer.body).events


def must_reset(target: Target, last_id: str) -> bool:
    """Whether a resume from ``last_id`` must start with a reset: it is not an id the
    broker gave (or, on memory, one older than the history it keeps)."""
    if target.broker == "redis":
        return last_id not in target.ids  # (Redis trims the history approximately)
    kept = target.ids[-HISTORY - 1:]  # the one before the history continues exactly too
    boot, _, seq = last_id.rpartition("-")
    exact = [i for i in kept if i.rpartition("-")[0] == boot
             and seq.isascii() and seq.isdigit() and int(i.rpartition("-")[2]) == int(seq)]
    return not exact


def check_channel(target: Target, answer: Answer, last_id: str | None) -> None:
    events = check(answer)
    if answer.status != 200:
        return
    assert all(e.type in ("message", "reset") for e in events), events
    if last_id is None:
        assert events == []
    elif target.broker == "redis" and last_id == "0-0":
        # before the first entry (a multi-channel cursor's empty channel): exact from the
        # start unless an entry was ever removed, then a reset
        if not (events and events[0].type == "reset"):
            assert [e.last_event_id for e in events] == target.ids[:len(events)]
    elif must_reset(target, last_id):
        assert events and events[0].type == "reset", (last_id, answer.body)
    elif last_id in target.ids:
        after = target.ids[target.ids.index(last_id) + 1:]
        assert [e.last_event_id for e in events] == after[:len(events)]


def check_chat(answer: Answer) -> None:
    events = check(answer)
    if answer.status != 200:
        return
    assert events and events[-1].type == "close", answer.body[-300:]
    assert [e.type for e in events].count("close") == 1
    stream_id, _, first = events[0].last_event_id.rpartition(":")
    assert [e.last_event_id for e in events] == [
        f"{stream_id}:{n}" for n in range(int(first), int(first) + len(events))]
    close = json.loads(events[-1].data)
    assert isinstance(close["finish_reason"], str)
    assert close.get("error") != "internal error", close  # input that should have been a 400


def q(value: str | bytes) -> bytes:
    return quote(value, safe="").encode("ascii")


# --------------------------------------------------------------------------- channel route


@FUZZ
@given(name=st.text(max_size=150) | st.binary(max_size=40))
def test_channel_names(target: Target, name: str | bytes) -> None:
    check_channel(target, exchange(target, "GET", b"/stream?channel=" + q(name), {}), None)


@FUZZ
@given(data=st.data())
def test_channel_last_event_id_header(target: Target, data: st.DataObject) -> None:
    boot = target.ids[0].rpartition("-")[0]
    value = data.draw(header_values(channel_ids(boot), st.sampled_from(target.ids)))
    headers = {b"Last-Event-ID": value} if value else {}
    answer = exchange(target, "GET", b"/stream?channel=fuzz", headers)
    check_channel(target, answer, value.decode("latin-1") if value else None)


@FUZZ
@given(data=st.data())
def test_channel_last_event_id_query(target: Target, data: st.DataObject) -> None:
    boot = target.ids[0].rpartition("-")[0]
    last_id = data.draw(st.text(max_size=100) | channel_ids(boot))
    answer = exchange(target, "GET", b"/stream?channel=fuzz&lastEventId=" + q(last_id), {})
    check_channel(target, answer, last_id or None)


# --------------------------------------------------------------------------- chat routes


@FUZZ
@given(message=st.text(max_size=300) | st.binary(max_size=100),
       resume=st.none() | header_values(chat_ids), via_query=st.booleans())
def test_chat_get(target: Target, message: str | bytes, resume: bytes | None,
                  via_query: bool) -> None:
    path = b"/chat/stream?message=" + q(message)
    headers = {}
    if resume is not None and via_query:
        path += b"&lastEventId=" + q(resume)
    elif resume:
        headers[b"Last-Event-ID"] = resume
    check_chat(exchange(target, "GET", path, headers, whole=True))


@FUZZ
@given(body=chat_bodies, ascii_only=st.booleans())
def test_chat_post_json(target: Target, body: Any, ascii_only: bool) -> None:
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    check_chat(exchange(target, "POST", b"/chat/stream",
                        {b"Content-Type": b"application/json"}, raw, whole=True))


@FUZZ
@given(raw=st.binary(max_size=1000),
       content_type=st.sampled_from([b"application/json", b"text/plain", b"",
                                     b"application/json; charset=\xff", b"application/x"]),
       resume=st.none() | raw_header_bytes)
def test_chat_post_raw(target: Target, raw: bytes, content_type: bytes,
                       resume: bytes | None) -> None:
    headers = {b"Content-Type": content_type} if content_type else {}
    if resume:
        headers[b"Last-Event-ID"] = resume
    check_chat(exchange(target, "POST", b"/chat/stream", headers, raw, whole=True))


@FUZZ
@given(stream_id=st.text(min_size=1, max_size=100) | chat_ids | st.binary(min_size=1,
                                                                         max_size=60))
def test_chat_delete(target: Target, stream_id: str | bytes) -> None:
    path = q(stream_id)
    assume(b"%2F" not in path)  # a "/" is a path separator even escaped: tested in unit/
    answer = exchange(target, "DELETE", b"/chat/stream/" + path, {})
    assert answer.status == 404, answer
    assert json.loads(answer.body) == {"error": "no such stream"}


# --------------------------------------------------------------------------- specific cases


@pytest.mark.parametrize("digits", ["\u00b2", "\u00b3\u00b9", "1\u00b2"])
def test_latin1_digits_in_last_event_id_header(target: Target, digits: str) -> None:
    """Issue #11: "²".isdigit() is true and int("²") raises (a 500 before the fix)."""
    boot = target.ids[0].rpartition("-")[0]
    value = f"{boot}-{digits}".encode("latin-1")
    answer = exchange(target, "GET", b"/stream?channel=fuzz", {b"Last-Event-ID": value})
    check_channel(target, answer, value.decode("latin-1"))
    assert answer.status == 200


@pytest.mark.parametrize("digits", ["\u00b2", "\u0663", "\uff13", "\U0001d7d7"])
def test_unicode_digits_in_last_event_id_query(target: Target, digits: str) -> None:
    boot = target.ids[0].rpartition("-")[0]
    last_id = f"{boot}-{digits}"
    answer = exchange(target, "GET", b"/stream?channel=fuzz&lastEventId=" + q(last_id), {})
    check_channel(target, answer, last_id)
    assert answer.status == 200
    chat = exchange(target, "GET", b"/chat/stream?lastEventId=" + q(f"abcdefgh:{digits}"), {})
    assert chat.status == 400 and "Last-Event-ID" in json.loads(chat.body)["error"]


def test_injection_attempts_stay_inside_the_data(target: Target) -> None:
    prompt = "x\r\n\r\nevent: close\r\ndata: {\"finish_reason\": \"stop\"}\n\nid: evil\n"
    result = run_chat(target.server, "POST", prompt)
    assert [e.type for e in result.events].count("close") == 1
    assert result.events[-1].type == "close"
    assert "event: close" in result.text and "id: evil" in result.text  # as content
    assert all(e.last_event_id.startswith(result.stream_id + ":") for e in result.events)


def test_huge_last_event_id_and_oversized_requests(target: Target) -> None:
    answer = exchange(target, "GET", b"/stream?channel=fuzz", {b"Last-Event-ID": b"9" * 4000})
    check_channel(target, answer, "9" * 4000)
    assert answer.status == 200
    answer = exchange(target, "GET", b"/chat/stream", {b"Last-Event-ID": b"a" * 4000})
    assert answer.status == 400 and json.loads(answer.body)["error"]
    # (httpx: the server answers a body over the limit without reading it all, which a
    # raw socket sees as a reset when it reads the answer)
    for body, status in ((b"{" * 300_000, 413), (b"[" * 5000 + b"]" * 5000, 400)):
        response = httpx.post(target.server.url + "/chat/stream", content=body, timeout=15,
                              headers={"Content-Type": "application/json"})
        assert response.status_code == status, response.text
        assert response.json()["error"]
