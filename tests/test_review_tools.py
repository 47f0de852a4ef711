"""Adversarial review of the developer tools: ``flask sse publish/tail``, ``read_events``
and the event-stream parser (fast tier, in-process)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from flask import Flask, Response, jsonify

from flask_sse_stream import SSE, Event, sse_stream
from flask_sse_stream.testing import read_events
from flask_sse_stream.wire.parse import EventParser, parse_events


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_HEARTBEAT_INTERVAL"] = 0
    SSE(app)
    return app


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        ("null", "null"),  # defect: JSON null became an id-only event (no data: line)
        (" null ", "null"),
        ("0", "0"),
        ("-0", "0"),
        ("true", "true"),
        ('"quoted"', "quoted"),
        ("[1, 2]", "[1,2]"),
        ("{bad json", "{bad json"),
        ("", ""),
        ("héllo ☃ 😀", "héllo ☃ 😀"),
        ('"two\\nlines"', "two\nlines"),
    ],
)
def test_publish_odd_data(app: Flask, data: str, wire: str) -> None:
    runner = app.test_cli_runner()
    published = runner.invoke(args=["sse", "publish", "odd", "--", data])  # "-0" is no option
    assert published.exit_code == 0, published.output
    tail = runner.invoke(args=["sse", "tail", "odd", "--last-event-id", "x", "--count", "2"])
    events = parse_events(tail.stdout.encode())
    assert [e.event for e in events] == ["reset", None]
    assert events[1].data == wire and events[1].id == published.stdout.strip()


def test_tail_on_an_endless_channel_stops_after_count_and_unsubscribes(app: Flask) -> None:
    sse = app.extensions["sse"]

    def publisher() -> None:
        with app.app_context():
            deadline = time.monotonic() + 10
            while not sse.broker.subscriber_counts().get("live") and time.monotonic() < deadline:
                time.sleep(0.01)  # polls a condition (the tail's subscription), bounded
            for n in range(5):
                sse.broker.publish("live", {"n": n})

    thread = threading.Thread(target=publisher)
    thread.start()
    tail = app.test_cli_runner().invoke(args=["sse", "tail", "live", "--count", "2"])
    thread.join(10)
    assert tail.exit_code == 0, tail.output
    assert [e.data for e in parse_events(tail.stdout.encode())] == ['{"n":0}', '{"n":1}']
    assert sse.broker.subscriber_counts() == {}


def test_read_events_closes_a_plain_generator_response() -> None:
    """Defect: with a plain ``Response(generator)`` stream (no @sse_stream), closing from
    the test's thread raised "ValueError: generator already executing"."""
    app = Flask(__name__)
    closed = threading.Event()

    @app.get("/plain")
    def plain() -> Response:
        def body() -> Any:
            try:
                n = 0
                while True:
                    n += 1
                    yield f"id: {n}\ndata: {n}\n\n"
                    time.sleep(0.01)
            finally:
                closed.set()

        return Response(body(), mimetype="text/event-stream")

    events = read_events(app.test_client().get("/plain", buffered=False), count=3)
    assert [e.data for e in events] == ["1", "2", "3"]
    assert closed.wait(5)


def test_read_events_on_a_response_that_is_not_a_stream_says_so(app: Flask) -> None:
    """Defect: a 401 JSON answer read as [] (a test expecting no events passed)."""

    @app.get("/denied")
    def denied() -> Any:
        return jsonify(error="nope"), 401

    with pytest.raises(ValueError, match=r"401.*nope"):
        read_events(app.test_client().get("/denied", buffered=False))


def test_read_events_count_edges_and_a_raising_generator(app: Flask) -> None:
    finished = threading.Event()

    @app.get("/three")
    @sse_stream
    def three() -> Any:
        try:
            yield from (Event(n, id=n) for n in range(3))
        finally:
            finished.set()

    @app.get("/boom")
    def boom() -> Response:
        def body() -> Any:
            yield "data: one\n\n"
            raise RuntimeError("boom")

        return Response(body(), mimetype="text/event-stream")

    client = app.test_client()
    assert read_events(client.get("/three", buffered=False), count=0) == []
    more = read_events(client.get("/three", buffered=False), count=10, timeout=1)
    assert [e.data for e in more] == ["0", "1", "2"]  # fewer than asked, no hang
    assert finished.wait(5)
    with pytest.raises(RuntimeError, match="boom"):
        read_events(client.get("/boom", buffered=False), count=5)


def test_parser_is_linear_on_a_long_line_in_small_chunks() -> None:
    """Defect: every chunk rescanned the whole unfinished line, so a 200 KB data line in
    10-byte chunks took quadratic time (minutes)."""
    parser = EventParser()
    text = "x" * 200_000
    assert parser.feed(b"data: ") == []
    steps = 0
    for i in range(0, len(text), 10):
        assert parser.feed(text[i : i + 10].encode()) == []
        steps += 1
    (event,) = parser.feed(b"\r\n\n")
    assert event.data == text and steps == 20_000


def test_parser_line_ends_across_chunks() -> None:
    for chunks in (
        [b"data: a\r", b"\ndata: b\r\n\r\n"],
        [b"data: a\r", b"", b"\ndata: b\r", b"\n\r", b"\n"],
        [b"data: a\rdata: b\r\r"],
        [b"\xef\xbb", b"\xbfdata: a\n", b"data: b\n\n"],
        [b"data: a\ndata: b\n", b"\n"],
    ):
        parser = EventParser()
        events = [e for chunk in chunks for e in parser.feed(chunk)]
        assert [e.data for e in events] == ["a\nb"], chunks


def test_an_sse_stream_read_through_the_test_client_leaves_no_request_context() -> None:
    """A test-client GET of an @sse_stream view read to its end leaves no request or app
    context pushed in the caller's thread (the stream's second push is undone when it
    ends, not only in close(), which an unclosed test response never calls). It used to
    leak, and later code in the thread saw that app as current_app: `flask sse` through
    app.test_cli_runner() then said "SSE is not set up on this app"."""
    from flask.globals import _cv_app, _cv_request

    app = Flask(__name__)

    @app.get("/s")
    @sse_stream
    def s() -> Any:
        yield "hi"

    assert _cv_request.get(None) is None
    response = app.test_client().get("/s")
    assert b"data: hi" in response.data
    leaked = (_cv_request.get(None), _cv_app.get(None))
    try:
        assert leaked == (None, None)
    finally:
        while _cv_request.get(None) is not None:  # do not pollute the tests after this one
            _cv_request.get().pop()
        while _cv_app.get(None) is not None:
            _cv_app.get().pop()
