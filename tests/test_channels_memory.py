"""Channels on the in-memory broker: replay, reset, isolation, validation, slow consumers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.channels import Subscriber, publish
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow


def test_live_events_reach_every_subscriber_in_order(core_server: Server) -> None:
    with Subscriber(core_server, "live") as a, Subscriber(core_server, "live") as b:
        ids = [publish(core_server, {"n": n}, "live")["id"] for n in range(20)]
        for sub in (a, b):
            got = sub.events(20)
            assert [json.loads(e.data)["n"] for e in got] == list(range(20))
            assert [e.last_event_id for e in got] == ids
    assert ids == sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1]))  # increasing


def test_replay_after_last_event_id_then_live(core_server: Server) -> None:
    ids = [publish(core_server, {"n": n}, "replay")["id"] for n in range(5)]
    with Subscriber(core_server, "replay", last_event_id=ids[1]) as sub:
        assert [d["n"] for d in sub.data(3)] == [2, 3, 4]
        publish(core_server, {"n": 5}, "replay")
        assert [d["n"] for d in sub.data(4)] == [2, 3, 4, 5]
    # resuming from the newest id replays nothing and misses nothing
    with Subscriber(core_server, "replay", last_event_id=ids[-1]) as sub:
        publish(core_server, {"n": 6}, "replay")
        assert [d["n"] for d in sub.data(2)] == [5, 6]


def test_unknown_id_gets_a_reset_first(core_server: Server) -> None:
    publish(core_server, {"n": 1}, "reset-me")
    with Subscriber(core_server, "reset-me", last_event_id="deadbeef-3") as sub:
        got = sub.events(2)
    assert got[0].type == "reset"
    assert json.loads(got[0].data)["last_event_id"] == "deadbeef-3"
    assert json.loads(got[1].data) == {"n": 1}


def test_channels_are_isolated(core_server: Server) -> None:
    with Subscriber(core_server, "iso-a") as a:
        publish(core_server, {"to": "b"}, "iso-b")
        publish(core_server, {"to": "a"}, "iso-a")
        assert a.data(1) == [{"to": "a"}]


@pytest.mark.parametrize("name", ["", "a b", "x" * 129, "café", "a/b", "a%00b", "*"])
def test_bad_channel_names_get_400_json(core_server: Server, name: str) -> None:
    response = httpx.get(core_server.url + "/stream", params={"channel": name})
    assert response.status_code == 400
    assert "channel" in response.json()["error"]


def test_authorize_hook_guards_subscription_and_replay(core_server: Server) -> None:
    event_id = publish(core_server, {"secret": 1}, "private-1")["id"]
    for headers in ({}, {"Last-Event-ID": event_id}, {"X-User": "eve"}):
        response = httpx.get(core_server.url + "/stream?channel=private-1", headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]
    with Subscriber(core_server, "private-1", headers={"X-User": "admin"}) as sub:
        publish(core_server, {"secret": 2}, "private-1")
        assert sub.data(1) == [{"secret": 2}]


def test_stats_count_streams_and_subscribers(core_server: Server) -> None:
    with Subscriber(core_server, "counted"), Subscriber(core_server, "counted"):
        stats = httpx.get(core_server.url + "/stats").json()
        assert stats["subscribers"]["counted"] == 2
        assert stats["open_streams"] >= 2


@pytest.fixture(scope="module")
def small_server() -> Iterator[Server]:
    with gunicorn_server("tests.apps.core_app:create_app()",
                         env={"TEST_HISTORY": "5", "TEST_QUEUE": "16"}) as server:
        yield server


def test_id_older_than_history_gets_reset_then_what_remains(small_server: Server) -> None:
    ids = [publish(small_server, {"n": n}, "short")["id"] for n in range(10)]
    with Subscriber(small_server, "short", last_event_id=ids[1]) as sub:
        got = sub.events(6)
    assert got[0].type == "reset"
    assert "older" in json.loads(got[0].data)["reason"]
    assert [json.loads(e.data)["n"] for e in got[1:]] == [5, 6, 7, 8, 9]


def test_slow_consumer_is_cut_off_without_growing_memory(small_server: Server) -> None:
    def stats() -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(small_server.url + "/stats").json()
        return body

    rss_before = stats()["rss"]
    slow = Subscriber(small_server, "flood", timeout=30)
    # never read: the socket buffers fill, then the 16-slot queue, then it is cut
    publish(small_server, channel="flood", count=400, size=64 * 1024)
    after = stats()
    assert after["subscribers"].get("flood", 0) == 0  # dropped, not buffered
    assert after["rss"] - rss_before < 8 * 1024 * 1024
    slow.close()
