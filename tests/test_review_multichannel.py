"""Adversarial review of several channels on one stream: in-process on memory (fast) and
against a real redis-server (slow). Each test names the defect it guards against."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_sse_stream import SSE, Event
from flask_sse_stream.brokers.base import Subscription
from flask_sse_stream.brokers.memory import MemoryBroker
from flask_sse_stream.runtime import CloseReason, Mailbox
from flask_sse_stream.testing import read_events
from tests.servers import Server


def make_app(**config: Any) -> tuple[Flask, SSE]:
    app = Flask(__name__)
    app.config.update(SSE_HEARTBEAT_INTERVAL=0, **config)
    return app, SSE(app)


def query(channels: list[str], **extra: str) -> str:
    parts = [f"channel={c}" for c in channels] + [f"{k}={v}" for k, v in extra.items()]
    return "/stream?" + "&".join(parts)


def stream(app: Flask, channels: list[str], last: str | None = None,
           count: int | None = None, timeout: float = 2.0) -> list[Event]:
    headers = {} if last is None else {"Last-Event-ID": last}
    response = app.test_client().get(query(channels), headers=headers, buffered=False)
    assert response.status_code == 200, response.get_data()
    return read_events(response, count=count, timeout=timeout)


def channel_of(event: Event, channels: list[str] | None = None) -> str:
    assert event.id is not None
    if channels is not None and len(channels) == 1:
        assert "@" not in event.id  # a one-channel stream keeps the broker's ids
        return channels[0]
    return event.id.split("@", 1)[0]


def cut_and_resume(app: Flask, sse: SSE, channels: list[str], rounds: int, seed: int) -> None:
    """Publish interleaved events, read a random number, drop, resume with the last id:
    every channel gets every event exactly once, in order."""
    rng = random.Random(seed)
    published: dict[str, list[int]] = {c: [] for c in channels}
    got: dict[str, list[int]] = {c: [] for c in channels}
    # the first connection is open before anything is published (no id yet: live only)
    opened = app.test_client().get(query(channels), buffered=False)
    last: str | None = None
    n = 0
    for _ in range(rounds):
        with app.app_context():
            for _ in range(rng.randint(1, 8)):
                n += 1
                channel = rng.choice(channels)
                sse.publish({"ch": channel, "n": n}, channel)
                published[channel].append(n)
        pending = sum(map(len, published.values())) - sum(map(len, got.values()))
        take = rng.randint(1 if last is None else 0, pending)
        if take == 0:
            continue
        if last is None:
            events = read_events(opened, count=take, timeout=2.0)
        else:
            events = stream(app, channels, last, count=take)
        for event in events:
            assert event.event is None, event
            body = json.loads(event.data)
            assert channel_of(event, channels) == body["ch"]
            got[body["ch"]].append(body["n"])
            last = event.id
    pending = sum(map(len, published.values())) - sum(map(len, got.values()))
    if pending:
        for event in stream(app, channels, last, count=pending):
            body = json.loads(event.data)
            got[body["ch"]].append(body["n"])
    assert got == published


@pytest.mark.parametrize("width", [1, 2, 32])
def test_exact_resume_in_process_memory(width: int) -> None:
    """Every channel's events exactly once across random cuts, fast tier (1 channel is
    the single-channel path with plain broker ids)."""
    app, sse = make_app(SSE_HISTORY_SIZE=1000)
    channels = [f"w{width}.n-{i}:x" for i in range(width)]  # . - : are legal
    cut_and_resume(app, sse, channels, rounds=10, seed=width)


def test_duplicate_channel_params_are_one_channel() -> None:
    app, sse = make_app()
    with app.app_context():
        sse.publish("x", "d.u:p-1")
    response = app.test_client().get(
        "/stream?channel=d.u:p-1&channel=d.u:p-1&channel=other", buffered=False
    )
    with app.app_context():
        sse.publish("y", "d.u:p-1")
    (event,) = read_events(response, count=1)
    assert event.data == "y"
    assert event.id is not None and event.id.count("d.u:p-1@") == 1


def test_a_cursor_on_a_single_channel_stream_resumes_that_channel() -> None:
    """Defect: the whole cursor went to the broker, which answered with a reset and the
    full history (duplicates) instead of resuming the channel's own position."""
    app, sse = make_app()
    with app.app_context():
        sse.publish("a0", "a")
        sse.publish("b0", "b")
    response = app.test_client().get(query(["a", "b"]), buffered=False)
    with app.app_context():
        sse.publish("a1", "a")
    (seen,) = read_events(response, count=1)
    with app.app_context():
        sse.publish("b1", "b")
        sse.publish("a2", "a")
    assert seen.id is not None
    assert [e.data for e in stream(app, ["b"], seen.id, timeout=0.5)] == ["b1"]
    a_events = stream(app, ["a"], seen.id, timeout=0.5)
    assert [e.data for e in a_events] == ["a2"]
    assert a_events[0].id is not None and "@" not in a_events[0].id  # still plain ids


