"""The contract's own bound, with the library's default TTL (15 s, not lowered): the
streams of a worker killed with SIGKILL stop counting within 30 s on every server that
shares the Redis broker (tests/test_presence_redis.py checks the same with a short TTL,
quickly; this one takes about 16 s); a worker stopped with SIGTERM leaves at once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.servers import Server, gunicorn_server
from tests.test_presence_redis import APP, Stream, eventually, presence_of, wait_for_count

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(redis: Server) -> Iterator[list[Server]]:
    env = {"TEST_BROKER_URL": f"redis://127.0.0.1:{redis.port}/1"}
    with gunicorn_server(APP, env=env, workers=2) as a, \
            gunicorn_server(APP, env=env, workers=2) as b:
        yield [a, b]


def test_a_killed_worker_stops_counting_within_30_seconds(servers: list[Server]) -> None:
    a, b = servers
    streams = [Stream(b, "channel=vigil") for _ in range(10)]
    streams += [Stream(a, "channel=vigil") for _ in range(3)]
    try:
        eventually(lambda: presence_of(a, "vigil") == 13, what="13 online")
        victim = streams[0].pid
        lost = sum(1 for s in streams if s.pid == victim)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        for server in servers:  # the bound runs from the kill, for both servers
            wait_for_count(server, "vigil", 13 - lost, 30 - (time.monotonic() - killed_at))
        print(f"\nkilled worker's {lost} streams left the count after "
              f"{time.monotonic() - killed_at:.1f} s")
    finally:
        for stream in streams:
            stream.close()


def test_a_worker_stopped_gracefully_leaves_the_count_before_its_ttl(
    servers: list[Server],
) -> None:
    """SIGTERM (a deploy, a restart): the worker's streams end with their reconnect hint
    and it tells Redis as its last one goes, so the count drops well before the 15 s its
    counts would otherwise outlive it (the clients have not come back here: they are
    raw sockets)."""
    a, b = servers
    streams = [Stream(b, "channel=deploy") for _ in range(10)]
    try:
        wait_for_count(a, "deploy", 10)
        victim = streams[0].pid
        lost = sum(1 for s in streams if s.pid == victim)
        os.kill(victim, signal.SIGTERM)
        wait_for_count(a, "deploy", 10 - lost, timeout=8)  # < the TTL: not by expiry
    finally:
        for stream in streams:
            stream.close()
