"""Presence and ``?last=N`` on the memory broker, in process (thread runtime).

The counts of one process, the presence events (opening, changes, one per channel per
pass however many joins), the presence route's checks, ``last=N`` with its exact seam,
and both on streams of several channels (whose presence events carry the cursor)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask

import flask_sse_stream.brokers.presence as presence_module
from flask_sse_stream import SSE
from flask_sse_stream.brokers.multichannel import ChannelMerge
from flask_sse_stream.settings import load_settings
from tests.inprocess import HEARTBEAT, StreamReader, open_stream
from tests.sse_parser import ParsedEvent


def make_app(**config: Any) -> tuple[Flask, SSE]:
    app = Flask(__name__)
    app.config.update({"SSE_HEARTBEAT_INTERVAL": HEARTBEAT, "SECRET_KEY": "k", **config})
    authorize = config.pop("authorize", None)
    sse = SSE(app, authorize=authorize)
    return app, sse


def error_of(answer: Any) -> str:
    message = answer.get_json()["error"]
    assert isinstance(message, str)
    return message


def presence_events(reader: StreamReader) -> list[dict[str, Any]]:
    from tests.sse_parser import parse

    return [json.loads(e.data) for e in parse(reader.body).events if e.type == "presence"]


def wait_for_presence(reader: StreamReader, count: int, timeout: float = 5.0) -> None:
    """Read until the newest presence event says ``count``."""
    deadline = time.monotonic() + timeout
    while True:
        got = presence_events(reader)
        if got and got[-1]["count"] == count:
            return
        assert time.monotonic() < deadline, f"presence {got} never reached {count}"
        reader._next_chunk()


def stream_url(*channels: str, **query: Any) -> str:
    return "/stream?" + urlencode([*(("channel", c) for c in channels), *query.items()])


@pytest.fixture
def fast_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(presence_module, "INTERVAL", 0.05)


# -- counts and the route ------------------------------------------------------------------


def test_presence_counts_open_streams_and_a_closed_one_stops_at_once() -> None:
    app, sse = make_app()
    with app.app_context():
        assert sse.presence("room") == 0
    a = open_stream(app, stream_url("room"))
    b = open_stream(app, stream_url("room", "other"))
    with app.app_context():
        assert (sse.presence("room"), sse.presence("other")) == (2, 1)
        b.close()
        assert (sse.presence("room"), sse.presence("other")) == (1, 0)
        a.close()
        assert sse.presence("room") == 0
        with pytest.raises(ValueError):
            sse.presence("not valid")


def test_presence_route_answers_the_count_and_refuses_bad_requests() -> None:
    app, _sse = make_app(authorize=lambda channel: channel != "secret")
    client = app.test_client()
    with open_stream(app, stream_url("room")):
        answer = client.get("/stream/presence?channel=room")
        assert answer.status_code == 200 and answer.get_json() == {"channel": "room", "count": 1}
        assert answer.headers["Cache-Control"] == "no-store"
    assert client.get("/stream/presence?channel=room").get_json() == {"channel": "room", "count": 0}
    assert client.get("/stream/presence").get_json() == {"channel": "sse", "count": 0}
    for query, status in [("channel=a%20b", 400), ("channel=" + "x" * 129, 400),
                          ("channel=a&channel=b", 400), ("channel=caf%C3%A9", 400),
                          ("channel=secret", 403)]:
        answer = client.get(f"/stream/presence?{query}")
        assert answer.status_code == status, query
        assert isinstance(error_of(answer), str)


def test_presence_route_needs_a_token_for_the_channel_when_tokens_are_on() -> None:
    app, sse = make_app(SSE_SUBSCRIBE_TOKENS=True)
    client = app.test_client()
    with app.test_request_context():
        token = sse.subscribe_token(["room"])
    assert client.get("/stream/presence?channel=room").status_code == 401
    assert client.get("/stream/presence?channel=room&token=forged").status_code == 401
    assert client.get(f"/stream/presence?channel=other&token={token}").status_code == 403
    answer = client.get(f"/stream/presence?channel=room&token={token}")
    assert answer.get_json() == {"channel": "room", "count": 0}
    with open_stream(app, f"{stream_url('room')}&token={token}"):
        assert client.get(f"/stream/presence?channel=room&token={token}").get_json()["count"] == 1


# -- presence events -----------------------------------------------------------------------


def test_no_presence_events_unless_presence_is_on() -> None:
    app, sse = make_app()
    with open_stream(app, stream_url("room")) as reader:
        with app.app_context():
            sse.publish({"n": 1}, channel="room")
        events = reader.events(1)
    assert [e.type for e in events] == ["message"]


def test_streams_open_with_the_count_and_hear_each_change(fast_passes: None) -> None:
    app, _sse = make_app(SSE_PRESENCE=True)
    a = open_stream(app, stream_url("room"))
    first = a.events(1)[0]
    assert first.type == "presence" and json.loads(first.data) == {"channel": "room", "count": 1}
    assert first.last_event_id == ""  # not history: no id on a stream of one channel
    b = open_stream(app, stream_url("room"))
    assert presence_events(b) == [] and json.loads(b.events(1)[0].data)["count"] == 2
    wait_for_presence(a, 2)
    b.close()
    wait_for_presence(a, 1)
    a.close()


def test_many_joins_in_one_pass_give_each_stream_one_presence_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, sse = make_app(SSE_PRESENCE=True)
    monkeypatch.setattr(presence_module, "INTERVAL", 30.0)  # passes run when called below
    first = open_stream(app, stream_url("crowd"))
    wait_for_presence(first, 1)
    crowd = [open_stream(app, stream_url("crowd")) for _ in range(60)]
    with app.app_context():
        presence = sse._state().broker.presence
    presence._pass()  # one pass: one event per stream, whatever happened since the last
    with app.app_context():
        sse.publish("marker", channel="crowd")  # after the pass's events on every stream
    for n, reader in enumerate([first, *crowd]):
        while b"data: marker" not in reader.body:
            reader._next_chunk()
        # the opening, then this pass's count (not to the last one: it opened with it)
        expected = [n + 1, 61] if n < 60 else [61]
        assert [e["count"] for e in presence_events(reader)] == expected
    for reader in [first, *crowd]:
        reader.close()


def test_presence_events_on_a_stream_of_several_channels_carry_the_cursor(
    fast_passes: None,
) -> None:
    app, sse = make_app(SSE_PRESENCE=True)
    with app.app_context():
        sse.publish({"n": 0}, channel="a")
    reader = open_stream(app, stream_url("a", "b"))
    opening = [e for e in reader.events(2) if e.type == "presence"]
    assert [json.loads(e.data)["channel"] for e in opening] == ["a", "b"]
    assert [e.last_event_id.split("@")[0] for e in opening] == ["a", "b"]  # channel first
    other = open_stream(app, stream_url("b"))
    wait_for_presence(reader, 2)
    change = [e for e in parse_all(reader) if e.type == "presence"][-1]
    assert json.loads(change.data) == {"channel": "b", "count": 2}
    assert change.last_event_id.split("@")[0] == "b"
    reader.close()
    other.close()
    # the presence event's id resumes every channel exactly: nothing twice, nothing lost
    with app.app_context():
        sse.publish({"n": 1}, channel="a")
        sse.publish({"n": 2}, channel="b")
    resumed = open_stream(app, stream_url("a", "b"),
                          headers={"Last-Event-ID": change.last_event_id})
    got = [e for e in resumed.events(4) if e.type == "message"]
    assert sorted(json.loads(e.data)["n"] for e in got) == [1, 2]
    resumed.close()


def parse_all(reader: StreamReader) -> list[ParsedEvent]:
    from tests.sse_parser import parse

    return parse(reader.body).events


def test_an_event_published_as_presence_still_moves_the_cursor() -> None:
    merge = ChannelMerge(_Sink())
    merge.start([("a", b"", "1-0"), ("b", b"", "5-0")], {"a": None, "b": None})
    out = merge.rewrite("a", b"event: presence\nid: 2-0\ndata: x\n\n")
    assert out == b"event: presence\nid: a@2-0,b@5-0\ndata: x\n\n"
    ours = merge.rewrite("b", b'event: presence\ndata: {"count":1}\n\n')
    assert ours == b'event: presence\nid: b@5-0,a@2-0\ndata: {"count":1}\n\n'


class _Sink:
    reason = None

    def offer(self, chunk: bytes) -> bool:
        return True

    def close(self, reason: object) -> None:
        return None


def test_sse_presence_setting_is_checked() -> None:
    assert load_settings({"SSE_PRESENCE": "true"}).presence is True
    assert load_settings({}).presence is False
    with pytest.raises(ValueError, match="SSE_PRESENCE"):
        load_settings({"SSE_PRESENCE": "maybe"})


# -- last=N --------------------------------------------------------------------------------


def test_last_n_sends_the_newest_events_in_order_then_live_ones() -> None:
    app, sse = make_app()
    with app.app_context():
        ids = [sse.publish({"n": n}, channel="rate") for n in range(10)]
    reader = open_stream(app, stream_url("rate", last=3))
    got = reader.events(3)
    assert [json.loads(e.data)["n"] for e in got] == [7, 8, 9]
    assert [e.last_event_id for e in got] == ids[7:]
    with app.app_context():
        sse.publish({"n": 10}, channel="rate")
    assert [json.loads(e.data)["n"] for e in reader.events(4)] == [7, 8, 9, 10]
    reader.close()
    # more than there is: all of it; with Last-Event-ID the client resumes as before
    everything = open_stream(app, stream_url("rate", last=1000))
    assert len(everything.events(11)) == 11
    everything.close()
    resumed = open_stream(app, stream_url("rate", last=1), headers={"Last-Event-ID": ids[5]})
    assert [json.loads(e.data)["n"] for e in resumed.events(5)] == [6, 7, 8, 9, 10]
    resumed.close()
    empty = open_stream(app, stream_url("nothing-yet", last=5))
    with app.app_context():
        sse.publish("first", channel="nothing-yet")
    assert [e.data for e in empty.events(1)] == ["first"]
    empty.close()


@pytest.mark.parametrize("value", ["0", "-1", "1001", "abc", "1.5", "", " 1", "+1", "1e3",
                                   "\u0663", "\uff11", "\u00b2", "9" * 40, "1\x00"])
def test_a_bad_last_gets_400_json(value: str) -> None:
    app, _sse = make_app(SSE_HISTORY_SIZE=1000)
    answer = app.test_client().get(stream_url("rate", last=value))
    assert answer.status_code == 400
    assert "last" in error_of(answer)


def test_last_twice_or_without_history_gets_400_json() -> None:
    app, _sse = make_app()
    assert app.test_client().get("/stream?channel=r&last=1&last=2").status_code == 400
    app, _sse = make_app(SSE_HISTORY_SIZE=0)
    answer = app.test_client().get("/stream?channel=r&last=1")
    assert answer.status_code == 400 and "SSE_HISTORY_SIZE" in error_of(answer)


def test_last_n_joins_live_events_exactly_while_publishing_never_stops() -> None:
    app, sse = make_app()
    stop = threading.Event()

    def publish_forever() -> None:
        n = 0
        with app.app_context():
            while not stop.is_set():
                sse.publish({"n": n}, channel="busy")
                n += 1
                if n % 50 == 0:
                    time.sleep(0.001)

    publisher = threading.Thread(target=publish_forever)
    publisher.start()
    try:
        for _ in range(30):
            reader = open_stream(app, stream_url("busy", last=5))
            numbers = [json.loads(e.data)["n"] for e in reader.events(40) if e.type == "message"]
            reader.close()
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    finally:
        stop.set()
        publisher.join()


def test_last_n_on_several_channels_and_a_resume_from_inside_the_prelude() -> None:
    app, sse = make_app()
    with app.app_context():
        for n in range(5):
            sse.publish({"a": n}, channel="a")
            sse.publish({"b": n}, channel="b")
    reader = open_stream(app, stream_url("a", "b", last=2))
    got = reader.events(4)
    reader.close()
    assert [json.loads(e.data) for e in got] == [{"a": 3}, {"a": 4}, {"b": 3}, {"b": 4}]
    # cut after the first event: the resume sends the rest of a and b's newest two
    resumed = open_stream(app, stream_url("a", "b", last=2),
                          headers={"Last-Event-ID": got[0].last_event_id})
    rest = resumed.events(3)
    resumed.close()
    assert [json.loads(e.data) for e in rest] == [{"a": 4}, {"b": 3}, {"b": 4}]


def test_every_open_stream_ends_with_the_true_count_after_racing_joins_and_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads open and close streams at random while passes run every 10 ms: whatever
    the interleaving of joins, openings and passes, once it is quiet every open stream's
    newest presence event is the true count."""
    import random

    monkeypatch.setattr(presence_module, "INTERVAL", 0.01)
    app, sse = make_app(SSE_PRESENCE=True)
    keep: list[StreamReader] = []
    lock = threading.Lock()

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[StreamReader] = []
        for _ in range(25):
            if mine and rng.random() < 0.4:
                mine.pop(rng.randrange(len(mine))).close()
            else:
                mine.append(open_stream(app, stream_url("race")))
        with lock:
            keep.extend(mine)

    workers = [threading.Thread(target=churn, args=(seed,)) for seed in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with app.app_context():
        assert sse.presence("race") == len(keep)
    for reader in keep:
        wait_for_presence(reader, len(keep))
    with app.app_context():
        sse.publish("marker", channel="race")  # nothing after the last count
    for reader in keep:
        while b"data: marker" not in reader.body:
            reader._next_chunk()
        assert presence_events(reader)[-1]["count"] == len(keep)
        reader.close()


def test_a_stream_that_opened_with_a_count_gone_stale_is_sent_the_true_one() -> None:
    """Passes by hand (the loop is kept from starting): b opens with 2, a leaves before
    the next pass, so the count is back to what was announced last (1): b alone must be
    sent 1, and a stream already showing 1 gets nothing."""
    app, sse = make_app(SSE_PRESENCE=True)
    with app.app_context():
        presence = sse._state().broker.presence
    presence._running = True  # no loop: every pass below is this test's
    a = open_stream(app, stream_url("stale"))
    watcher = open_stream(app, stream_url("stale"))
    b = open_stream(app, stream_url("stale"))
    presence._pass()  # announces 3 to a and watcher (they opened with 1 and 2)
    a.close()
    b.close()
    c = open_stream(app, stream_url("stale"))  # opens with 2
    d = open_stream(app, stream_url("stale"))  # opens with 3
    d.close()
    presence._pass()  # the count is 2: watcher showed 3, c showed 2
    with app.app_context():
        sse.publish("marker", channel="stale")
    for reader in (watcher, c):
        while b"data: marker" not in reader.body:
            reader._next_chunk()
    assert [e["count"] for e in presence_events(watcher)] == [2, 3, 2]
    assert [e["count"] for e in presence_events(c)] == [2]
    e = open_stream(app, stream_url("stale"))  # opens with 3
    watcher.close()  # back to 2, as announced: only e shows another count
    presence._pass()
    with app.app_context():
        sse.publish("marker2", channel="stale")
    for reader in (c, e):
        while b"data: marker2" not in reader.body:
            reader._next_chunk()
    assert [ev["count"] for ev in presence_events(c)] == [2]
    assert [ev["count"] for ev in presence_events(e)] == [3, 2]
    c.close()
    e.close()


def test_tokens_apply_to_a_stream_with_last_and_presence() -> None:
    app, sse = make_app(SSE_SUBSCRIBE_TOKENS=True, SSE_PRESENCE=True)
    with app.test_request_context():
        token = sse.subscribe_token(["x", "y"])
        sse.publish({"x": 1}, channel="x")
    client = app.test_client()
    assert client.get(stream_url("x", "y", last=1)).status_code == 401
    assert client.get(stream_url("x", "z", last=1, token=token)).status_code == 403
    reader = open_stream(app, stream_url("x", "y", last=1, token=token))
    events = reader.events(3)
    reader.close()
    assert [(e.type, e.last_event_id.split("@")[0]) for e in events] == [
        ("message", "x"), ("presence", "x"), ("presence", "y")]
