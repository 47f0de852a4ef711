"""The channel route on the memory broker, in process: live fan-out, Last-Event-ID replay
(exact continuation; a reset for an unknown, future or expired id), validation, authorize,
stats, and a slow subscriber cut off at its queue bound."""

from __future__ import annotations

import json

import pytest
from flask import Flask, request

from flask_sse_stream import SSE
from flask_sse_stream.brokers.memory import MemoryBroker
from flask_sse_stream.runtime import current
from tests.inprocess import HEARTBEAT, data, open_stream
from tests.sse_parser import parse


def make_app(**config: object) -> tuple[Flask, SSE]:
    app = Flask(__name__)
    app.config.update({"SSE_HEARTBEAT_INTERVAL": HEARTBEAT, "SSE_HISTORY_SIZE": 5, **config})

    def authorize(channel: str) -> bool:
        return not channel.startswith("private") or request.headers.get("X-User") == "admin"

    return app, SSE(app, authorize=authorize)


@pytest.fixture
def app_sse() -> tuple[Flask, SSE]:
    return make_app()


def publish(app: Flask, sse: SSE, channel: str, *values: object) -> list[str]:
    with app.app_context():
        return [sse.publish(value, channel=channel) for value in values]


def test_live_events_reach_every_subscriber_in_order(app_sse: tuple[Flask, SSE]) -> None:
    app, sse = app_sse
    with open_stream(app, "/stream?channel=live") as a, \
            open_stream(app, "/stream?channel=live") as b:
        ids = publish(app, sse, "live", *({"n": n} for n in range(4)))
        for stream in (a, b):
            events = stream.events(4)
            assert data(events) == [{"n": n} for n in range(4)]
            assert [e.last_event_id for e in events] == ids
    assert len(set(ids)) == 4


def test_replay_continues_exactly_after_last_event_id(app_sse: tuple[Flask, SSE]) -> None:
    app, sse = app_sse
    ids = publish(app, sse, "r", *({"n": n} for n in range(4)))
    with open_stream(app, "/stream?channel=r", headers={"Last-Event-ID": ids[1]}) as stream:
        publish(app, sse, "r", {"n": 4})
        events = stream.events(3)
    assert data(events) == [{"n": 2}, {"n": 3}, {"n": 4}]  # no gap, no duplicate
    assert events[0].type == "message"


def test_the_query_parameter_resumes_too(app_sse: tuple[Flask, SSE]) -> None:
    app, sse = app_sse
    ids = publish(app, sse, "q", "a", "b")
    with open_stream(app, f"/stream?channel=q&lastEventId={ids[0]}") as stream:
        assert [e.data for e in stream.events(1)] == ["b"]


def test_the_newest_id_replays_nothing_then_live(app_sse: tuple[Flask, SSE]) -> None:
    app, sse = app_sse
    ids = publish(app, sse, "n", "a", "b")
    with open_stream(app, "/stream?channel=n", headers={"Last-Event-ID": ids[-1]}) as stream:
        assert stream.read_chunks(1) == b": ok\n"  # the opening carries no replay
        publish(app, sse, "n", "c")
        assert [e.data for e in stream.events(1)] == ["c"]


@pytest.mark.parametrize("kind", ["other boot", "future seq", "no dash", "not a number"])
def test_unknown_ids_get_a_reset_then_the_history(app_sse: tuple[Flask, SSE], kind: str) -> None:
    app, sse = app_sse
    ids = publish(app, sse, "u", "a", "b")
    boot, seq = ids[-1].rsplit("-", 1)
    last_id = {"other boot": f"0{boot}-{seq}", "future seq": f"{boot}-99",
               "no dash": "123", "not a number": f"{boot}-x"}[kind]
    with open_stream(app, "/stream?channel=u", headers={"Last-Event-ID": last_id}) as stream:
        events = stream.events(3)
    assert events[0].type == "reset"
    reset = json.loads(events[0].data)
    assert reset["reason"] == "unknown event id" and reset["last_event_id"] == last_id
    assert [e.data for e in events[1:]] == ["a", "b"]


def test_an_id_older_than_the_history_gets_a_reset_then_what_remains(
        app_sse: tuple[Flask, SSE]) -> None:
    app, sse = app_sse
    ids = publish(app, sse, "old", *range(10))  # history keeps the last 5
    with open_stream(app, "/stream?channel=old", headers={"Last-Event-ID": ids[2]}) as stream:
        events = stream.events(6)
    assert events[0].type == "reset"
    assert json.loads(events[0].data)["reason"] == "event id older than the history"
    assert [e.data for e in events[1:]] == ["5", "6", "7", "8", "9"]
    # the oldest id still in history is not a reset: exact continuation
    with open_stream(app, "/stream?channel=old", headers={"Last-Event-ID": ids[4]}) as stream:
        assert [e.data for e in stream.events(5)] == ["5", "6", "7", "8", "9"]


def test_an_id_of_another_broker_lifetime_gets_a_reset() -> None:
    app, sse = make_app()
    (old_id,) = publish(app, sse, "restart", "before")
    app2, sse2 = make_app()  # a restart: a new memory broker
    publish(app2, sse2, "restart", "after")
    with open_stream(app2, "/stream?channel=restart",
                     headers={"Last-Event-ID": old_id}) as stream:
        events = stream.events(2)
    assert events[0].type == "reset"
    assert [e.data for e in events[1:]] == ["after"]


