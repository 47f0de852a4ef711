"""Redis restarts without its data on a clock that is behind the old one: the new
stream ids are smaller than every position the app and its clients hold. Nobody may
then get nothing in silence: live streams, resumed ones and new ones get the new
events, after a ``reset`` where they held a position the new Redis does not have.

The old server's clock being ahead is simulated by its stream's first entry, added
with an explicit id 600 s in the future (Redis then keeps assigning ids after it, as
it does after any clock jump); the restarted server assigns ids from the real clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis

from tests.servers import Server, gunicorn_server, redis_server
from tests.topology_clients import ResumingStream, publish

pytestmark = pytest.mark.slow

AHEAD_MS = 600_000
CHANNEL = "clock"
KEY = "sse:" + CHANNEL  # the Redis broker's default key prefix


def publish_until_ok(app: Server, channel: str, n: int) -> str:
    """Publish ``{"n": n}``; while the app reconnects to the restarted Redis it may
    answer 503 a few times."""
    for _ in range(100):
        event_id = publish(app, channel, {"n": n})
        if event_id is not None:
            return event_id
        time.sleep(0.1)  # the app's command pool reconnecting: nothing to await
    raise AssertionError("publishing never succeeded after the restart")


def ms(event_id: str) -> int:
    return int(event_id.split("-")[0])


@pytest.fixture
def restarted() -> Iterator[tuple[Server, ResumingStream, list[str]]]:
    """An app whose Redis restarted empty and behind, with a live stream that got the
    old events, and the ids of those (0, 1, 2)."""
    with redis_server() as first:
        port = first.port
        seed = redis.Redis(port=port)
        seed.xadd(KEY, {"d": json.dumps({"n": -1})}, id=f"{int(time.time() * 1000) + AHEAD_MS}-0")
        seed.close()
        env = {"FLASK_SSE_BROKER_URL": f"redis://127.0.0.1:{port}/0",
               "FLASK_SSE_HEARTBEAT_INTERVAL": "0.5"}
        with gunicorn_server("tests.apps.topology_app:create_app()", env=env, workers=1) as app:
            live = ResumingStream(app, [CHANNEL])
            try:
                old = [publish_until_ok(app, CHANNEL, n) for n in range(3)]
                live.wait_for(lambda items: [i.n for i in items] == [0, 1, 2])
                first.proc.kill()
                first.proc.wait(10)
                with redis_server(port=port):
                    yield app, live, old
            finally:
                live.close()


def test_a_live_stream_gets_a_reset_then_the_new_events(restarted) -> None:
    app, live, old = restarted
    new = [publish_until_ok(app, CHANNEL, n) for n in range(3, 6)]
    assert ms(new[0]) < ms(old[-1]) - AHEAD_MS / 2  # the ids really went back
    live.wait_for(lambda items: [i.n for i in items if i.kind == "event"][-1:] == [5], timeout=10)
    after = live.items[3:]
    assert after[0].kind == "reset", after
    assert [i.n for i in after if i.kind == "event"] == [3, 4, 5]


def test_a_resumed_stream_gets_a_reset_then_the_new_events_then_live_ones(restarted) -> None:
    app, _live, old = restarted
    [publish_until_ok(app, CHANNEL, n) for n in range(3, 5)]
    resumed = ResumingStream(app, [CHANNEL], last_event_id=old[-1])
    try:
        resumed.wait_for(lambda items: [i.n for i in items if i.kind == "event"] == [3, 4])
        assert resumed.items[0].kind == "reset"
        publish_until_ok(app, CHANNEL, 5)
        resumed.wait_for(lambda items: [i.n for i in items if i.kind == "event"] == [3, 4, 5],
                         timeout=10)
    finally:
        resumed.close()


def test_a_new_stream_gets_new_events(restarted) -> None:
    app, _live, _old = restarted
    publish_until_ok(app, CHANNEL, 3)
    fresh = ResumingStream(app, [CHANNEL, "other"])  # a multi-channel stream too
    try:
        publish_until_ok(app, CHANNEL, 4)
        fresh.wait_for(lambda items: 4 in [i.n for i in items], timeout=10)
        assert [i.n for i in fresh.items if i.kind == "event"] == [4]
    finally:
        fresh.close()
