"""The Redis log against a real redis-server, in this process (threads): replay and live
reading when ``MAXLEN ~`` trims, and connections when channels come and go."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py

from flask_sse_stream.brokers.redis import RedisBroker
from flask_sse_stream.runtime.threads import ThreadMailbox
from tests.servers import Server
from tests.sse_parser import ParsedEvent, parse

pytestmark = pytest.mark.slow


@pytest.fixture
def make_broker(redis: Server) -> Iterator[Any]:
    brokers: list[RedisBroker] = []

    def make(history: int) -> RedisBroker:
        broker = RedisBroker(f"redis://127.0.0.1:{redis.port}/5", history_size=history,
                             key_prefix=f"t{uuid.uuid4().hex[:8]}:")
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


def raw(redis: Server) -> redis_py.Redis:
    return redis_py.Redis(port=redis.port, db=5)


@pytest.mark.parametrize("history,burst", [(10, 300), (1000, 2150)])
def test_every_resume_reaches_the_newest_event_or_starts_with_reset(
        make_broker, redis: Server, history: int, burst: int) -> None:
    broker = make_broker(history)
    ids = [broker.publish("trim", {"n": n}) for n in range(burst)]
    kept = [k.decode() for k, _f in raw(redis).xrange(broker.key("trim"))]  # type: ignore[union-attr]
    first_kept = ids.index(kept[0])
    assert len(kept) > history  # MAXLEN ~ keeps whole nodes: more than the history
    points = sorted({0, 1, burst // 3, first_kept - 2, first_kept - 1, first_kept,
                     first_kept + 5, burst - 2, burst - 1} - {-1, -2})
    resets = 0
    for i in points:
        sub = broker.subscribe("trim", ThreadMailbox(4), ids[i])
        events = parse(sub.prelude).events
        sub.close()
        messages = [e.last_event_id for e in events if e.type == "message"]
        if i >= first_kept:  # still kept
            assert [e.type for e in events].count("reset") == 0, i
            assert messages == ids[i + 1:], i  # exact: nothing short, nothing doubled
        else:
            resets += 1
            assert events[0].type == "reset" and "older" in events[0].data, i
            assert messages == ids[first_kept:], i  # what is kept, to the newest
    print(f"\nhistory {history}, {burst} events: {len(points)} resumes, {resets} resets, "
          f"0 stopped short")
    sub = broker.subscribe("trim", ThreadMailbox(4), "not-an-id")
    events = parse(sub.prelude).events
    sub.close()
    assert events[0].type == "reset"
    assert [e.last_event_id for e in events[1:]] == kept
    counters = broker.counters.as_dict()  # replays are not deliveries
    assert counters == {"published": burst, "delivered": 0, "resumed": len(points) + 1,
                        "resets": resets + 1, "overflow_disconnects": 0}


class SlowMailbox(ThreadMailbox):
    """Takes 1 ms per event handed over, so the one reader falls far behind a burst."""

    def offer(self, chunk: bytes) -> bool:
        time.sleep(0.001 * chunk.count(b"\nid: ") + 0.001 * chunk.startswith(b"id: "))
        return super().offer(chunk)


def check_stream(events: list[ParsedEvent], ids: list[str]) -> bool:
    """Every event in order, or a reset before each hole; True if complete."""
    position = {event_id: n for n, event_id in enumerate(ids)}
    expected = 0
    warned = False
    complete = True
    for event in events:
        if event.type == "reset":
            warned = True
            continue
        n = position[event.last_event_id]
        if n != expected:
            assert n > expected and warned, (n, expected)  # a hole only after a reset
            complete = False
        warned = False
        expected = n + 1
    assert expected == len(ids)  # it reached the newest event
    return complete


def test_a_reader_behind_trimming_never_skips_in_silence(make_broker) -> None:
    broker = make_broker(5)
    mailboxes = [SlowMailbox(100_000)] + [ThreadMailbox(100_000) for _ in range(39)]
    subs = [broker.subscribe("behind", mb) for mb in mailboxes]
    ids: list[str] = []

    def burst() -> None:
        for n in range(3000):
            ids.append(broker.publish("behind", {"n": n}))

    publisher = threading.Thread(target=burst)
    publisher.start()
    publisher.join(120)
    bodies = [b""] * len(mailboxes)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for n, mailbox in enumerate(mailboxes):
            bodies[n] += b"".join(mailbox.drain())
        if all(ids[-1].encode() in body for body in bodies):
            break
        time.sleep(0.05)  # polling mailboxes the reader fills
    complete = reset = 0
    sent = {"events": 0, "resets": 0}
    for body in bodies:
        events = parse(body).events
        sent["events"] += len(events)
        sent["resets"] += sum(e.type == "reset" for e in events)
        if check_stream(events, ids):
            complete += 1
        else:
            reset += 1
            assert any(e.type == "reset" for e in events)
    for sub in subs:
        sub.close()
    print(f"\n40 subscribers, 3000 events, history 5: {complete} complete, {reset} with a "
          f"reset before their holes, 0 silent gaps")
    assert reset > 0  # the reader did fall behind the trimming (else this proves nothing)
    assert complete + reset == 40
    # a reader gap's reset goes to every follower, and travels (and counts) as a delivery
    counters = broker.counters
    assert (counters.published, counters.resets) == (3000, sent["resets"])
    assert counters.delivered == sent["events"]


def client_count(redis: Server) -> int:
    return len(raw(redis).client_list())


def test_a_thousand_channels_use_a_constant_number_of_connections(
        make_broker, redis: Server) -> None:
    broker = make_broker(10)
    baseline = client_count(redis)
    subs = []
    peak = 0
    for n in range(1000):
        subs.append(broker.subscribe(f"many-{n}", ThreadMailbox(16)))
        if n % 100 == 0:
            peak = max(peak, client_count(redis) - baseline)
    broker.publish("many-0", "first")
    broker.publish("many-999", "last")
    assert b"data: first" in b"".join(subs[0].sink.take(10) or [])
    assert b"data: last" in b"".join(subs[999].sink.take(10) or [])
    peak = max(peak, client_count(redis) - baseline)
    for sub in subs:
        sub.close()
    assert broker.subscriber_counts() == {}
    print(f"\n1000 channels open: at most {peak} Redis connections more than before")
    assert peak <= 4  # one reader, and the command pool used one at a time


def test_resumes_during_a_burst_get_every_event_once(make_broker) -> None:
    """The seam: subscribers resume from Last-Event-ID while events keep coming; each gets
    the replay, then live events, with no gap and no duplicate."""
    broker = make_broker(10_000)
    ids: list[str] = [broker.publish("seam", {"n": -1})]
    anchor = broker.subscribe("seam", ThreadMailbox(100_000))  # the reader is running
    stop = threading.Event()

    def burst() -> None:
        for n in range(1500):
            ids.append(broker.publish("seam", {"n": n}))
        stop.set()

    publisher = threading.Thread(target=burst)
    publisher.start()
    subs: list[Any] = []
    while not stop.is_set() and len(subs) < 60:
        mailbox = ThreadMailbox(100_000)
        start = ids[-1]
        subs.append((broker.subscribe("seam", mailbox, start), mailbox, start))
    publisher.join(120)
    bodies = {id(sub): sub.prelude for sub, _m, _i in subs}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for sub, mailbox, _i in subs:
            bodies[id(sub)] += b"".join(mailbox.drain())
        if all(ids[-1].encode() in body for body in bodies.values()):
            break
        time.sleep(0.05)  # polling mailboxes the reader fills
    for sub, _mailbox, start in subs:
        got = [e.last_event_id for e in parse(bodies[id(sub)]).events]
        assert got == ids[ids.index(start) + 1:]  # exactly once each, in order
        sub.close()
    anchor.close()
    print(f"\n{len(subs)} resumes during a burst of 1500: every event once")
    assert len(subs) >= 5