def test_channels_are_isolated(app_sse: tuple[Flask, SSE]) -> None:
    app, sse = app_sse
    with open_stream(app, "/stream?channel=iso-a") as a:
        publish(app, sse, "iso-b", "to b")
        publish(app, sse, "iso-a", "to a")
        assert [e.data for e in a.events(1)] == ["to a"]
        assert b"to b" not in a.body


@pytest.mark.parametrize("name", ["", "a b", "x" * 129, "é", "a/b", "a\u200bb", "chan%00"])
def test_bad_channel_names_get_400_json(app_sse: tuple[Flask, SSE], name: str) -> None:
    app, _ = app_sse
    response = app.test_client().get("/stream", query_string={"channel": name})
    assert response.status_code == 400
    assert "channel" in response.get_json()["error"]


def test_authorize_guards_subscription_and_replay(app_sse: tuple[Flask, SSE]) -> None:
    app, sse = app_sse
    (secret,) = publish(app, sse, "private-1", "s")
    client = app.test_client()
    for headers in ({}, {"X-User": "bob"}, {"X-User": "bob", "Last-Event-ID": secret}):
        response = client.get("/stream?channel=private-1", headers=headers)
        assert response.status_code == 403
        assert response.get_json()["error"]
    with open_stream(app, "/stream?channel=private-1", headers={"X-User": "admin"}) as stream:
        publish(app, sse, "private-1", "t")
        assert [e.data for e in stream.events(1)] == ["t"]


def test_stats_count_streams_and_subscribers(app_sse: tuple[Flask, SSE]) -> None:
    app, sse = app_sse
    with open_stream(app, "/stream?channel=counted"), \
            open_stream(app, "/stream?channel=counted"), app.app_context():
        stats = sse.stats()
        assert (stats["open_streams"], stats["subscribers"]) == (2, {"counted": 2})
    with app.app_context():
        stats = sse.stats()
        assert (stats["open_streams"], stats["subscribers"]) == (0, {})
        assert stats["published"] == stats["delivered"] == 0  # counters: test_counters.py


def test_a_slow_subscriber_is_cut_off_at_its_queue_bound() -> None:
    app, sse = make_app(SSE_SUBSCRIBER_QUEUE=4, SSE_HISTORY_SIZE=100)
    with open_stream(app, "/stream?channel=slow") as stream:
        [first] = publish(app, sse, "slow", "first")
        assert [e.last_event_id for e in stream.events(1)] == [first]
        ids = publish(app, sse, "slow", *range(10))  # not reading: the queue overflows
        body = stream.read_to_end()  # the stream ends instead of growing a queue
    # cut at once: what was queued may or may not have been written, in order if it was
    got = [e for e in parse(body).events if e.last_event_id != first]
    assert [e.data for e in got] == ["0", "1", "2", "3"][: len(got)]
    with app.app_context():
        assert sse.stats()["subscribers"] == {}
    # it reconnects with its last id and replays exactly what it missed
    last = got[-1].last_event_id if got else first
    with open_stream(app, "/stream?channel=slow", headers={"Last-Event-ID": last}) as again:
        assert [e.last_event_id for e in again.events(10 - len(got))] == ids[len(got):]


def test_a_refused_publish_leaves_replay_exact() -> None:
    broker = MemoryBroker(history_size=10)
    ids = [broker.publish("c", n) for n in range(3)]
    with pytest.raises(ValueError, match="line break"):
        broker.publish("c", "bad", event="a\nb")
    ids.append(broker.publish("c", 3))
    sub = broker.subscribe("c", current().new_mailbox(8), ids[1])
    replayed = parse(b": ok\n" + sub.prelude).events
    assert [(e.data, e.last_event_id) for e in replayed] == [("2", ids[2]), ("3", ids[3])]
    sub.close()


def test_broker_replay_and_live_delivery_directly() -> None:
    broker = MemoryBroker(history_size=3)
    ids = [broker.publish("c", n) for n in range(5)]
    mailbox = current().new_mailbox(8)
    sub = broker.subscribe("c", mailbox, ids[2])
    replayed = parse(b": ok\n" + sub.prelude).events
    assert [(e.data, e.last_event_id) for e in replayed] == [("3", ids[3]), ("4", ids[4])]
    live_id = broker.publish("c", 5)
    assert mailbox.take(1.0) == [f"id: {live_id}\ndata: 5\n\n".encode()]
    assert broker.subscriber_counts() == {"c": 1}
    sub.close()
    assert broker.subscriber_counts() == {}
    broker.publish("c", 6)
    assert mailbox.take(0) is None  # unsubscribed: nothing more arrives


def test_the_position_of_an_empty_channel_survives_its_drop() -> None:
    """A subscription's position on a channel with no event yet ("before the first") stays
    valid after the channel is dropped (no subscriber, never published) and made again."""
    broker = MemoryBroker(history_size=10)
    sub = broker.subscribe("empty", current().new_mailbox(8))
    position = sub.position
    assert position is not None and position.endswith("-0")
    sub.close()
    event_id = broker.publish("empty", "first")
    again = broker.subscribe("empty", current().new_mailbox(8), position)
    assert parse(again.prelude).events[0].last_event_id == event_id  # no reset first
    assert len(parse(again.prelude).events) == 1
