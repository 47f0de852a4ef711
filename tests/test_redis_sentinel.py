"""Channels and chat with Redis Sentinel (1 primary, 1 replica, 3 sentinels; real
redis-server processes) behind two app servers with
``SSE_BROKER_URL=redis+sentinel://.../mymaster/0`` and ``SSE_REDIS_WAIT_REPLICAS=1``: a
failover (coordinated, or the primary SIGKILLed) is followed without restarting the app,
and a failover that really loses the newest entries (checked on the new primary) gives
``event: reset`` to a client or reader holding one of them, and ends a followed chat
reply with ``finish_reason: "error"`` instead of a silent hole.

Why WAIT: ``SENTINEL FAILOVER`` promotes the replica while the old primary still takes
writes (until it is re-pointed), and the old primary's resync discards them. Nobody can
tell such a loss afterwards; with WAIT those publishes fail instead (the old primary has
no replica left), so "every successfully published event arrives" holds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.chat import demo_reply
from tests.rawsse import RawResponse, open_stream
from tests.redis_topologies import SentinelSetup, redis_sentinel, wait_until
from tests.servers import Server, gunicorn_server
from tests.sse_parser import ParsedEvent, parse
from tests.topology_clients import (
    Item,
    Publisher,
    ResumingStream,
    own_id,
    publish,
    silent_holes,
    wait_healthy,
)

pytestmark = pytest.mark.slow

APP = "tests.apps.topology_app:create_app()"
KEY_PREFIX = "sse:"  # the Redis broker's default key prefix


@pytest.fixture(scope="module")
def deployment() -> Iterator[tuple[SentinelSetup, Server, Server]]:
    with redis_sentinel(replicas=1, sentinels=3, master_name="mymaster") as setup:
        env = {"FLASK_SSE_BROKER_URL": setup.url(db=0), "FLASK_SSE_HEARTBEAT_INTERVAL": "1",
               "FLASK_SSE_REDIS_WAIT_REPLICAS": "1", "FLASK_SSE_REDIS_WAIT_TIMEOUT": "0.3",
               "FLASK_CHAT_DEMO_DELAY": "0.05", "FLASK_CHAT_GRACE_SECONDS": "10"}
        with gunicorn_server(APP, env=env, workers=1) as a, \
                gunicorn_server(APP, env=env, workers=2) as b:
            wait_healthy(a)
            wait_healthy(b)
            yield setup, a, b


def numbers_reach(channels: list[str], last: dict[str, int]) -> Callable[[list[Item]], bool]:
    def done(items: list[Item]) -> bool:
        seen = {(i.channel, i.n) for i in items if i.kind == "event"}
        return all((c, last[c]) in seen for c in channels)

    return done


def publish_until_ok(server: Server, channel: str, n: int) -> str:
    for _ in range(150):
        event_id = publish(server, channel, {"n": n})
        if event_id is not None:
            return event_id
        time.sleep(0.1)  # the primary is being replaced: nothing to await
    raise AssertionError("publishing never succeeded after the failover")


def follow_a_failover(deployment, fail_over: Callable[[SentinelSetup], object]) -> None:
    """Streams on both servers and a publisher through both, around ``fail_over``:
    afterwards every stream has every successfully published event (or a reset before
    each hole), the app processes are the same, and new events are on the new primary."""
    setup, a, b = deployment
    names = ["fo-one", "fo-two", "fo-three"]
    pids = (a.worker_pids(), b.worker_pids())
    streams = [ResumingStream(server, chans) for server in (a, b)
               for chans in (names[:1], names)]
    publisher = Publisher([a, b], names)
    publisher.start()
    try:
        wait_until(lambda: all(len(publisher.ok[c]) >= 3 for c in names), 20, "publishing")
        fail_over(setup)
        after = {c: len(publisher.ok[c]) for c in names}
        wait_until(lambda: all(len(publisher.ok[c]) >= after[c] + 3 for c in names), 30,
                   "publishing after the failover")
    finally:
        publisher.stop()
    try:
        last = publisher.last_ok()
        for stream in streams:
            stream.wait_for(numbers_reach(stream.channels, last), timeout=30)
        problems = {(s.server.port, tuple(s.channels), c): silent_holes(s.of(c), publisher.ok[c])
                    for s in streams for c in s.channels}
        assert not {k: v for k, v in problems.items() if v}
        assert (a.worker_pids(), b.worker_pids()) == pids  # nothing restarted
        primary = setup.primary().client()
        for channel in names:
            kept = {str(e[0]) for e in primary.xrange(KEY_PREFIX + channel)}
            assert publisher.ids[channel][last[channel]] in kept
    finally:
        for stream in streams:
            stream.close()


def test_a_coordinated_failover_is_followed_without_restarting_the_app(deployment) -> None:
    follow_a_failover(deployment, lambda setup: setup.failover())


def test_a_killed_primary_is_replaced_and_followed_without_restarting_the_app(deployment) -> None:
    follow_a_failover(deployment, lambda setup: setup.kill_primary())


def test_a_lossy_failover_gives_a_reset_to_clients_holding_a_lost_id(deployment) -> None:
    setup, a, b = deployment
    channel = "lossy"
    key = KEY_PREFIX + channel
    live = ResumingStream(b, [channel])
    multi = ResumingStream(a, [channel, "lossy-other"])
    try:
        kept_ids = [publish_until_ok(a, channel, n) for n in range(3)]
        replica = setup.replicas()[0]
        wait_until(lambda: replica.client().xlen(key) == 3, 10, "replicated")
        for stream in (live, multi):
            stream.wait_for(lambda items: len(items) == 3)

        def write() -> list[str]:
            for n in (3, 4):  # written on the primary, but no replica acknowledges them
                refused = httpx.post(a.url + "/publish", timeout=30,
                                     json={"channel": channel, "data": {"n": n}})
                assert refused.status_code == 503, refused.text
                assert "0 of 1 replicas" in refused.json()["error"], refused.text
            for stream in (live, multi):  # both now hold the lost ids as positions
                stream.wait_for(lambda items: [i.n for i in items][-1:] == [4])
            return [own_id(i.event_id) for i in live.items[3:5]]

        new_primary, lost_ids = setup.lossy_failover(write)
        stored = [str(e[0]) for e in new_primary.client().xrange(key)]
        assert stored == kept_ids, "the failover did not lose the newest entries"
        # a client that held a lost id gets a reset first, then what the stream keeps
        resumed = ResumingStream(b, [channel], last_event_id=lost_ids[-1])
        try:
            resumed.wait_for(lambda items: len(items) >= 4)
            assert [(i.kind, i.n) for i in resumed.items[:4]] == [
                ("reset", None), ("event", 0), ("event", 1), ("event", 2)]
            publish_until_ok(b, channel, 5)
            # the live streams' (and their readers') positions are lost too: a reset,
            # then the new event; the resumed one gets it live
            for stream in (live, multi, resumed):
                stream.wait_for(lambda items: 5 in [i.n for i in items], timeout=20)
            for stream in (live, multi):
                tail = [(i.kind, i.n) for i in stream.of(channel)][5:]
                assert tail[0] == ("reset", None) and tail[-1] == ("event", 5), tail
            assert [(i.kind, i.n) for i in resumed.items][-1] == ("event", 5)
        finally:
            resumed.close()
    finally:
        live.close()
        multi.close()


def seq_of(event: ParsedEvent) -> int:
    return int(event.last_event_id.rsplit(":", 1)[1])


def read_events(resp: RawResponse, body: bytes, count: int) -> tuple[list[ParsedEvent], bytes]:
    """Read until ``count`` events (or the end); the events and the bytes so far."""
    while len(parse(body).events) < count:
        chunk = resp.read_chunk()
        if not chunk:
            break
        body += chunk
    return parse(body).events, body


def test_a_lossy_failover_ends_a_followed_chat_reply_with_an_error(deployment) -> None:
    setup, a, b = deployment
    prompt = "follow this reply through a lossy failover of the sentinel primary please " * 2
    owner = open_stream(a.url + "/chat/stream", method="POST", timeout=60,
                        headers={"Content-Type": "application/json"},
                        body=json.dumps({"message": prompt}).encode())
    follower: RawResponse | None = None
    try:
        owner_events, owner_body = read_events(owner, b"", 3)
        stream_id = owner_events[0].last_event_id.split(":")[0]
        # another server follows the reply through Redis
        follower = open_stream(b.url + "/chat/stream", method="POST", timeout=60,
                               headers={"Content-Type": "application/json",
                                        "Last-Event-ID": f"{stream_id}:3"},
                               body=json.dumps({"message": prompt}).encode())
        seen, body = read_events(follower, b"", 2)

        def write() -> None:  # entries the follower reads, that the failover loses
            nonlocal seen, body
            # the replica is frozen now: what the primary has from here on is lost
            primary = setup.primary().client()
            key = next(iter(primary.scan_iter(match=f"*{stream_id}")))
            frozen_at = int(primary.xrevrange(key, count=1)[0][1]["q"])
            while seq_of(seen[-1]) <= frozen_at + 1:
                count = len(seen)
                seen, body = read_events(follower, body, count + 1)
                assert len(seen) > count, "the reply ended before the failover"

        new_primary, _ = setup.lossy_failover(write)
        held = seq_of(seen[-1])
        stored = {int(fields["q"]) for _id, fields in new_primary.client().xrange(
            next(iter(new_primary.client().scan_iter(match=f"*{stream_id}")))) or []}
        assert held not in stored, "the failover did not lose the follower's position"
        seen, body = read_events(follower, body, 10_000)  # to its end
        seqs = [int(e.last_event_id.rsplit(":", 1)[1]) for e in seen]
        assert seqs == list(range(4, 4 + len(seqs))), seqs  # never a silent hole
        if seen[-1].type == "close":
            assert json.loads(seen[-1].data)["finish_reason"] == "error", seen[-1]
        else:  # the stream ended: coming back is answered, never with a hole
            again = httpx.get(b.url + "/chat/stream", timeout=30,
                              headers={"Last-Event-ID": seen[-1].last_event_id})
            assert again.status_code == 204 or (
                '"finish_reason":"error"' in again.text.replace(" ", "")), again.text
        # the owner's own client is served from its process: the whole reply, in order
        owner_events, _ = read_events(owner, owner_body, 10_000)
        text = "".join(json.loads(e.data)["content"] for e in owner_events if e.type == "message")
        assert demo_reply(prompt).startswith(text)
    finally:
        owner.close()
        if follower is not None:
            follower.close()