def test_a_plain_id_on_a_multi_channel_stream_resets_channels_it_does_not_match() -> None:
    app, sse = make_app()
    with app.app_context():
        plain = sse.publish("a1", "pa")
        sse.publish("a2", "pa")
    events = stream(app, ["pa", "pb"], plain, timeout=0.5)
    assert [e.data for e in events if e.event is None] == ["a2"]
    resets = [json.loads(e.data) for e in events if e.event == "reset"]
    assert [r["channel"] for r in resets] == ["pb"]  # told, not silently skipped


@pytest.mark.parametrize(
    "junk",
    [
        "@@@,,,@",
        "a@" + "9" * 40,
        "a@x,b@y,c@z," * 700,  # ~8 KB
        "a@\u00e9\u00ff,b@\u00fe",  # Latin-1 bytes as a WSGI header carries them
    ],
)
def test_junk_cursors_reset_and_never_break_the_stream(junk: str) -> None:
    app, sse = make_app()
    with app.app_context():
        sse.publish("old", "a")
    response = app.test_client().get(
        query(["a", "b"]), headers={"Last-Event-ID": junk}, buffered=False
    )
    assert response.status_code == 200
    with app.app_context():
        sse.publish("new", "b")
    events = read_events(response, timeout=0.5)
    assert [e.data for e in events if e.event is None] == ["old", "new"]
    assert {json.loads(e.data)["channel"] for e in events if e.event == "reset"} <= {"a", "b"}
    assert all(e.id is None or len(e.id) < 200 for e in events)


@pytest.mark.parametrize("junk", ["a%40x%0Adata:%20evil", "a%40%00", "a%40%F0%9F%98%80%ED%A0%80"])
def test_a_query_cursor_with_control_or_odd_characters_is_never_echoed_raw(junk: str) -> None:
    app, sse = make_app()
    response = app.test_client().get(query(["a", "b"], lastEventId=junk), buffered=False)
    with app.app_context():
        sse.publish("b1", "b")
    events = read_events(response, timeout=0.5)
    assert [e.data for e in events if e.event is None] == ["b1"]
    for event in events:
        assert "evil" not in (event.id or "") and "\0" not in (event.id or "")


def test_memory_broker_restart_resets_every_channel_by_name() -> None:
    app, sse = make_app()
    with app.app_context():
        sse.publish("a1", "a")
        sse.publish("b1", "b")
    response = app.test_client().get(query(["a", "b"]), buffered=False)
    with app.app_context():
        sse.publish("a2", "a")
    (seen,) = read_events(response, count=1)
    app.extensions["sse"].broker = MemoryBroker(history_size=10)  # a restart: new boot
    with app.app_context():
        sse.publish("a-new", "a")
    events = stream(app, ["a", "b"], seen.id, timeout=0.5)
    resets = [json.loads(e.data) for e in events if e.event == "reset"]
    assert sorted(r["channel"] for r in resets) == ["a", "b"]
    assert [e.data for e in events if e.event is None] == ["a-new"]


def test_overflow_of_one_channel_ends_the_stream_and_resume_is_exact() -> None:
    app, sse = make_app(SSE_SUBSCRIBER_QUEUE=2, SSE_HISTORY_SIZE=100)
    first = app.test_client().get(query(["slow", "quiet"]), buffered=False)
    with app.app_context():
        sse.publish("q0", "quiet")
    (seen,) = read_events(first, count=1)
    response = app.test_client().get(
        query(["slow", "quiet"]), headers={"Last-Event-ID": seen.id or ""}, buffered=False
    )
    with app.app_context():
        sse.publish("q1", "quiet")
        for n in range(20):  # nobody reads: the queue (2) overflows
            sse.publish(n, "slow")
    events = read_events(response, timeout=1.0)
    assert len(events) < 21  # cut off, not grown without bound
    last = events[-1].id if events else seen.id
    rest = stream(app, ["slow", "quiet"], last, timeout=0.5)
    assert all(e.event is None for e in rest)  # the history covers it: no reset
    slow = [int(e.data) for e in events + rest if channel_of(e) == "slow"]
    assert slow == list(range(20))
    assert [e.data for e in events + rest if channel_of(e) == "quiet"] == ["q1"]


