"""Several channels on one stream, resumed with one Last-Event-ID: the cursor (fast) and
real servers on both brokers, with connections cut at random points (slow)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from flask_sse_stream.brokers.multichannel import ChannelMerge as Cursor
from flask_sse_stream.runtime import CloseReason, Mailbox
from flask_sse_stream.wire.cursor import format_cursor, parse_cursor
from tests.channels import publish
from tests.rawsse import open_stream
from tests.servers import Server, gunicorn_server
from tests.sse_parser import ParsedEvent, parse

# -- the cursor, in-process ------------------------------------------------------------------


def test_cursor_round_trip_and_plain_ids() -> None:
    positions = {"b": "7-0", "a": "5-1"}
    value = format_cursor("a", positions)
    assert value == "a@5-1,b@7-0"  # the event's own channel first
    assert parse_cursor(value, ["a", "b", "c"]) == {"a": "5-1", "b": "7-0", "c": None}
    assert parse_cursor(None, ["a", "b"]) == {"a": None, "b": None}
    assert parse_cursor("12-0", ["a", "b"]) == {"a": "12-0", "b": "12-0"}
    # junk and repeated names never raise; the first position given wins
    assert parse_cursor("a@1,a@2,@3,b@,zz,c@9", ["a", "b"]) == {"a": "1", "b": None}


class ListMailbox(Mailbox):
    __slots__ = ("items",)

    def __init__(self) -> None:
        super().__init__()
        self.items: list[bytes] = []

    def offer(self, chunk: bytes) -> bool:
        self.items.append(chunk)
        return True

    def put(self, chunk: bytes, timeout: float | None = None) -> bool:
        return self.offer(chunk)

    def close(self, reason: CloseReason) -> None:
        self.reason = self.reason or reason

    def take(self, timeout: float | None) -> list[bytes] | None:
        return None

    def drain(self) -> list[bytes]:
        return []


def test_held_events_follow_the_replays_and_ids_describe_what_came_before() -> None:
    mailbox = ListMailbox()
    cursor = Cursor(mailbox)
    a, b = cursor.tap("a"), cursor.tap("b")
    a.offer(b"id: 3-0\ndata: a3\n\n")  # live, while b's replay is still being read
    prelude = cursor.start(
        [("a", b"id: 2-0\ndata: a2\n\n", "2-0"),
         ("b", b'event: reset\ndata: {"reason":"gone"}\n\nid: 9-0\ndata: b9\n\n', "9-0"),
         ("c", b"", "4-0")],  # new to c: from the subscription's start
        {"a": "1-0", "b": "expired-1", "c": None},
    )
    b.offer(b"id: 10-0\ndata: b10\n\n")
    events = parse(prelude + b"".join(mailbox.items)).events
    assert [(e.data, e.last_event_id) for e in events] == [
        ("a2", "a@2-0,b@expired-1,c@4-0"),  # b: where the client was, until its replay
        ('{"reason":"gone","channel":"b"}', "a@2-0,b@expired-1,c@4-0"),  # names b
        ("b9", "b@9-0,a@2-0,c@4-0"),
        ("a3", "a@3-0,b@9-0,c@4-0"),
        ("b10", "b@10-0,a@3-0,c@4-0"),
    ]


def test_a_closed_tap_ends_the_stream() -> None:
    mailbox = ListMailbox()
    Cursor(mailbox).tap("a").close(CloseReason.OVERFLOW)
    assert mailbox.reason is CloseReason.OVERFLOW


# -- real servers ------------------------------------------------------------------------------


class MultiSubscriber:
    def __init__(self, server: Server, channels: list[str],
                 last_event_id: str | None = None) -> None:
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        query = urlencode([("channel", c) for c in channels])
        self.resp = open_stream(f"{server.url}/stream?{query}", headers=headers, timeout=15)
        assert self.resp.status == 200
        self.body = b""

    def events(self, count: int) -> list[ParsedEvent]:
        while True:
            got = parse(self.body).events
            if len(got) >= count:
                return got
            chunk = self.resp.read_chunk()
            if not chunk:
                raise EOFError(f"stream ended after {len(got)} of {count} events")
            self.body += chunk

    def close(self) -> None:
        self.resp.close()


def channel_of(event: ParsedEvent) -> str:
    return event.last_event_id.split("@", 1)[0]


@pytest.fixture(scope="module")
def redis_pair(redis: Server) -> Iterator[list[Server]]:
    env = {"TEST_BROKER_URL": f"redis://127.0.0.1:{redis.port}/0", "TEST_HISTORY": "50"}
    with gunicorn_server("tests.apps.core_app:create_app()", env=env, workers=1) as a, \
            gunicorn_server("tests.apps.core_app:create_app()", env=env, workers=2) as b:
        yield [a, b]


@pytest.fixture(scope="module")
def memory_server() -> Iterator[Server]:
    with gunicorn_server("tests.apps.core_app:create_app()", workers=1,
                         env={"TEST_HISTORY": "50"}) as server:
        yield server


def run_cut_and_resume(servers: list[Server], channels: list[str], rounds: int,
                       seed: int) -> None:
    """Publish interleaved events from every server; the client reads a random number,
    drops the connection, resumes with the last id (on a random server): every channel
    gets every event exactly once, in its order."""
    rng = random.Random(seed)
    published: dict[str, list[int]] = {c: [] for c in channels}
    got: dict[str, list[int]] = {c: [] for c in channels}
    last_id: str | None = None
    counter = 0
    sub = MultiSubscriber(rng.choice(servers), channels, last_id)
    for _ in range(rounds):
        batch = rng.randint(1, 12)
        for _ in range(batch):
            counter += 1
            channel = rng.choice(channels)
            publish(rng.choice(servers), {"ch": channel, "n": counter}, channel)
            published[channel].append(counter)
        total = sum(map(len, published.values()))
        already = sum(map(len, got.values()))
        # (a client that has no id yet would start afresh: keep the first connection
        # until it has one)
        take = rng.randint(1 if last_id is None else 0, total - already)
        events = sub.events(take)
        for event in events:
            assert event.type == "message", event
            body = json.loads(event.data)
            assert channel_of(event) == body["ch"]
            got[body["ch"]].append(body["n"])
            last_id = event.last_event_id
        sub.close()  # cut after exactly `take` events
        sub = MultiSubscriber(rng.choice(servers), channels, last_id)
    events = sub.events(sum(map(len, published.values())) - sum(map(len, got.values())))
    for event in events:
        body = json.loads(event.data)
        got[body["ch"]].append(body["n"])
    sub.close()
    assert got == published


@pytest.mark.slow
@pytest.mark.parametrize("width", [2, 10])
def test_cut_anywhere_and_resume_gets_each_event_once_memory(
    memory_server: Server, width: int
) -> None:
    channels = [f"multi-{width}-{i}" for i in range(width)]
    run_cut_and_resume([memory_server], channels, rounds=12, seed=width)


@pytest.mark.slow
@pytest.mark.parametrize("width", [2, 10])
def test_cut_anywhere_and_resume_gets_each_event_once_redis_two_servers(
    redis_pair: list[Server], width: int
) -> None:
    """Publishes interleaved from two servers (three workers) sharing Redis; the client
    resumes on either: Redis gives no common order across channels, the cursor copes."""
    channels = [f"rmulti-{width}-{i}" for i in range(width)]
    run_cut_and_resume(redis_pair, channels, rounds=12, seed=100 + width)


@pytest.mark.slow
def test_a_channel_new_to_the_stream_starts_at_its_subscription_redis(
    redis_pair: list[Server],
) -> None:
    """A channel with no event yet is in the cursor from the start: events published to
    it while the client was away arrive after the resume."""
    a, b = redis_pair
    publish(a, {"n": 1}, "fresh-a")
    sub = MultiSubscriber(b, ["fresh-a", "fresh-b"], None)
    publish(a, {"n": 2}, "fresh-a")
    last = sub.events(1)[-1].last_event_id
    sub.close()
    assert last.startswith("fresh-a@") and ",fresh-b@" in last
    publish(b, {"n": 1}, "fresh-b")  # while away: fresh-b's first event
    sub = MultiSubscriber(a, ["fresh-a", "fresh-b"], last)
    [event] = sub.events(1)
    sub.close()
    assert (channel_of(event), json.loads(event.data)) == ("fresh-b", {"n": 1})


@pytest.mark.slow
def test_an_expired_position_resets_that_channel_only(memory_server: Server) -> None:
    publish(memory_server, {"n": 0}, "exp-a")
    publish(memory_server, {"n": 0}, "exp-b")
    sub = MultiSubscriber(memory_server, ["exp-a", "exp-b"])
    publish(memory_server, {"n": 1}, "exp-a")
    publish(memory_server, {"n": 1}, "exp-b")
    last = sub.events(2)[-1].last_event_id
    sub.close()
    for n in range(2, 80):  # more than the history (50) on exp-a only
        publish(memory_server, {"n": n}, "exp-a")
    publish(memory_server, {"n": 2}, "exp-b")
    sub = MultiSubscriber(memory_server, ["exp-a", "exp-b"], last)
    events = sub.events(1 + 50 + 1)
    sub.close()
    resets = [e for e in events if e.type == "reset"]
    assert [json.loads(e.data)["channel"] for e in resets] == ["exp-a"]
    b_data = [json.loads(e.data)["n"] for e in events
              if e.type == "message" and channel_of(e) == "exp-b"]
    assert b_data == [2]  # exp-b resumed exactly, no reset


@pytest.mark.slow
def test_multichannel_validation_and_authorize(memory_server: Server) -> None:
    def get(pairs: list[tuple[str, str]], **headers: str) -> httpx.Response:
        return httpx.get(f"{memory_server.url}/stream?{urlencode(pairs)}", headers=headers)

    too_many = [("channel", f"c{i}") for i in range(33)]
    assert get(too_many).status_code == 400
    assert get([("channel", "ok"), ("channel", "not ok")]).status_code == 400
    denied = get([("channel", "ok"), ("channel", "private-x")])
    assert denied.status_code == 403
    assert "error" in denied.json()


def publish_raw(server: Server, body: dict[str, Any]) -> Any:
    return httpx.post(server.url + "/publish", json=body, timeout=30).json()
