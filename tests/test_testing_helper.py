"""read_events and the library's own event-stream parser, in a plain pytest process."""

from __future__ import annotations

import threading
import time
from typing import Any

from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from flask_sse_stream import SSE, Event, sse_stream
from flask_sse_stream.runtime import current
from flask_sse_stream.testing import read_events
from flask_sse_stream.wire.parse import EventParser, parse_events
from tests.sse_parser import parse as reference_parse


def test_runs_without_gevent_patching() -> None:
    assert current().name == "threading"


def make_app() -> tuple[Flask, SSE, dict[str, Any]]:
    app = Flask(__name__)
    app.config["SSE_HEARTBEAT_INTERVAL"] = 0.05  # heartbeats must be skipped
    sse = SSE(app)
    state: dict[str, Any] = {"finally": threading.Event(), "yielded": 0}

    @app.get("/endless")
    @sse_stream(retry=1500)
    def endless() -> Any:
        try:
            n = 0
            while True:
                n += 1
                state["yielded"] = n
                yield Event({"n": n}, id=n, event="tick" if n % 2 else None)
                time.sleep(0.01)
        finally:
            state["finally"].set()

    @app.get("/short")
    @sse_stream
    def short() -> Any:
        yield "one"
        yield Event("two\nlines", event="x")

    return app, sse, state


def test_endless_generator_is_read_then_closed() -> None:
    app, _sse, state = make_app()
    response = app.test_client().get("/endless", buffered=False)
    events = read_events(response, count=5)
    assert [e.id for e in events] == ["1", "2", "3", "4", "5"]
    assert [e.event for e in events] == ["tick", None, "tick", None, "tick"]
    assert events[0].data == '{"n":1}' and events[0].retry == 1500
    assert events[1].retry is None
    assert events[0] == Event({"n": 1}, id=1, event="tick", retry=1500)
    assert state["finally"].wait(5), "the generator's finally: did not run"


def test_stream_that_ends_is_read_to_its_end() -> None:
    app, _sse, _state = make_app()
    events = read_events(app.test_client().get("/short", buffered=False))
    assert [(e.event, e.data) for e in events] == [(None, "one"), ("x", "two\nlines")]


def test_count_none_stops_after_quiet_timeout_and_closes() -> None:
    app, sse, _state = make_app()
    with app.app_context():
        for n in range(3):
            sse.publish({"n": n}, channel="news", event="note")
    client = app.test_client()
    response = client.get("/stream?channel=news", buffered=False,
                          headers={"Last-Event-ID": "0"})  # unknown -> reset, then history
    events = read_events(response, timeout=0.5)
    assert events[0].event == "reset"
    assert [e.data for e in events[1:]] == ['{"n":0}', '{"n":1}', '{"n":2}']
    with app.app_context():
        assert sse.stats()["subscribers"].get("news", 0) == 0  # closed: unsubscribed


def test_channel_with_live_publishes() -> None:
    app, sse, _state = make_app()
    response = app.test_client().get("/stream?channel=live", buffered=False)
    with app.app_context():
        assert sse.stats()["subscribers"] == {"live": 1}

    def publish_later() -> None:
        with app.app_context():
            for n in range(4):
                sse.publish(f"msg {n}", channel="live")

    threading.Thread(target=publish_later).start()
    events = read_events(response, count=4)
    assert [e.data for e in events] == [f"msg {n}" for n in range(4)]
    assert all(e.id for e in events)
    with app.app_context():
        assert sse.stats()["subscribers"].get("live", 0) == 0


def test_fewer_events_than_count_returns_after_timeout() -> None:
    app, _sse, _state = make_app()
    response = app.test_client().get("/stream?channel=quiet", buffered=False)
    assert read_events(response, count=3, timeout=0.3) == []


def test_parser_handles_split_crlf_bom_and_comments() -> None:
    parser = EventParser()
    out = parser.feed(b"\xef\xbb\xbf: hi\r")
    out += parser.feed(b"\ndata: a\r")
    out += parser.feed(b"\ndata:  b\rid: 7\r\n\r\nretry: x\nretry: 20\n")
    out += parser.feed(b"id: only\n\ndata\n\nevent: e\ndata: \xc3")
    out += parser.feed(b"\xa9\n\ndata: cut")
    assert [(e.data, e.id, e.event, e.retry) for e in out] == [
        ("a\n b", "7", None, None),
        ("", None, None, 20),
        ("\u00e9", None, "e", None),
    ]


@given(st.lists(st.tuples(st.text(), st.one_of(st.none(), st.text(alphabet="abc:")),
                          st.one_of(st.none(), st.text(alphabet="xyz09")))),
       st.integers(min_value=1, max_value=7))
def test_parser_agrees_with_the_reference_parser(items, split) -> None:
    wire = b"".join(Event(data, event=event or None, id=ident).encode()
                    for data, event, ident in items)
    chunks = [wire[i:i + split] for i in range(0, len(wire), split)]
    parser = EventParser()
    ours = [e for chunk in chunks for e in parser.feed(chunk)]
    reference = reference_parse(wire).events
    assert [(e.event or "message", e.data) for e in ours] == [(r.type, r.data) for r in reference]
    assert parse_events(wire) == ours
