"""Redis refuses mid-stream (OOM, NOPERM, WRONGTYPE): no stream waits forever, and the
service comes back when Redis does. Real redis-server, real gunicorn gevent worker."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis as redis_py

from tests.channels import Subscriber, publish
from tests.servers import Server, gunicorn_server, redis_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[Server, redis_py.Redis]]:
    with redis_server() as redis:
        admin = redis_py.Redis(port=redis.port)
        admin.acl_setuser("app", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                          commands=["+@all"])
        env = {"TEST_BROKER_URL": f"redis://app:pw@127.0.0.1:{redis.port}/0",
               "TEST_HEARTBEAT": "0.3"}
        with gunicorn_server("tests.apps.core_app:create_app()", env=env) as app:
            yield app, admin
        admin.close()


def try_publish(app: Server, data: object, channel: str) -> httpx.Response:
    return httpx.post(app.url + "/publish", json={"data": data, "channel": channel}, timeout=30)


def test_out_of_memory_refuses_publishes_and_streams_carry_on(setup) -> None:
    app, admin = setup
    with Subscriber(app, "oom") as sub:
        publish(app, {"n": 1}, "oom")
        assert sub.data(1) == [{"n": 1}]
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        try:
            refused = try_publish(app, {"n": 2}, "oom")
            assert refused.status_code == 503 and "maxmemory" in refused.json()["error"]
            assert sub.resp.read_chunk().startswith(b":")  # still open, heartbeating
        finally:
            admin.config_set("maxmemory", "0")
        publish(app, {"n": 3}, "oom")
        assert sub.data(2) == [{"n": 1}, {"n": 3}]


def test_a_key_that_is_not_a_stream_ends_only_its_own_streams(setup) -> None:
    app, admin = setup
    with Subscriber(app, "fine") as good, Subscriber(app, "spoiled") as bad:
        publish(app, {"n": 1}, "fine")
        publish(app, {"n": 1}, "spoiled")
        assert good.data(1) == bad.data(1) == [{"n": 1}]
        admin.delete("sse:spoiled")
        admin.set("sse:spoiled", "not a stream")
        try:
            tail = bad.read_to_end()  # ends (with a retry: hint) instead of waiting
            assert tail.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"retry: ")
            assert try_publish(app, 1, "spoiled").status_code == 503  # WRONGTYPE
            publish(app, {"n": 2}, "fine")
            assert good.data(2) == [{"n": 1}, {"n": 2}]  # the other channel carries on
        finally:
            admin.delete("sse:spoiled")


def test_no_permission_to_read_ends_streams_then_they_resume(setup) -> None:
    app, admin = setup
    sub = Subscriber(app, "perm", timeout=40)
    publish(app, {"n": 0}, "perm")
    assert sub.data(1) == [{"n": 0}]
    admin.acl_setuser("app", enabled=True, commands=["-xread"])
    try:
        for n in range(1, 4):
            publish(app, {"n": n}, "perm")  # XADD is still allowed
        # (an XREAD already blocked may still deliver the first of them)
        tail = sub.read_to_end()  # after LOST_AFTER of NOPERM: a reconnect hint
        assert tail.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"retry: ")
        events = sub.events(1)
        before = [int(e.data.split(":")[1].rstrip("}")) for e in events]
    finally:
        admin.acl_setuser("app", enabled=True, commands=["+xread"])
        sub.close()
    assert before[0] == 0 and len(before) < 4
    with Subscriber(app, "perm", last_event_id=events[-1].last_event_id) as again:
        rest = [d["n"] for d in again.data(4 - len(before))]
        assert before + rest == [0, 1, 2, 3]  # nothing lost, nothing doubled
        publish(app, {"n": 4}, "perm")
        assert again.data(5 - len(before))[-1] == {"n": 4}


def test_a_thousand_channels_on_a_gevent_worker_keep_connections_constant(setup) -> None:
    from concurrent.futures import ThreadPoolExecutor

    app, admin = setup
    baseline = len(admin.client_list())
    peak = 0

    def visit(n: int) -> None:
        with Subscriber(app, f"visit-{n}") as sub:
            sub.resp.read_chunk()  # subscribed (the head comes after the subscribe)

    with ThreadPoolExecutor(25) as pool:
        for start in range(0, 1000, 100):
            list(pool.map(visit, range(start, start + 100)))
            peak = max(peak, len(admin.client_list()) - baseline)
    with Subscriber(app, "visit-last") as sub:  # the reader still serves new channels
        publish(app, {"n": 1}, "visit-last")
        assert sub.data(1) == [{"n": 1}]
    print(f"\n1000 channels opened and closed on one gevent worker: at most +{peak} "
          f"Redis connections")
    assert peak <= 34  # the bounded command pool (32) and the one reader, never more
