"""The chat blueprint in process (test client, thread mode): start with GET and POST,
resume exactly from Last-Event-ID, 204 after the close, an unknown id never restarted,
DELETE, the grace period after a client drops, and authorize on every route."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from flask import Flask, Request

from flask_sse_stream import SSE
from flask_sse_stream.chat import DemoBackend, create_chat_blueprint
from tests.inprocess import HEARTBEAT, StreamReader, open_stream
from tests.sse_parser import ParsedEvent, parse

GRACE = 1.0  # long enough for a loaded machine to reconnect within it


@dataclass
class GatedBackend:
    """Sends "first ", then waits for ``release`` before "second". While it waits it
    yields empty pieces (which the blueprint skips), so a cancelled generation in thread
    mode notices at once. ``closed`` is set when the generator is closed."""

    release: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)

    def stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        try:
            yield "first "
            while not self.release.wait(0.005):
                yield ""
            yield "second"
        finally:
            self.closed.set()


USERS: dict[str, bool | str] = {"Bearer good": True, "Bearer alice": "alice",
                                "Bearer bob": "bob"}


def allowed(request: Request) -> bool | str:
    return USERS.get(request.headers.get("Authorization", ""), False)


@pytest.fixture
def gated() -> GatedBackend:
    return GatedBackend()


@pytest.fixture
def app(gated: GatedBackend) -> Flask:
    app = Flask(__name__)
    app.config.update(SSE_HEARTBEAT_INTERVAL=HEARTBEAT, CHAT_GRACE_SECONDS=GRACE)
    SSE(app)
    app.register_blueprint(create_chat_blueprint(DemoBackend(delay=0)), url_prefix="/chat")
    app.register_blueprint(create_chat_blueprint(gated, name="gated"), url_prefix="/gated")
    app.register_blueprint(create_chat_blueprint(DemoBackend(delay=0), name="auth",
                                                 authorize=allowed), url_prefix="/auth")
    return app


def text(events: list[ParsedEvent]) -> str:
    return "".join(json.loads(e.data)["content"] for e in events if e.type == "message")


def close_of(events: list[ParsedEvent]) -> dict[str, object]:
    assert [e.type for e in events].count("close") == 1 and events[-1].type == "close"
    return json.loads(events[-1].data)  # type: ignore[no-any-return]


def seqs(events: list[ParsedEvent], stream_id: str) -> list[int]:
    assert all(e.last_event_id.startswith(stream_id + ":") for e in events)
    return [int(e.last_event_id.rsplit(":", 1)[1]) for e in events]


def whole(app: Flask, path: str, **kwargs: object) -> tuple[str, list[ParsedEvent]]:
    with open_stream(app, path, **kwargs) as stream:  # type: ignore[arg-type]
        events = parse(stream.read_to_end()).events
        return stream.response.headers.get("X-Stream-ID", ""), events


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_reply_streams_with_numbered_ids_and_one_close(app: Flask, method: str) -> None:
    prompt = "tell me about ²٣３ and émoji 🎉"
    if method == "GET":
        stream_id, events = whole(app, "/chat/stream", query_string={"message": prompt})
    else:
        stream_id, events = whole(app, "/chat/stream", method="POST",
                                  json={"message": prompt})
    assert text(events) == DemoBackend.reply_for([{"role": "user", "content": prompt}])
    assert seqs(events, stream_id) == list(range(1, len(events) + 1))
    close = close_of(events)
    assert close["finish_reason"] == "stop"
    assert "usage" in close


def test_post_with_a_conversation(app: Flask) -> None:
    messages = [{"role": "user", "content": "first question"},
                {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": "second question"}]
    _, events = whole(app, "/chat/stream", method="POST", json={"messages": messages})
    assert text(events) == DemoBackend.reply_for(messages)


@pytest.mark.parametrize("via", ["header", "query"])
def test_resume_sends_exactly_what_follows(app: Flask, via: str) -> None:
    stream_id, events = whole(app, "/chat/stream?message=resume+me")
    cut = 3
    last_id = f"{stream_id}:{cut}"
    if via == "header":
        _, rest = whole(app, "/chat/stream?message=ignored",
                        headers={"Last-Event-ID": last_id})
    else:
        _, rest = whole(app, f"/chat/stream?lastEventId={last_id}")
    assert rest == events[cut:]  # byte-identical events: no gap, no duplicate


def test_post_resume_ignores_the_resent_body(app: Flask) -> None:
    stream_id, events = whole(app, "/chat/stream", method="POST", json={"message": "p"})
    _, rest = whole(app, "/chat/stream", method="POST", json={"message": "p"},
                    headers={"Last-Event-ID": f"{stream_id}:1"})
    assert rest == events[1:]


def test_after_the_close_a_resume_gets_204(app: Flask) -> None:
    _, events = whole(app, "/chat/stream?message=done")
    response = app.test_client().get(
        "/chat/stream", headers={"Last-Event-ID": events[-1].last_event_id})
    assert response.status_code == 204
    assert response.get_data() == b""


def test_an_unknown_generation_is_never_restarted(app: Flask) -> None:
    _, events = whole(app, "/chat/stream?message=hi",
                      headers={"Last-Event-ID": "unknownid:4"})
    assert len(events) == 1
    assert events[0].last_event_id == "unknownid:5"
    assert close_of(events) == {"finish_reason": "error",
                                "error": "this reply is no longer available"}


def test_a_resume_past_the_end_of_a_running_generation_is_unknown(
        app: Flask, gated: GatedBackend) -> None:
    with open_stream(app, "/gated/stream?message=x") as first:
        stream_id = first.response.headers["X-Stream-ID"]
        first.events(1)
        _, events = whole(app, "/gated/stream", headers={"Last-Event-ID": f"{stream_id}:50"})
        assert close_of(events)["finish_reason"] == "error"
        gated.release.set()
        assert text(parse(first.read_to_end()).events) == "first second"


@pytest.mark.parametrize("bad", ["nocolon", "short:1", "abcdefgh:x", "abcdefgh:²",
                                 "abcdefgh:\u0663", "abcdefgh:1:2"])
def test_a_malformed_last_event_id_gets_400_json(app: Flask, bad: str) -> None:
    response = app.test_client().get("/chat/stream", query_string={"lastEventId": bad})
    assert response.status_code == 400
    assert "Last-Event-ID" in response.get_json()["error"]


def test_delete_stops_a_running_generation(app: Flask, gated: GatedBackend) -> None:
    with open_stream(app, "/gated/stream?message=x") as stream:
        stream_id = stream.response.headers["X-Stream-ID"]
        assert text(stream.events(1)) == "first "
        response = app.test_client().delete(f"/gated/stream/{stream_id}")
        assert response.status_code == 204
        events = parse(stream.read_to_end()).events
    assert close_of(events) == {"finish_reason": "cancelled"}
    assert text(events) == "first "
    assert gated.closed.wait(5), "the backend's generator was not closed"


@pytest.mark.parametrize("stream_id", ["unknownid", "x" * 65, "%C2%B2", "a.b"])
def test_delete_of_an_unknown_stream_is_404_json(app: Flask, stream_id: str) -> None:
    response = app.test_client().delete(f"/chat/stream/{stream_id}")
    assert response.status_code == 404
    assert response.get_json() == {"error": "no such stream"}


def test_a_client_back_within_the_grace_period_resumes(app: Flask,
                                                       gated: GatedBackend) -> None:
    stream = open_stream(app, "/gated/stream?message=x")
    stream_id = stream.response.headers["X-Stream-ID"]
    assert text(stream.events(1)) == "first "
    stream.close()  # the client drops; the generation keeps running for GRACE seconds
    with open_stream(app, "/gated/stream", headers={"Last-Event-ID": f"{stream_id}:1"}) as back:
        gated.release.set()
        events = parse(back.read_to_end()).events
    assert text(events) == "second"
    assert close_of(events)["finish_reason"] == "stop"
    assert seqs(events, stream_id) == [2, 3]


def test_past_the_grace_period_the_generation_is_cancelled(app: Flask,
                                                           gated: GatedBackend) -> None:
    stream = open_stream(app, "/gated/stream?message=x")
    stream_id = stream.response.headers["X-Stream-ID"]
    assert text(stream.events(1)) == "first "
    stream.close()
    assert gated.closed.wait(GRACE + 5), "still generating long after the grace period"
    assert not gated.release.is_set()
    _, events = whole(app, "/gated/stream", headers={"Last-Event-ID": f"{stream_id}:1"})
    assert close_of(events) == {"finish_reason": "cancelled"}
    assert seqs(events, stream_id) == [2]


def test_authorize_guards_start_resume_and_delete(app: Flask) -> None:
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer nobody"}):
        for response in (
            client.get("/auth/stream?message=hi", headers=headers),
            client.post("/auth/stream", json={"message": "hi"}, headers=headers),
            client.get("/auth/stream", headers={**headers, "Last-Event-ID": "abcdefgh:1"}),
            client.delete("/auth/stream/abcdefgh", headers=headers),
        ):
            assert response.status_code == 401
            assert response.get_json() == {"error": "not authorized"}
    alice = {"Authorization": "Bearer alice"}
    bob = {"Authorization": "Bearer bob"}
    stream_id, events = whole(app, "/auth/stream?message=mine", headers=alice)
    assert close_of(events)["finish_reason"] == "stop"
    # another user's id grants nothing
    _, stolen = whole(app, "/auth/stream",
                      headers={**bob, "Last-Event-ID": f"{stream_id}:1"})
    assert close_of(stolen)["finish_reason"] == "error" and len(stolen) == 1
    assert client.delete(f"/auth/stream/{stream_id}", headers=bob).status_code == 404
    _, own = whole(app, "/auth/stream", headers={**alice, "Last-Event-ID": f"{stream_id}:1"})
    assert own == events[1:]


def test_the_reader_helper_sees_a_heartbeat_while_a_generation_waits(
        app: Flask, gated: GatedBackend) -> None:
    with open_stream(app, "/gated/stream?message=x") as stream:
        reader: StreamReader = stream
        reader.events(1)
        before = len(reader.chunks)
        reader.read_chunks(before + 2)
        assert reader.chunks[before:before + 2] == [b": ping\n"] * 2  # alive while waiting
        gated.release.set()
        assert close_of(parse(reader.read_to_end()).events)["finish_reason"] == "stop"