class _StallFirst(Mailbox):
    """Records offers; the first offer waits until released (a thread paused mid-fan-out)."""

    __slots__ = ("got", "paused", "release")

    def __init__(self) -> None:
        super().__init__()
        self.got: list[bytes] = []
        self.paused = threading.Event()
        self.release = threading.Event()

    def offer(self, chunk: bytes) -> bool:
        if not self.got and not self.paused.is_set():
            self.paused.set()
            self.release.wait(5)
        self.got.append(chunk)
        return True

    def put(self, chunk: bytes, timeout: float | None = None) -> bool:
        return self.offer(chunk)

    def close(self, reason: CloseReason) -> None:
        self.reason = self.reason or reason

    def take(self, timeout: float | None) -> list[bytes] | None:
        return None

    def drain(self) -> list[bytes]:
        return []


def test_memory_broker_delivers_in_id_order_when_threads_publish_at_once() -> None:
    """Thread mode (e.g. the werkzeug dev server). Found in the first multi-channel merge:
    publish fanned out after releasing the lock, so a second thread's event could reach
    a subscriber before the first's (out of order; a resume from the later id duplicated
    the earlier one). Main's ordered fan-out (w-core) fixes it; this pins it."""
    app, _ = make_app()
    broker = MemoryBroker(history_size=10)
    mailbox = _StallFirst()
    sub: Subscription = broker.subscribe("t", mailbox)
    with app.app_context():  # the thread-mode fan-out path
        first = threading.Thread(target=broker.publish, args=("t", "one"))
        first.start()
        assert mailbox.paused.wait(5)
        second = threading.Thread(target=broker.publish, args=("t", "two"))
        second.start()
        second.join(0.3)  # with the fix it waits for the first fan-out (bounded)
        mailbox.release.set()
        first.join(5)
        second.join(5)
    sub.close()
    assert [c.split(b"data: ")[1].strip() for c in mailbox.got] == [b"one", b"two"]


# -- Redis (real redis-server, in-process app) -----------------------------------------------


@pytest.fixture()
def redis_app(redis: Server) -> Iterator[tuple[Flask, SSE]]:
    app, sse = make_app(SSE_BROKER_URL=f"redis://127.0.0.1:{redis.port}/0", SSE_HISTORY_SIZE=50)
    yield app, sse
    app.extensions["sse"].broker.close()


@pytest.mark.slow
def test_redis_channel_not_yet_seen_resumes_from_where_the_stream_began(
    redis_app: tuple[Flask, SSE],
) -> None:
    """Found in the first multi-channel merge (fixed since by w-redislog's positions):
    Redis subscriptions had no cursor, so a channel with no event yet was left out of
    the ids and a resume took it live from now, losing what came meanwhile."""
    app, sse = redis_app
    p = uuid.uuid4().hex[:8]
    a, b, fresh = f"ra{p}", f"rb{p}", f"rc{p}"
    with app.app_context():
        sse.publish("b0", b)  # b has history, fresh has none
    response = app.test_client().get(query([a, b, fresh]), buffered=False)
    with app.app_context():
        sse.publish("a1", a)
    (seen,) = read_events(response, count=1)
    with app.app_context():
        sse.publish("b1", b)
        sse.publish("c1", fresh)
    events = stream(app, [a, b, fresh], seen.id, count=2, timeout=3)
    assert sorted(e.data for e in events) == ["b1", "c1"]
    assert all(e.event is None for e in events)  # no reset: the positions were exact


@pytest.mark.slow
def test_redis_resume_from_deep_in_an_untrimmed_stream_replays_everything(
    redis_app: tuple[Flask, SSE],
) -> None:
    """Found before w-redislog (its paged replay fixes it): replay read one page of
    history_size + 1 entries; approximate trimming keeps more, so a client resuming
    further back got one page, then went live past the rest, losing them silently."""
    app, sse = redis_app
    channel = "deep" + uuid.uuid4().hex[:8]
    with app.app_context():
        ids = [sse.publish(n, channel) for n in range(140)]  # history 50, approx trim
    events = stream(app, [channel], ids[10], timeout=1.0)
    data = [int(e.data) for e in events if e.event is None]
    assert data == list(range(11, 140)) or (
        events[0].event == "reset" and data == sorted(set(data)) and data[-1] == 139
    )


