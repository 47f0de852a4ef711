"""After a lost connection: which positions the server now serving a key does not hold,
and whether the feed must rewind (its ids went backwards); a chat follower telling a
seq jump; the broker URL schemes and the WAIT settings checked at startup. Pure logic,
with a stand-in pipeline (the real servers are in tests/test_redis_*.py)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from flask_sse_stream.brokers import broker_kind
from flask_sse_stream.chat.store.redis import ChatCodec
from flask_sse_stream.redis.recovery import lost_positions
from flask_sse_stream.settings import load_settings


class Pipeline:
    """Answers XRANGE P P and XREVRANGE + - COUNT 1 from ``streams`` (key -> ids)."""

    def __init__(self, streams: dict[str, list[str]], errors: dict[str, Exception] | None = None):
        self.streams = streams
        self.errors = errors or {}
        self.queued: list[Any] = []

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def xrange(self, key: str, min: str, max: str, count: int) -> None:
        ids = self.streams.get(key, [])
        self.queued.append(self.errors.get(key) or [(i, {}) for i in ids if i == min][:count])

    def xrevrange(self, key: str, count: int) -> None:
        ids = self.streams.get(key, [])
        self.queued.append(self.errors.get(key) or [(i, {}) for i in ids[::-1][:count]])

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        return self.queued


NOW = 1_000_000  # the server's clock, ms


def test_a_held_position_is_not_lost() -> None:
    pipe = Pipeline({"a": ["900000-0", "900001-0"]})
    assert lost_positions(pipe, {"a": "900000-0"}, NOW) == {}


def test_a_lost_position_with_newer_entries_goes_on_after_it() -> None:
    # a lossy failover, and the new primary got new entries since: no rewind
    pipe = Pipeline({"a": ["900000-0", "950000-0"]})
    assert lost_positions(pipe, {"a": "900500-0"}, NOW) == {"a": False}


def test_a_lossy_failover_keeps_a_prefix_and_goes_on_after_the_position() -> None:
    # the newest held entry is below the position, but the clock is past it: the held
    # entries were read already, new ones get larger ids
    pipe = Pipeline({"a": ["900000-0", "900001-0"]})
    assert lost_positions(pipe, {"a": "900002-0"}, NOW) == {"a": False}


def test_ids_that_went_backwards_rewind() -> None:
    # restarted without data on a clock 600 s behind the position
    pipe = Pipeline({"a": ["400000-0", "400001-0"]})
    assert lost_positions(pipe, {"a": "1000000-5"}, NOW - 600_000 + 10) == {"a": True}


def test_a_missing_stream_rewinds_only_when_the_clock_is_behind() -> None:
    assert lost_positions(Pipeline({}), {"a": "2000000-0"}, NOW) == {"a": True}
    assert lost_positions(Pipeline({}), {"a": "900000-0"}, NOW) == {"a": False}


def test_a_key_that_is_no_stream_is_left_to_the_reads() -> None:
    wrong = redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    assert lost_positions(Pipeline({}, {"a": wrong}), {"a": "900000-0"}, NOW) == {}


def test_other_errors_fail_the_whole_check() -> None:
    with pytest.raises(redis.ConnectionError):
        lost_positions(Pipeline({}, {"a": redis.ConnectionError("gone")}),
                       {"a": "900000-0"}, NOW)


def test_several_keys_in_one_check() -> None:
    pipe = Pipeline({"held": ["1-0"], "lost": ["1-0"], "back": ["5-0"]})
    points = {"held": "1-0", "lost": "2-0", "back": "2000000-0"}
    assert lost_positions(pipe, points, NOW) == {"lost": False, "back": True}


def entry(seq: int, final: bool = False) -> dict[bytes, bytes]:
    fields = {b"q": str(seq).encode(), b"c": f"seq {seq}\n\n".encode()}
    if final:
        fields[b"f"] = b"1"
    return fields


def test_a_chat_follower_passes_consecutive_entries() -> None:
    codec = ChatCodec("s1")
    codec.start(entry(3))
    assert codec.entry("1-0", entry(4)) == (b"seq 4\n\n", False)
    assert codec.entry("2-0", entry(5, final=True)) == (b"seq 5\n\n", True)


def test_a_chat_follower_ends_with_an_error_at_a_seq_jump() -> None:
    codec = ChatCodec("s1")
    codec.start(entry(3))
    chunk, final = codec.entry("1-0", entry(6))  # 4 and 5 were lost
    assert final and b'"finish_reason":"error"' in chunk.replace(b" ", b"")
    assert b"id: s1:4" in chunk  # the close takes the next seq the follower expects


def test_a_chat_follower_started_on_an_empty_stream_takes_the_first_seq() -> None:
    codec = ChatCodec("s1")
    codec.start(None)
    assert codec.entry("1-0", entry(0)) == (b"seq 0\n\n", False)  # the marker
    assert codec.entry("2-0", entry(1))[1] is False


@pytest.mark.parametrize("url", [
    "redis+cluster://a:1,b:2", "rediss+cluster://a:1", "REDIS+CLUSTER://a:1",
    "redis+sentinel://a:26379,b:26379/mymaster", "rediss+sentinel://a/m/2",
])
def test_cluster_and_sentinel_urls_name_the_redis_store(url: str) -> None:
    assert broker_kind(url) == "redis"


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+sentinel://a:1",
                                 "redis+cluster://a:1/3", "redis+sentinel://a:x/m"])
def test_a_bad_cluster_or_sentinel_url_fails_at_startup(url: str) -> None:
    with pytest.raises(ValueError, match="SSE_BROKER_URL"):
        load_settings({"SSE_BROKER_URL": url})


def test_an_unknown_scheme_error_hides_the_password() -> None:
    with pytest.raises(ValueError) as caught:
        broker_kind("redis+proxy://user:secret@h:1")
    assert "secret" not in str(caught.value)


def test_the_wait_settings_are_checked() -> None:
    settings = load_settings({"SSE_REDIS_WAIT_REPLICAS": "1", "SSE_REDIS_WAIT_TIMEOUT": "0.2"})
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout) == (1, 0.2)
    assert load_settings({}).redis_wait_replicas == 0
    for key, value in [("SSE_REDIS_WAIT_REPLICAS", -1), ("SSE_REDIS_WAIT_REPLICAS", 1.5),
                       ("SSE_REDIS_WAIT_TIMEOUT", 0), ("SSE_REDIS_WAIT_TIMEOUT", 5),
                       ("SSE_REDIS_WAIT_TIMEOUT", None)]:
        with pytest.raises(ValueError, match=key):
            load_settings({key: value})
