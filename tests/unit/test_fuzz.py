"""Hostile input on every route, in process (test client, thread mode), memory broker: the
fast version of tests/test_hostile_input.py, so a parsing bug shows in seconds.

The invariant everywhere: never a 5xx; a 4xx is JSON ``{"error": ...}``; a 204 is empty; a
200 is an event stream that opens properly, is UTF-8 with LF line endings, and (for chat)
holds numbered events ending in exactly one ``close``. A Last-Event-ID that is not one of
the channel's ids gets an ``event: reset`` first.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flask_sse_stream import SSE
from flask_sse_stream.chat import DemoBackend, create_chat_blueprint
from tests.fuzzing import (
    channel_ids,
    chat_bodies,
    chat_ids,
    header_values,
    raw_header_bytes,
)
from tests.inprocess import HEARTBEAT, check_answer
from tests.sse_parser import parse

FUZZ = settings(max_examples=60, deadline=None)  # each test a second or two


def make_app() -> tuple[Flask, SSE, list[str]]:
    app = Flask(__name__)
    app.config.update(SSE_HEARTBEAT_INTERVAL=HEARTBEAT, CHAT_GRACE_SECONDS=0.5,
                      SSE_HISTORY_SIZE=5)
    sse = SSE(app)
    app.register_blueprint(create_chat_blueprint(DemoBackend(delay=0)), url_prefix="/chat")
    with app.app_context():
        ids = [sse.publish({"n": n}, channel="fuzz") for n in range(8)]  # seq 1 to 8
    return app, sse, ids


# One app for all examples (hypothesis reruns the test body, not fixtures).
APP, SSE_EXT, IDS = make_app()
BOOT = IDS[0].rsplit("-", 1)[0]
FIRST_KEPT = len(IDS) - 5 + 1  # SSE_HISTORY_SIZE=5: seqs 4 to 8 are kept
client = APP.test_client()


def latin1(value: bytes) -> str:
    """A header's bytes as a WSGI server hands them to the app (PEP 3333)."""
    return value.decode("latin-1")


def replay_position(last_id: str) -> int | None:
    """The seq a resume from ``last_id`` continues after, when it names an event still in
    the history (seq FIRST_KEPT - 1 and later); None when the answer must be a reset."""
    boot, _, seq = last_id.rpartition("-")
    if boot != BOOT or not seq.isascii() or not seq.isdigit():
        return None
    return int(seq) if FIRST_KEPT - 1 <= int(seq) <= len(IDS) else None


def check_channel(response: Any, last_id: str | None) -> None:
    body = check_answer(response)
    if response.status_code != 200:
        return
    events = parse(body).events
    if not last_id:
        assert events == [], body  # no resume: nothing replayed
        return
    position = replay_position(last_id)
    if position is None:
        assert events and events[0].type == "reset", (last_id, body)
        assert json.loads(events[0].data)["reason"]
    elif last_id == IDS[position - 1] or (events[:1] and events[0].type != "reset"):
        # exact continuation (an id with leading zeros may be taken either way)
        assert [e.last_event_id for e in events] == IDS[position:], (last_id, body)


def check_chat(response: Any) -> None:
    body = check_answer(response, read_all=True)
    if response.status_code != 200:
        return
    events = parse(body).events
    assert events and events[-1].type == "close", body[-300:]
    assert [e.type for e in events].count("close") == 1
    stream_id, _, first_seq = events[0].last_event_id.rpartition(":")
    seqs = [int(e.last_event_id.rpartition(":")[2]) for e in events]
    assert seqs == list(range(int(first_seq), int(first_seq) + len(events)))
    assert all(e.last_event_id.rpartition(":")[0] == stream_id for e in events)
    for event in events[:-1]:
        assert event.type == "message" and isinstance(json.loads(event.data)["content"], str)
    close = json.loads(events[-1].data)
    assert isinstance(close["finish_reason"], str)
    # the demo backend cannot fail: an error here is input that passed validation and then
    # broke the generation (it should have been a 400)
    assert close.get("error") != "internal error", close


