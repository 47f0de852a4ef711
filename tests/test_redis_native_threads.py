"""Publishing to the Redis broker from native threads (gevent's threadpool, beside the
hub of a gunicorn gevent worker) either works or fails clearly: each publish is
delivered exactly once and returns, or raises ``BrokerError`` and is not delivered (so a
caller that retries does not duplicate it). Never a ``greenlet.error`` about switching
threads, as the memory broker never raises one either."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import connect_sse

from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow

PUBLISHES = 1000


@pytest.fixture(scope="module", params=["redis", "memory"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    url = "memory://"
    if request.param == "redis":
        url = f"redis://127.0.0.1:{request.getfixturevalue('redis').port}/12"
    with gunicorn_server("tests.apps.native_threads_app:create_app()", config=None,
                         env={"FLASK_SSE_BROKER_URL": url},
                         args=("--no-control-socket",)) as server:
        yield server


def test_publishes_from_native_threads_are_delivered_once_or_raise_broker_error(
        server: Server) -> None:
    channel = f"threads-{uuid.uuid4().hex[:8]}"
    sentinel = {"sentinel": True}  # dicts travel as JSON (a str would be sent as is)
    delivered: Counter[int] = Counter()
    done = threading.Event()
    with httpx.Client(base_url=server.url, timeout=60) as client, \
            connect_sse(client, "GET", "/stream", params={"channel": channel}) as source:
        assert source.response.status_code == 200  # subscribed from here on

        def read() -> None:
            try:
                for event in source.iter_sse():
                    data = json.loads(event.data)
                    if data == sentinel:
                        break
                    delivered[data["i"]] += 1
            finally:
                done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        outcomes = client.post("/publish-from-threads",
                               params={"channel": channel, "n": PUBLISHES}).json()["outcomes"]
        # published after every thread's publish returned: it comes after all of them
        assert client.post("/publish", json={"channel": channel,
                                             "data": sentinel}).status_code == 200
        assert done.wait(30), "the stream ended or stalled before the sentinel"
    kinds = Counter(o if o in ("ok", "BrokerError") else o.partition(":")[0] for o in outcomes)
    assert set(kinds) <= {"ok", "BrokerError"}, (
        f"publishes from native threads raised {dict(kinds)}; e.g. "
        f"{next(o for o in outcomes if o not in ('ok', 'BrokerError'))}")
    wrong = {i: (outcome, delivered[i]) for i, outcome in enumerate(outcomes)
             if delivered[i] != (1 if outcome == "ok" else 0)}
    assert not wrong, f"(outcome, times delivered) of {len(wrong)} publishes: {wrong}"
