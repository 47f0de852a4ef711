"""Channels and chat on a Redis Cluster (3 primaries + 3 replicas, real redis-server
processes) behind two app servers of two gunicorn workers each, with
``SSE_BROKER_URL=redis+cluster://...``: events spread over every primary reach every
subscriber once and in order, resume exactly on the other server, a process reads with
a constant number of connections per primary whatever the channel count, a generation
resumes and is cancelled across servers, with ``SSE_REDIS_WAIT_REPLICAS`` a publish no
replica acknowledged fails, and a primary SIGKILLed mid-traffic skips nothing in silence
(the last test: it changes the cluster)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import psutil
import pytest

from tests.chat import demo_reply, partial_chat, run_chat
from tests.rawsse import open_stream
from tests.redis_topologies import Cluster, RedisNode, redis_cluster, wait_until
from tests.servers import Server, gunicorn_server
from tests.sse_parser import parse
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
KEY_PREFIX = "sse:"  # the Redis broker's default key prefix: where a channel's key hashes


@pytest.fixture(scope="module")
def deployment() -> Iterator[tuple[Cluster, Server, Server]]:
    with redis_cluster(primaries=3, replicas=1) as cluster:
        env = {"FLASK_SSE_BROKER_URL": cluster.url(), "FLASK_SSE_HEARTBEAT_INTERVAL": "1",
               "FLASK_CHAT_DEMO_DELAY": "0.03", "FLASK_CHAT_GRACE_SECONDS": "10"}
        with gunicorn_server(APP, env=env, workers=2) as a, \
                gunicorn_server(APP, env=env, workers=2) as b:
            wait_healthy(a)
            wait_healthy(b)
            yield cluster, a, b


def channels_per_primary(cluster: Cluster, count: int, pattern: str) -> dict[int, list[str]]:
    return cluster.names_per_primary(count, pattern, make_key=lambda n: KEY_PREFIX + n)


def spread(per_primary: dict[int, list[str]], per_stream: int) -> list[list[str]]:
    """Streams of ``per_stream`` channels from every primary each (multi-channel)."""
    lists = list(per_primary.values())
    return [[c for names in lists for c in names[i:i + per_stream]]
            for i in range(0, len(lists[0]), per_stream)]


def keys_on(node: RedisNode, match: str) -> list[str]:
    client = node.client()
    return sorted(str(k) for k in client.scan_iter(match=match, count=1000))


def events_per_channel(channels: list[str], rounds: int) -> Callable[[list[Item]], bool]:
    def enough(items: list[Item]) -> bool:
        counts = Counter(i.channel for i in items if i.kind == "event")
        return all(counts[c] >= rounds for c in channels)

    return enough


def delivered(streams: list[ResumingStream], rounds: int) -> None:
    for stream in streams:
        stream.wait_for(events_per_channel(stream.channels, rounds))


def test_every_event_reaches_every_subscriber_once_in_order_across_servers(deployment) -> None:
    cluster, a, b = deployment
    per_primary = channels_per_primary(cluster, 60, "c{}")  # 60 channels on every primary
    streams = [ResumingStream(server, names) for server in (a, b)
               for names in spread(per_primary, 10)]  # 12 streams of 30 channels
    try:
        publisher = Publisher([a, b], [c for names in per_primary.values() for c in names])
        with httpx.Client() as client:
            for _ in range(4):
                publisher.round(client)
        assert publisher.failed == 0
        delivered(streams, 4)
        for stream in streams:
            for channel in stream.channels:
                assert [(i.kind, i.n) for i in stream.of(channel)] == [
                    ("event", n) for n in range(4)], channel
            assert stream.connects == 1
        for primary in cluster.primaries():  # the channels really live on every primary
            assert len(keys_on(primary, KEY_PREFIX + "c*")) == 60
    finally:
        for stream in streams:
            stream.close()


def test_resume_on_the_other_server_is_exact(deployment) -> None:
    cluster, a, b = deployment
    names = spread(channels_per_primary(cluster, 10, "r{}"), 10)[0]  # 30, from every primary
    publisher = Publisher([a, b], names)
    with httpx.Client() as client:
        first = ResumingStream(a, names)
        for _ in range(3):
            publisher.round(client)
        delivered([first], 3)
        first.close()
        for _ in range(2):
            publisher.round(client)
        resumed = ResumingStream(b, names, last_event_id=first.last_event_id)
        try:
            delivered([resumed], 2)
            publisher.round(client)
            delivered([resumed], 3)
            for channel in names:
                assert [(i.kind, i.n) for i in resumed.of(channel)] == [
                    ("event", 3), ("event", 4), ("event", 5)], channel
        finally:
            resumed.close()
    assert publisher.failed == 0


def worker_connections(server: Server, cluster: Cluster) -> dict[tuple[int, int], int]:
    """(worker pid, primary port) -> that worker's connections as the primary lists
    them (CLIENT LIST addr, matched to the worker's sockets)."""
    owner = {}
    for pid in server.worker_pids():
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.status == psutil.CONN_ESTABLISHED:
                owner[(conn.laddr.ip, conn.laddr.port)] = pid
    counts: dict[tuple[int, int], int] = {}
    for primary in cluster.primaries():
        for client in cluster.client_list(primary):
            host, _, port = client["addr"].rpartition(":")
            worker = owner.get((host, int(port)))
            if worker is not None:
                counts[(worker, primary.port)] = counts.get((worker, primary.port), 0) + 1
    return counts


def serving_worker(server: Server, stream: ResumingStream) -> int | None:
    """The worker pid holding ``stream``'s connection."""
    port = stream.local_port()
    for pid in server.worker_pids():
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == port:
                return pid
    return None


def test_connections_per_primary_per_worker_do_not_grow_with_channels(deployment) -> None:
    cluster, a, _b = deployment
    small = channels_per_primary(cluster, 8, "few{}")
    big = channels_per_primary(cluster, 60, "many{}")
    streams: list[ResumingStream] = []
    try:
        # a stream of one channel per primary, until both workers hold some
        for i in range(8):
            streams.append(ResumingStream(a, [names[i] for names in small.values()]))
            if len({serving_worker(a, s) for s in streams} - {None}) == 2:
                break
        assert len({serving_worker(a, s) for s in streams}) == 2, "one worker got every stream"
        publisher = Publisher([a], [c for s in streams for c in s.channels])
        with httpx.Client() as client:
            publisher.round(client)
        delivered(streams, 1)
        few = worker_connections(a, cluster)
        # then 60 channels on every primary, in 6 more streams
        more = [ResumingStream(a, names) for names in spread(big, 10)]
        streams += more
        publisher = Publisher([a], [c for s in more for c in s.channels])
        with httpx.Client() as client:
            publisher.round(client)
        delivered(more, 1)
        many = worker_connections(a, cluster)
        for (pid, port), count in many.items():
            assert count <= few.get((pid, port), 0) + 1, (pid, port, few, many)
            assert count <= 6, (pid, port, many)  # a few, never one per channel
    finally:
        for stream in streams:
            stream.close()


def test_chat_generation_resumes_on_the_other_server(deployment) -> None:
    cluster, a, b = deployment
    prompt = "resume this reply on another server of the cluster " * 3
    first = partial_chat(a, "POST", prompt, count=5)
    rest = run_chat(b, "POST", prompt, headers={"Last-Event-ID": first.events[-1].last_event_id})
    assert rest.stream_id == first.stream_id
    assert rest.seqs() == list(range(6, 6 + len(rest.events)))
    assert first.text + rest.text == demo_reply(prompt)
    assert rest.close["finish_reason"] == "stop"
    # a generation's keys share one hash slot (one node: a pipeline is one round trip)
    holders = {p.port: keys_on(p, f"*{first.stream_id}*") for p in cluster.primaries()}
    holders = {port: keys for port, keys in holders.items() if keys}
    assert len(holders) == 1, holders
    keys = next(iter(holders.values()))
    assert len({cluster.keyslot(k) for k in keys}) == 1, keys


def test_chat_cancel_from_the_other_server(deployment) -> None:
    _cluster, a, b = deployment
    with open_stream(a.url + "/chat/stream?message=cancel+me+across+the+cluster") as resp:
        stream_id = resp.headers["x-stream-id"]
        body = b""
        while not parse(body).events:
            body += resp.read_chunk()
        assert httpx.delete(f"{b.url}/chat/stream/{stream_id}", timeout=30).status_code == 204
        body += resp.read_all()
    events = parse(body).events
    assert events[-1].type == "close"
    assert json.loads(events[-1].data)["finish_reason"] == "cancelled"


def test_with_wait_a_publish_no_replica_acknowledged_fails_and_says_so(deployment) -> None:
    """``SSE_REDIS_WAIT_REPLICAS=1``: a publish to a primary whose replica is frozen is
    refused (503, naming the replicas), though written and delivered; the other
    primaries' publishes succeed; once the replica is back, so do its own."""
    cluster, _a, _b = deployment
    primary = cluster.primaries()[1]
    replica = cluster.replica_of(primary)
    per_primary = channels_per_primary(cluster, 1, "wait{}")
    frozen, fine = per_primary[primary.port][0], per_primary[cluster.primaries()[2].port][0]
    env = {"FLASK_SSE_BROKER_URL": cluster.url(), "FLASK_SSE_HEARTBEAT_INTERVAL": "1",
           "FLASK_SSE_REDIS_WAIT_REPLICAS": "1", "FLASK_SSE_REDIS_WAIT_TIMEOUT": "0.3"}
    with gunicorn_server(APP, env=env, workers=1) as server:
        wait_healthy(server)
        stream = ResumingStream(server, [frozen, fine])
        try:
            assert publish(server, frozen, {"n": 0}) is not None
            replica.suspend()
            try:
                refused = httpx.post(server.url + "/publish", timeout=30,
                                     json={"channel": frozen, "data": {"n": 1}})
                assert refused.status_code == 503, refused.text
                assert "0 of 1 replicas" in refused.json()["error"]
                assert publish(server, fine, {"n": 0}) is not None
                # written on the primary all the same: subscribers get it
                stream.wait_for(lambda items: {(i.channel, i.n) for i in items} >= {
                    (frozen, 0), (frozen, 1), (fine, 0)})
            finally:
                replica.resume()
            wait_until(lambda: publish(server, frozen, {"n": 2}) is not None, 20,
                       "the replica acknowledging again")
        finally:
            stream.close()
    wait_until(lambda: replica in cluster.replicas(), 20, "the replica back in the cluster")


def got_last(channels: list[str], last: dict[str, int]) -> Callable[[list[Item]], bool]:
    def done(items: list[Item]) -> bool:
        seen = {(i.channel, i.n) for i in items if i.kind == "event"}
        return all((c, last[c]) in seen for c in channels)

    return done


def test_primary_killed_mid_traffic_skips_nothing_in_silence(deployment) -> None:
    """SIGKILL a primary while events flow; its replica is promoted without the newest
    entries (it is frozen and cut off first, so the loss is certain). Every subscriber
    then has every successfully published event, or a ``reset`` before each hole."""
    cluster, a, b = deployment
    per_primary = channels_per_primary(cluster, 10, "kill{}")
    victim = cluster.primaries()[0]
    victim_channels = per_primary[victim.port]
    names = [c for names in per_primary.values() for c in names]
    streams = [ResumingStream(server, chunk) for server in (a, b)
               for chunk in (names[:15], names[15:])]
    streams += [ResumingStream(server, [victim_channels[0]]) for server in (a, b)]
    publisher = Publisher([a, b], names)
    publisher.start()
    try:
        delivered(streams, 2)
        replica = cluster.replica_of(victim)
        replica.suspend()  # frozen: it reads nothing more from the primary...
        victim.command("CLIENT", "KILL", "TYPE", "replica")  # ...and is cut off
        before = {c: len(publisher.ok[c]) for c in victim_channels}
        wait_until(lambda: all(len(publisher.ok[c]) >= before[c] + 2 for c in victim_channels),
                   20, "publishes acknowledged by the primary alone")
        victim.kill()
        replica.resume()
        cluster.wait_for_promotion(replica)
        after = {c: len(publisher.ok[c]) for c in names}
        wait_until(lambda: all(len(publisher.ok[c]) >= after[c] + 3 for c in names), 30,
                   "publishing again after the failover")
    finally:
        publisher.stop()
    try:
        # the failover really lost entries: ids delivered or acknowledged before it
        kept = {c: {str(e[0]) for e in replica.client().xrange(KEY_PREFIX + c)}
                for c in victim_channels}
        seen = {c: set(publisher.ids[c].values()) | {own_id(i.event_id) for s in streams
                                                     for i in s.of(c) if i.kind == "event"}
                for c in victim_channels}
        assert any(seen[c] - kept[c] for c in victim_channels), "nothing was lost"
        last = publisher.last_ok()
        for stream in streams:
            stream.wait_for(got_last(stream.channels, last), timeout=30)
        problems = {(stream.server.port, c): silent_holes(stream.of(c), publisher.ok[c])
                    for stream in streams for c in stream.channels}
        assert not {k: v for k, v in problems.items() if v}
    finally:
        for stream in streams:
            stream.close()
