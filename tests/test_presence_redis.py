"""Presence and ``last=N`` on Redis, across two gunicorn servers of two workers each.

Counts are exact after joins and leaves (on every server, and in the streams' presence
events); a worker killed with SIGKILL leaves the count (its counts expire: the app lowers
the TTL to 8 s, the default is 15 s); 1,000 joins give each stream a few presence events,
not one per join; ``last=N`` sends the newest N in order and joins the live events
exactly while publishing never stops."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.rawsse import RawResponse, open_stream
from tests.servers import Server, gunicorn_server
from tests.sse_parser import parse

pytestmark = pytest.mark.slow

APP = "tests.apps.presence_app:create_app()"
PRESENCE = re.compile(
    rb'event: presence\n(?:id: [^\n]*\n)?data: \{"channel":"([^"]+)","count":(\d+)\}')


@pytest.fixture(scope="module")
def servers(redis: Server) -> Iterator[list[Server]]:
    env = {"TEST_BROKER_URL": f"redis://127.0.0.1:{redis.port}/0", "TEST_PRESENCE_TTL": "8"}
    with gunicorn_server(APP, env=env, workers=2) as a, \
            gunicorn_server(APP, env=env, workers=2) as b:
        yield [a, b]


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``check`` until it returns something true (a count that converges over the
    census's passes: there is no event to await from outside)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def presence_of(server: Server, channel: str) -> int:
    answer = httpx.get(f"{server.url}/stream/presence", params={"channel": channel}, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["channel"] == channel
    return int(body["count"])


def wait_for_count(server: Server, channel: str, count: int, timeout: float = 20.0) -> None:
    eventually(lambda: presence_of(server, channel) == count, timeout,
               f"{channel}: {count} online on {server.url}")


def publish(server: Server, channel: str, count: int, start: int = 0) -> list[str]:
    answer = httpx.post(f"{server.url}/publish", json={"channel": channel, "count": count,
                                                       "start": start}, timeout=30)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["ids"])


class Stream:
    """A raw stream that remembers the presence counts it was sent."""

    def __init__(self, server: Server, query: str) -> None:
        self.resp: RawResponse = open_stream(f"{server.url}/stream?{query}", timeout=30)
        assert self.resp.status == 200
        self.pid = int(self.resp.headers["x-worker-pid"])
        self.body = b""

    def counts(self, channel: str) -> list[int]:
        return [int(n) for name, n in PRESENCE.findall(self.body) if name.decode() == channel]

    def read_until_count(self, channel: str, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        self.resp.sock.settimeout(timeout)
        while not self.counts(channel) or self.counts(channel)[-1] != count:
            assert time.monotonic() < deadline, f"{channel}: {self.counts(channel)}, not {count}"
            chunk = self.resp.read_chunk()
            assert chunk, "the stream ended"
            self.body += chunk

    def close(self) -> None:
        self.resp.close()


def test_counts_are_exact_after_joins_and_leaves_on_every_server(servers) -> None:
    streams = [Stream(servers[i % 2], "channel=room") for i in range(13)]
    try:
        for server in servers:
            wait_for_count(server, "room", 13)
        for stream in streams:
            stream.read_until_count("room", 13)
        for stream in streams[:5]:
            stream.close()
        for server in servers:
            wait_for_count(server, "room", 8)
        for stream in streams[5:]:
            stream.read_until_count("room", 8)
    finally:
        for stream in streams:
            stream.close()
    for server in servers:
        wait_for_count(server, "room", 0)


def test_a_killed_worker_leaves_the_count(servers) -> None:
    a, b = servers
    streams = [Stream(b, "channel=doomed") for _ in range(12)]
    streams += [Stream(a, "channel=doomed") for _ in range(4)]
    try:
        eventually(lambda: presence_of(a, "doomed") == 16, what="16 online")
        by_pid: dict[int, int] = {}
        for stream in streams[:12]:
            by_pid[stream.pid] = by_pid.get(stream.pid, 0) + 1
        victim, lost = max(by_pid.items(), key=lambda item: item[1])
        os.kill(victim, signal.SIGKILL)  # no chance to say goodbye: its counts expire
        eventually(lambda: presence_of(a, "doomed") == 16 - lost, timeout=30,
                   what=f"the {lost} streams of the killed worker leave the count")
        survivor = next(s for s in streams if s.pid != victim)
        survivor.read_until_count("doomed", 16 - lost, timeout=30)
    finally:
        for stream in streams:
            stream.close()


async def _crowd(servers: list[Server], n: int, channel: str, settle: float
                 ) -> list[bytes]:  # fmt: skip
    """Open ``n`` streams at once (HTTP/1.0, so bodies are not chunked), read until each
    was told ``n``, then ``settle`` seconds more, and return the bodies."""
    bodies = [b""] * n
    done = asyncio.Event()

    async def one(i: int) -> None:
        server = servers[i % len(servers)]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /stream?channel={channel} HTTP/1.0\r\nHost: x\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        try:
            while not done.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(65536), 0.5)
                except TimeoutError:
                    continue
                if not data:
                    return
                bodies[i] += data
        finally:
            writer.close()

    def last_count(body: bytes) -> int | None:
        found = PRESENCE.findall(body)
        return int(found[-1][1]) if found else None

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    deadline = time.monotonic() + 40
    while any(last_count(body) != n for body in bodies):
        assert time.monotonic() < deadline, sorted({last_count(b) for b in bodies}, key=str)
        assert not any(t.done() for t in tasks), "a stream ended"
        await asyncio.sleep(0.1)
    await asyncio.sleep(settle)
    assert not any(t.done() for t in tasks), f"{sum(t.done() for t in tasks)} streams ended"
    seen = list(bodies)  # before any closes: the leaving that follows is counted too
    done.set()
    await asyncio.gather(*tasks)
    return seen


def test_a_thousand_joins_give_each_stream_a_few_presence_events(servers) -> None:
    # in a thread of its own: a browser test's Playwright may hold this thread's loop
    with ThreadPoolExecutor(1) as pool:
        bodies = pool.submit(asyncio.run, _crowd(servers, 1000, "crowd", settle=2.5)).result()
    per_stream = [len(PRESENCE.findall(body)) for body in bodies]
    print(f"\npresence events per stream: max {max(per_stream)}, "
          f"mean {sum(per_stream) / len(per_stream):.1f}")
    # one per pass of its worker (1 s) while the joins go on, and the opening one: not
    # one per join (which would be hundreds)
    assert max(per_stream) <= 15
    assert all(int(PRESENCE.findall(body)[-1][1]) == 1000 for body in bodies)
    eventually(lambda: presence_of(servers[0], "crowd") == 0, what="the crowd left")


def test_last_n_sends_the_newest_in_order_then_live_across_servers(servers) -> None:
    a, b = servers
    ids = publish(a, "fx", 10)
    stream = Stream(b, "channel=fx&last=3")
    publish(a, "fx", 1, start=10)
    while len([e for e in parse(stream.body).events if e.type == "message"]) < 4:
        stream.body += stream.resp.read_chunk()
    got = [e for e in parse(stream.body).events if e.type == "message"]
    stream.close()
    assert [json.loads(e.data)["n"] for e in got] == [7, 8, 9, 10]
    assert [e.last_event_id for e in got[:3]] == ids[7:]


def test_last_n_joins_live_events_exactly_while_publishing_never_stops(servers) -> None:
    a = servers[0]
    stop = threading.Event()

    def publish_forever() -> None:
        start = 0
        while not stop.is_set():
            publish(a, "busy", 20, start)
            start += 20

    publisher = threading.Thread(target=publish_forever)
    publisher.start()
    try:
        for i in range(24):
            stream = Stream(servers[i % 2], "channel=busy&last=5")
            while len([e for e in parse(stream.body).events if e.type == "message"]) < 60:
                chunk = stream.resp.read_chunk()
                assert chunk, "the stream ended"
                stream.body += chunk
            stream.close()
            numbers = [json.loads(e.data)["n"] for e in parse(stream.body).events
                       if e.type == "message"]
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    finally:
        stop.set()
        publisher.join()


@pytest.mark.parametrize("value", ["0", "-2", "101", "x", "\u0661"])
def test_a_bad_last_gets_400_json_on_redis(servers, value: str) -> None:
    answer = httpx.get(f"{servers[0].url}/stream", params={"channel": "fx", "last": value})
    assert answer.status_code == 400
    assert "last" in answer.json()["error"]


def test_presence_on_a_stream_of_several_channels_on_redis(servers) -> None:
    a, b = servers
    wide = Stream(a, "channel=m1&channel=m2")
    wide.read_until_count("m2", 1)
    narrow = Stream(b, "channel=m2")
    wide.read_until_count("m2", 2)
    ids = re.findall(rb"event: presence\nid: ([^\n]*)\ndata: [^\n]*\"m2\"", wide.body)
    assert ids and all(i.startswith(b"m2@") for i in ids)
    narrow.close()
    wide.read_until_count("m2", 1)
    wide.close()


def test_last_n_on_several_channels_resumes_exactly_from_inside_the_prelude(servers) -> None:
    a, b = servers
    publish(a, "pa", 5)
    publish(a, "pb", 5, start=100)
    first = Stream(b, "channel=pa&channel=pb&last=2")
    while len([e for e in parse(first.body).events if e.type == "message"]) < 4:
        first.body += first.resp.read_chunk()
    first.close()
    got = [e for e in parse(first.body).events if e.type == "message"]
    assert [json.loads(e.data)["n"] for e in got] == [3, 4, 103, 104]
    # cut after the first event: a resume (on the other server) sends the rest exactly
    resumed = open_stream(f"{a.url}/stream?channel=pa&channel=pb&last=2",
                          headers={"Last-Event-ID": got[0].last_event_id}, timeout=30)
    body = b""
    while len([e for e in parse(body).events if e.type == "message"]) < 3:
        body += resumed.read_chunk()
    resumed.close()
    rest = [json.loads(e.data)["n"] for e in parse(body).events if e.type == "message"]
    assert rest == [4, 103, 104]