@FUZZ
@given(name=st.text(max_size=150) | st.sampled_from(["fuzz", "a" * 128, "a" * 129]))
def test_channel_names(name: str) -> None:
    check_channel(client.get("/stream", query_string={"channel": name}, buffered=False), None)


@FUZZ
@given(raw=st.binary(max_size=100))
def test_channel_raw_query_bytes(raw: bytes) -> None:
    query = f"channel={quote(raw, safe='')}&lastEventId={quote(raw[::-1], safe='')}"
    check_answer(client.get("/stream", query_string=query, buffered=False))


@FUZZ
@given(value=header_values(channel_ids(BOOT)))
def test_channel_last_event_id_header(value: bytes) -> None:
    last_id = latin1(value)
    headers = {"Last-Event-ID": last_id} if last_id else {}
    check_channel(client.get("/stream?channel=fuzz", headers=headers, buffered=False),
                  last_id or None)


@FUZZ
@given(last_id=st.text(max_size=100) | channel_ids(BOOT))
def test_channel_last_event_id_query(last_id: str) -> None:
    response = client.get("/stream", query_string={"channel": "fuzz", "lastEventId": last_id},
                          buffered=False)
    check_channel(response, last_id or None)


@FUZZ
@given(message=st.text(max_size=300),
       resume=st.none() | header_values(chat_ids), via_query=st.booleans())
def test_chat_get(message: str, resume: bytes | None, via_query: bool) -> None:
    query: dict[str, str] = {"message": message}
    headers: dict[str, str] = {}
    if resume is not None and via_query:
        query["lastEventId"] = resume.decode("utf-8", "replace")
    elif resume:
        headers["Last-Event-ID"] = latin1(resume)
    check_chat(client.get("/chat/stream", query_string=query, headers=headers,
                          buffered=False))


@FUZZ
@given(body=chat_bodies)
def test_chat_post_json(body: Any) -> None:
    raw = json.dumps(body)  # ensure_ascii: lone surrogates travel as \\udXXX escapes
    check_chat(client.post("/chat/stream", data=raw, content_type="application/json",
                           buffered=False))


@FUZZ
@given(raw=st.binary(max_size=500) | chat_bodies.map(
           lambda b: json.dumps(b, ensure_ascii=False).encode("utf-8", "surrogatepass")),
       content_type=st.sampled_from(["application/json", "application/json; charset=latin-1",
                                     "text/plain", "", "application/x-www-form-urlencoded"]),
       resume=st.none() | raw_header_bytes)
def test_chat_post_raw(raw: bytes, content_type: str, resume: bytes | None) -> None:
    headers = {"Last-Event-ID": latin1(resume)} if resume else {}
    check_chat(client.post("/chat/stream", data=raw, content_type=content_type or None,
                           headers=headers, buffered=False))


@FUZZ
@given(stream_id=st.text(min_size=1, max_size=80) | chat_ids | st.binary(min_size=1, max_size=60))
def test_chat_delete(stream_id: str | bytes) -> None:
    # "/" is the path separator even when escaped (WSGI unquotes PATH_INFO): its own test
    quoted = quote(stream_id, safe="")
    assume("%2F" not in quoted)
    response = client.delete("/chat/stream/" + quoted)
    assert response.status_code == 404, response.get_data()
    assert response.get_json() == {"error": "no such stream"}


@pytest.mark.parametrize("stream_id", ["/", "a/b", "/x", "x/"])
def test_chat_delete_of_an_id_with_a_slash_is_404_json(stream_id: str) -> None:
    response = client.delete("/chat/stream/" + quote(stream_id, safe=""))
    assert response.status_code == 404, response.get_data()
    assert response.get_json() == {"error": "no such stream"}
