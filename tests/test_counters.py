"""``sse.stats()``'s cumulative counters move exactly as flask_sse_stream.metrics says:
in-process on memory:// (fast), and once on a real Redis (slow)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import gevent
import pytest
from flask import Flask

from flask_sse_stream import SSE
from flask_sse_stream.brokers.memory import MemoryBroker
from flask_sse_stream.chat import DemoBackend, create_chat_blueprint
from flask_sse_stream.metrics import COUNTER_NAMES, Counters
from flask_sse_stream.runtime import current
from flask_sse_stream.runtime.gevent import GeventMailbox
from flask_sse_stream.testing import read_events
from tests.servers import Server

ZERO = dict.fromkeys(COUNTER_NAMES, 0)


def make_app(**config: Any) -> tuple[Flask, SSE]:
    app = Flask(__name__)
    app.config.update(SSE_HEARTBEAT_INTERVAL=0, **config)
    return app, SSE(app)


def counters(app: Flask, sse: SSE) -> dict[str, int]:
    with app.app_context():
        stats = sse.stats()
    return {name: stats[name] for name in COUNTER_NAMES}


def publish(app: Flask, sse: SSE, channel: str, data: Any) -> str:
    with app.app_context():
        return sse.publish(data, channel=channel)


def test_stats_keep_streams_and_subscribers_and_start_counters_at_zero() -> None:
    app, sse = make_app()
    response = app.test_client().get("/stream?channel=news", buffered=False)
    with app.app_context():
        stats = sse.stats()
    assert stats == {"open_streams": 1, "subscribers": {"news": 1}, **ZERO,
                     "chat": {"started": 0, "running": 0}}
    response.close()


def test_chat_generations_started_and_running() -> None:
    app, sse = make_app()
    app.register_blueprint(create_chat_blueprint(DemoBackend(delay=0.02)), url_prefix="/chat")
    client = app.test_client()

    def chat() -> dict[str, int]:
        with app.app_context():
            return sse.stats()["chat"]  # type: ignore[no-any-return]

    events = read_events(client.post("/chat/stream", json={"message": "hi"}, buffered=False))
    assert events[-1].event == "close"
    wait_for(lambda: chat() == {"started": 1, "running": 0})  # released as it ends
    dropped = client.get("/chat/stream?message=hello", buffered=False)
    assert len(read_events(dropped, count=1)) == 1  # closed after one piece: it runs on
    assert chat() == {"started": 2, "running": 1}
    wait_for(lambda: chat() == {"started": 2, "running": 0})
    assert client.post("/chat/stream", json={}).status_code == 400  # not started
    assert chat()["started"] == 2


def test_published_and_delivered_count_each_event_for_each_subscriber() -> None:
    app, sse = make_app()
    client = app.test_client()
    first = client.get("/stream?channel=news", buffered=False)
    second = client.get("/stream?channel=news", buffered=False)
    ids = [publish(app, sse, "news", {"n": n}) for n in range(3)]
    publish(app, sse, "nobody-listens", "x")
    assert counters(app, sse) == {**ZERO, "published": 4, "delivered": 6}
    assert [e.id for e in read_events(first, count=3)] == ids
    assert [e.id for e in read_events(second, count=3)] == ids


def test_resumed_and_resets_replay_not_counted_as_delivered() -> None:
    app, sse = make_app(SSE_HISTORY_SIZE=3)
    client = app.test_client()
    ids = [publish(app, sse, "r", n) for n in range(5)]  # history keeps ids[2:]
    base = {**ZERO, "published": 5}

    exact = client.get("/stream?channel=r", headers={"Last-Event-ID": ids[2]},
                       buffered=False)
    assert counters(app, sse) == {**base, "resumed": 1}
    live = publish(app, sse, "r", 5)
    assert [e.id for e in read_events(exact, count=3)] == [ids[3], ids[4], live]
    base = {**base, "published": 6, "resumed": 1, "delivered": 1}  # the live one only
    assert counters(app, sse) == base

    expired = client.get("/stream?channel=r", headers={"Last-Event-ID": ids[0]},
                         buffered=False)
    assert read_events(expired, count=1)[0].event == "reset"
    unknown = client.get("/stream?channel=r&lastEventId=nope-1", buffered=False)
    assert read_events(unknown, count=1)[0].event == "reset"
    fresh = client.get("/stream?channel=r", buffered=False)  # no id: not a resume
    fresh.close()
    assert counters(app, sse) == {**base, "resumed": 3, "resets": 2}


def test_an_overflow_is_counted_once_and_refused_events_are_not_delivered() -> None:
    app, sse = make_app(SSE_SUBSCRIBER_QUEUE=2)
    slow = app.test_client().get("/stream?channel=o", buffered=False)  # never read
    for n in range(4):
        publish(app, sse, "o", n)
    assert counters(app, sse) == {
        **ZERO, "published": 4, "delivered": 2, "overflow_disconnects": 1}
    slow.close()


def test_multi_channel_streams_count_per_channel() -> None:
    app, sse = make_app(SSE_HISTORY_SIZE=2)
    client = app.test_client()
    stream = client.get("/stream?channel=a&channel=b", buffered=False)
    for channel in ("a", "a", "b"):
        publish(app, sse, channel, channel)
    events = read_events(stream, count=3)
    cursor = events[-1].id
    assert cursor is not None and cursor.startswith("b@")
    base = {**ZERO, "published": 3, "delivered": 3}
    assert counters(app, sse) == base

    # one cursor resumes both channels: two resumed subscriptions, no reset
    again = client.get("/stream?channel=a&channel=b", headers={"Last-Event-ID": cursor},
                       buffered=False)
    publish(app, sse, "a", "a3")
    assert [e.data for e in read_events(again, count=1)] == ["a3"]
    base = {**base, "published": 4, "delivered": 4, "resumed": 2}
    assert counters(app, sse) == base

    # b's position expires (history 2): a reset for b only
    for n in range(3):
        publish(app, sse, "b", f"b{n}")
    late = client.get("/stream?channel=a&channel=b", headers={"Last-Event-ID": cursor},
                      buffered=False)
    events = read_events(late, count=4)
    assert [e.event for e in events] == [None, "reset", None, None]
    assert json.loads(events[1].data)["channel"] == "b"
    assert counters(app, sse) == {**base, "published": 7, "resumed": 4, "resets": 1}

    # a cursor naming only a: b is new to the stream, not resumed
    only_a = client.get("/stream?channel=a&channel=b",
                        headers={"Last-Event-ID": cursor.split(",")[1]}, buffered=False)
    only_a.close()
    assert counters(app, sse)["resumed"] == 5


def test_a_multi_channel_overflow_is_one_disconnect() -> None:
    app, sse = make_app(SSE_SUBSCRIBER_QUEUE=2)
    stream = app.test_client().get("/stream?channel=a&channel=b", buffered=False)
    for channel in ("a", "b", "a", "b", "a"):
        publish(app, sse, channel, channel)
    assert counters(app, sse) == {
        **ZERO, "published": 5, "delivered": 2, "overflow_disconnects": 1}
    stream.close()


def test_a_batch_counts_each_event_once_per_subscriber() -> None:
    """Under gevent the memory broker hands a burst over as one chunk: it still counts
    one delivery per event per subscriber, and a refused batch counts none."""
    result: dict[str, Any] = {}

    def run() -> None:
        assert current().cooperative
        broker = MemoryBroker(counters=Counters())
        boxes = [GeventMailbox(8), GeventMailbox(8), GeventMailbox(1)]
        subs = [broker.subscribe("c", box) for box in boxes]
        boxes[2].offer(b"filler")  # the third one is full: it overflows on the batch
        for n in range(5):
            broker.publish("c", n)
        result["chunks"] = [boxes[0].take(5.0), boxes[1].take(5.0)]
        result["third"] = boxes[2].reason
        result["counters"] = broker.counters.as_dict()
        for sub in subs:
            sub.close()

    gevent.spawn(run).get(timeout=15)
    for chunks in result["chunks"]:
        assert len(chunks) == 1 and chunks[0].count(b"id: ") == 5  # one hand-over
    assert result["third"] is not None
    assert result["counters"] == {
        **ZERO, "published": 5, "delivered": 10, "overflow_disconnects": 1}


# -- Redis ---------------------------------------------------------------------------------


def wait_for(check: Any, timeout: float = 10.0) -> None:
    """Until ``check()`` (the reader thread counts a hand-over before its offer)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.slow