@pytest.mark.slow
def test_redis_id_past_the_streams_end_resets_and_goes_live(
    redis_app: tuple[Flask, SSE],
) -> None:
    """Defect: an id past the stream's end (another Redis, a clock ahead, a hand-made
    one) gave a reset and no history (the contract: a reset, then what history
    remains). Before w-redislog it also held live events behind a future floor."""
    app, sse = redis_app
    channel = "future" + uuid.uuid4().hex[:8]
    with app.app_context():
        sse.publish("before", channel)
    response = app.test_client().get(
        query([channel]), headers={"Last-Event-ID": "99999999999999-0"}, buffered=False
    )
    with app.app_context():
        sse.publish("live", channel)
    events = read_events(response, count=3, timeout=3)
    assert [(e.event, e.data) for e in events][1:] == [(None, "before"), (None, "live")]
    assert events[0].event == "reset"


@pytest.mark.slow
def test_redis_exact_resume_in_process(redis_app: tuple[Flask, SSE]) -> None:
    app, sse = redis_app
    p = uuid.uuid4().hex[:6]
    cut_and_resume(app, sse, [f"x{p}.{i}" for i in range(3)], rounds=6, seed=3)


def test_threads_publishing_while_a_client_cuts_and_resumes_memory() -> None:
    """Thread mode (the werkzeug dev server): publishers on three threads while the client
    subscribes, reads a few, drops and resumes over and over: each channel's events
    exactly once, in order (held live events vs. replays under real concurrency)."""
    app, sse = make_app(SSE_HISTORY_SIZE=5000, SSE_SUBSCRIBER_QUEUE=5000)
    channels = ["t.a", "t:b", "t-c"]
    per_channel = 150
    got: dict[str, list[int]] = {c: [] for c in channels}
    opened = app.test_client().get(query(channels), buffered=False)

    def publisher(channel: str) -> None:
        with app.app_context():
            for n in range(per_channel):
                sse.publish(n, channel)

    threads = [threading.Thread(target=publisher, args=(c,)) for c in channels]
    for thread in threads:
        thread.start()
    rng = random.Random(7)
    last: str | None = None
    response = opened
    for _ in range(200):
        if sum(map(len, got.values())) >= per_channel * len(channels):
            break
        events = read_events(response, count=rng.randint(1, 15), timeout=3)
        for event in events:
            assert event.event is None, event
            got[channel_of(event)].append(int(event.data))
            last = event.id
        response = app.test_client().get(query(channels), headers={"Last-Event-ID": last or ""},
                                         buffered=False)
    response.close()
    for thread in threads:
        thread.join(10)
    assert got == {c: list(range(per_channel)) for c in channels}


def test_a_channel_never_published_to_resumes_without_a_reset_memory() -> None:
    """Defect (after merging w-core's per-channel id prefixes): a channel with no events
    yet is dropped when its last subscriber leaves and gets a new prefix when it comes
    back, so its position in the cursor was "unknown": a reset on every resume."""
    app, sse = make_app()
    response = app.test_client().get(query(["busy", "quiet"]), buffered=False)
    with app.app_context():
        sse.publish("b1", "busy")
    (seen,) = read_events(response, count=1)
    assert seen.id is not None and "quiet@" in seen.id
    with app.app_context():
        sse.publish("q1", "quiet")  # while away: must be replayed, without a reset
    events = stream(app, ["busy", "quiet"], seen.id, timeout=0.5)
    assert [(e.event, e.data) for e in events] == [(None, "q1")]


def test_events_held_while_subscribing_are_bounded() -> None:
    """Defect: live events that arrive while the other channels' replays are read were
    held without bound (32 channels of Redis replays under a hot channel)."""
    from flask_sse_stream.brokers.multichannel import ChannelMerge as Cursor
    from tests.test_multichannel import ListMailbox

    mailbox = ListMailbox()
    cursor = Cursor(mailbox, limit=3)
    tap = cursor.tap("hot")
    assert all(tap.offer(b"id: x-%d\ndata: n\n\n" % n) for n in range(3))
    assert tap.offer(b"id: x-3\ndata: n\n\n") is False  # the broker then cuts the stream
