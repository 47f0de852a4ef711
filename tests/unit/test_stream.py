"""``@sse_stream`` in process (Flask's test client, thread mode): what a view yields reaches
the client in order and encoded per the spec, heartbeats flow, the producer is closed when
the client leaves, and the stream cap answers before anything starts."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from flask import Flask, current_app, g, jsonify, request

from flask_sse_stream import SSE, Event, last_event_id, sse_stream
from flask_sse_stream.settings import settings_for
from tests.inprocess import HEARTBEAT, open_stream
from tests.sse_parser import parse


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_HEARTBEAT_INTERVAL"] = HEARTBEAT
    SSE(app)
    app.extensions["closed"] = threading.Event()
    app.extensions["release"] = threading.Event()

    @app.before_request
    def set_user() -> None:
        g.user = request.headers.get("X-User", "anonymous")

    @app.get("/count")
    @sse_stream
    def count() -> Any:
        for i in range(int(request.args.get("n", "3"))):
            yield Event({"i": i}, id=i)

    @app.get("/kinds")
    @sse_stream(retry=1500, headers={"X-Extra": "yes"})
    def kinds() -> Any:
        yield "plain\nline two"
        yield {"a": 1}
        yield [1, 2]
        yield b"bytes"
        yield Event("named", event="custom", id="x1")
        yield Event(comment="just a comment")
        yield "after the comment"

    @app.get("/context")
    @sse_stream
    def context() -> Any:
        yield {"path": request.path, "app": current_app.name, "user": g.user,
               "last_event_id": last_event_id()}

    @app.get("/validated")
    @sse_stream
    def validated() -> Any:
        if not request.args.get("x"):
            return jsonify(error="x is required"), 400

        def events() -> Any:
            yield {"x": request.args["x"]}

        return events()

    @app.get("/fails")
    @sse_stream
    def fails() -> Any:
        yield "before"
        raise RuntimeError("boom")

    @app.get("/wait-then-yield")
    @sse_stream
    def wait_then_yield() -> Any:
        released = current_app.extensions["release"]
        assert released.wait(10)  # silent until the test lets it go: heartbeats meanwhile
        yield "released"

    @app.get("/endless")
    @sse_stream
    def endless() -> Any:
        closed = current_app.extensions["closed"]
        try:
            n = 0
            while True:
                yield {"n": n}
                n += 1
        finally:
            closed.set()

    return app


def test_events_arrive_in_order_with_their_ids(app: Flask) -> None:
    with open_stream(app, "/count?n=5") as stream:
        body = stream.read_to_end()
    assert body.startswith(b": ok\n")
    events = parse(body).events
    assert [json.loads(e.data) for e in events] == [{"i": i} for i in range(5)]
    assert [e.last_event_id for e in events] == ["0", "1", "2", "3", "4"]


def test_response_headers(app: Flask) -> None:
    with open_stream(app, "/count") as stream:
        headers = stream.response.headers
        assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert headers["Cache-Control"] == "no-cache, no-store, no-transform"
        assert headers["X-Accel-Buffering"] == "no"
        assert "Connection" not in headers and "Transfer-Encoding" not in headers
        stream.read_to_end()


def test_every_kind_of_yield_is_encoded_per_the_spec(app: Flask) -> None:
    with open_stream(app, "/kinds") as stream:
        assert stream.response.headers["X-Extra"] == "yes"
        body = stream.read_to_end()
    assert body.startswith(b"retry: 1500\n")
    result = parse(body)
    assert result.retry == 1500
    assert [(e.type, e.data, e.last_event_id) for e in result.events] == [
        ("message", "plain\nline two", ""),
        ("message", '{"a":1}', ""),
        ("message", "[1,2]", ""),
        ("message", "bytes", ""),
        ("custom", "named", "x1"),
        ("message", "after the comment", "x1"),  # the comment dispatched nothing
    ]
    assert b": just a comment\n" in body


def test_generator_runs_in_the_request_and_app_context(app: Flask) -> None:
    with open_stream(app, "/context?lastEventId=7", headers={"X-User": "ann"}) as stream:
        events = parse(stream.read_to_end()).events
    assert [json.loads(e.data) for e in events] == [
        {"path": "/context", "app": app.name, "user": "ann", "last_event_id": "7"}]


def test_last_event_id_header_wins_over_the_query(app: Flask) -> None:
    with open_stream(app, "/context?lastEventId=q", headers={"Last-Event-ID": "h"}) as stream:
        (event,) = parse(stream.read_to_end()).events
    assert json.loads(event.data)["last_event_id"] == "h"


def test_a_view_may_answer_with_a_normal_response(app: Flask) -> None:
    response = app.test_client().get("/validated")
    assert response.status_code == 400
    assert response.get_json() == {"error": "x is required"}
    with open_stream(app, "/validated?x=1") as stream:
        (event,) = parse(stream.read_to_end()).events
    assert json.loads(event.data) == {"x": "1"}


def test_a_failing_generator_ends_the_stream_after_what_it_sent(app: Flask) -> None:
    with open_stream(app, "/fails") as stream:
        events = parse(stream.read_to_end()).events
    assert [e.data for e in events] == ["before"]


def test_heartbeats_flow_while_the_generator_is_silent(app: Flask) -> None:
    with open_stream(app, "/wait-then-yield") as stream:
        stream.read_chunks(4)  # the opening, then at least three heartbeats
        assert stream.chunks[0] == b": ok\n"
        assert stream.chunks[1:4] == [b": ping\n"] * 3
        assert parse(stream.body).events == []  # a heartbeat dispatches nothing
        app.extensions["release"].set()
        events = stream.events(1)
        assert [e.data for e in events] == ["released"]
        stream.read_to_end()


def test_client_leaving_closes_the_generator_and_frees_the_stream(app: Flask) -> None:
    sse: SSE = SSE()  # stats() reads the app's state; any instance will do
    stream = open_stream(app, "/endless")
    with app.app_context():
        assert sse.stats()["open_streams"] == 1
    assert [json.loads(e.data)["n"] for e in stream.events(3)[:3]] == [0, 1, 2]
    stream.close()
    assert app.extensions["closed"].wait(5), "the generator's finally: did not run"
    with app.app_context():
        assert sse.stats()["open_streams"] == 0


def test_beyond_max_streams_a_new_stream_is_refused_with_retry_after(app: Flask) -> None:
    app.config["SSE_MAX_STREAMS"] = 1
    settings_for(app, reload=True)  # config is read once, at setup: this test changes it
    with open_stream(app, "/endless") as first:
        first.events(1)
        refused = app.test_client().get("/count", headers={"Accept": "application/json"})
        assert refused.status_code == 503
        assert "error" in refused.get_json()
        assert 1 <= int(refused.headers["Retry-After"]) <= 10
    assert app.extensions["closed"].wait(5)
    with open_stream(app, "/count") as again:  # the slot is free once the first ended
        assert len(parse(again.read_to_end()).events) == 3