def test_counters_on_redis(redis: Server) -> None:
    app, sse = make_app(SSE_BROKER_URL=f"redis://127.0.0.1:{redis.port}/5",
                        SSE_SUBSCRIBER_QUEUE=2)
    client = app.test_client()
    tag = uuid.uuid4().hex[:8]
    one, a, b = f"one-{tag}", f"a-{tag}", f"b-{tag}"
    try:
        first = client.get(f"/stream?channel={one}", buffered=False)
        second = client.get(f"/stream?channel={one}", buffered=False)
        ids = [publish(app, sse, one, n) for n in range(2)]
        assert [e.id for e in read_events(first, count=2)] == ids
        assert [e.id for e in read_events(second, count=2)] == ids
        assert counters(app, sse) == {**ZERO, "published": 2, "delivered": 4}

        resumed = client.get(f"/stream?channel={one}", headers={"Last-Event-ID": ids[0]},
                             buffered=False)
        assert [e.id for e in read_events(resumed, count=1)] == ids[1:]
        gone = client.get(f"/stream?channel={one}", headers={"Last-Event-ID": "1-0"},
                          buffered=False)
        assert read_events(gone, count=1)[0].event == "reset"
        base = {**ZERO, "published": 2, "delivered": 4, "resumed": 2, "resets": 1}
        assert counters(app, sse) == base

        multi = client.get(f"/stream?channel={a}&channel={b}", buffered=False)
        publish(app, sse, a, "a")
        publish(app, sse, b, "b")
        events = read_events(multi, count=2)
        again = client.get(f"/stream?channel={a}&channel={b}",
                           headers={"Last-Event-ID": events[-1].id or ""}, buffered=False)
        again.close()
        base = {**base, "published": 4, "delivered": 6, "resumed": 4}
        assert counters(app, sse) == base

        # a subscriber that never reads: each entry is its own hand-over (awaited), the
        # third overflows its queue of 2
        slow = client.get(f"/stream?channel={one}", buffered=False)
        for n in range(3):
            publish(app, sse, one, n)
            want = base["delivered"] + min(n + 1, 2)
            wait_for(lambda want=want, n=n: counters(app, sse)["delivered"] == want
                     and (n < 2 or counters(app, sse)["overflow_disconnects"] == 1))
        slow.close()
        assert counters(app, sse) == {
            **base, "published": 7, "delivered": base["delivered"] + 2,
            "overflow_disconnects": 1}
    finally:
        with app.app_context():
            app.extensions["sse"].broker.close()
