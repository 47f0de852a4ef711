"""Channels on Redis Streams across two gunicorn servers (one with two workers)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.channels import Subscriber, publish
from tests.servers import Server, gunicorn_server, redis_server
from tests.sse_parser import parse

pytestmark = pytest.mark.slow


def redis_command(port: int, *args: str) -> bytes:
    """A minimal RESP client, so the test does not trust the library's own redis usage."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n")
        if head.startswith(b"$"):  # bulk string: read exactly its length
            size = int(head[1:])
            while len(rest) < size + 2:
                rest += sock.recv(65536)
            return rest[:size]
        return head


def client_count(port: int) -> int:
    listing = redis_command(port, "CLIENT", "LIST")
    return sum(1 for line in listing.splitlines() if line.startswith(b"id="))


@pytest.fixture(scope="module")
def cluster(redis: Server) -> Iterator[tuple[Server, Server]]:
    env = {"TEST_BROKER_URL": f"redis://127.0.0.1:{redis.port}/0"}
    with gunicorn_server("tests.apps.core_app:create_app()", env=env, workers=1) as a, \
            gunicorn_server("tests.apps.core_app:create_app()", env=env, workers=2) as b:
        yield a, b


def test_publish_on_one_host_reaches_subscribers_on_another(cluster) -> None:
    a, b = cluster
    subs = [Subscriber(b, "shared") for _ in range(6)]  # spread over b's two workers
    try:
        ids = [publish(a, {"n": n}, "shared")["id"] for n in range(50)]
        for sub in subs:
            got = sub.events(50)
            assert [json.loads(e.data)["n"] for e in got] == list(range(50))  # in order, once
            assert [e.last_event_id for e in got] == ids
    finally:
        for sub in subs:
            sub.close()


def test_replay_across_hosts(cluster) -> None:
    a, b = cluster
    ids = [publish(a, {"n": n}, "hist")["id"] for n in range(6)]
    with Subscriber(b, "hist", last_event_id=ids[2]) as sub:
        assert [d["n"] for d in sub.data(3)] == [3, 4, 5]
        publish(a, {"n": 6}, "hist")
        assert [d["n"] for d in sub.data(4)] == [3, 4, 5, 6]
    with Subscriber(b, "hist", last_event_id="1-0") as sub:  # valid but long gone
        got = sub.events(1)
        assert got[0].type == "reset"


def test_redis_connections_stay_constant_as_subscribers_grow(cluster, redis: Server) -> None:
    a, b = cluster
    few = [Subscriber(b, "crowd") for _ in range(4)]
    publish(a, {"n": 0}, "crowd")
    for sub in few:
        sub.events(1)
    baseline = client_count(redis.port)
    many = [Subscriber(b, "crowd") for _ in range(60)]
    publish(a, {"n": 1}, "crowd")
    for sub in many:
        assert sub.data(1) == [{"n": 1}]
    assert client_count(redis.port) <= baseline + 2  # not one connection per client
    for sub in few + many:
        sub.close()


def test_redis_restart_subscribers_recover_and_nothing_hangs() -> None:
    with redis_server() as first:
        port = first.port
        env = {"TEST_BROKER_URL": f"redis://127.0.0.1:{port}/0", "TEST_HEARTBEAT": "0.2"}
        with gunicorn_server("tests.apps.core_app:create_app()", env=env) as app:
            sub = Subscriber(app, "restart")
            publish(app, {"n": 1}, "restart")
            assert sub.data(1) == [{"n": 1}]
            first.proc.terminate()
            first.proc.wait(10)
            # Redis is down: the publisher gets a clear 503, the stream stays up (heartbeats)
            import httpx

            down = httpx.post(app.url + "/publish", json={"data": 1, "channel": "restart"},
                              timeout=30)
            assert down.status_code == 503 and "redis" in down.json()["error"]
            assert sub.resp.read_chunk().startswith(b":")  # still heartbeating
            # a subscriber to a channel without a reader here gets a stream that ends at
            # once with a retry: hint (a 503 would make EventSource give up for good)
            with Subscriber(app, "restart-other") as late:
                tail = late.read_to_end()
            assert tail.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"retry: ")
            with redis_server(port=port):
                # the reader reconnects with back-off; publish until the subscriber sees one
                for n in range(2, 200):
                    publish(app, {"n": n}, "restart")
                    sub.body += sub.resp.read_chunk()
                    if b'{"n":' in sub.body.split(b'{"n":1}', 1)[1]:
                        break
                events = parse(sub.body).events
                received = [json.loads(e.data)["n"] for e in events if e.type == "message"]
                assert received[0] == 1 and received[1] >= 2
                assert received == sorted(received)
                # the new Redis does not hold the position the reader had: a reset first
                kinds = [e.type for e in events]
                assert kinds.index("reset") < kinds.index("message", 1), kinds
            sub.close()
