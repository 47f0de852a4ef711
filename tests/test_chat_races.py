"""Racing starts, replacements and stops of chat replies on real gunicorn gevent workers:
every stream ends (``finish``/``abort`` and ``[DONE]``, or a ``close`` event), the caps
count only what really runs (``chat.running`` back to 0 on the example app's
``/healthz``), and a chat id keeps pointing at its running reply; with the memory store
and with Redis. (A thousand mixed racing starts: ``test_chat_caps_races.py``.)

The races are driven through barriers and back-to-back writes and repeated (``TRIES``):
a race lost once in ten tries must still fail here. Reads have deadlines, so a stream
that never ends fails its try instead of hanging the test, and a try loop stops early
once ``STOP_AFTER`` tries have failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

import httpx
import pytest

from tests.races import (
    JSON,
    STOP_AFTER,
    TRIES,
    example_env,
    native_close,
    read_to_end,
    redis_for,
    running_settles,
    stops,
    stream_to_end,
    together,
    ui_body,
    ui_ended_properly,
)
from tests.rawsse import RawResponse, open_stream
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow

WAIT = 6.0  # seconds a stream gets to end; a demo reply here takes well under one
STOPS = 8  # DELETEs fired at once at one reply
ABORTED = {"type": "abort"}


@pytest.fixture(params=["memory", "redis"])
def example(request: pytest.FixtureRequest) -> Iterator[Server]:
    """The example app on one gevent worker, with the given chat store; a reply takes
    about half a second, so a stop lands while it runs."""
    with gunicorn_server(env=example_env(request.param, redis_for(request), 9)) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def quick_example(request: pytest.FixtureRequest) -> Iterator[Server]:
    """The same with replies of about a tenth of a second."""
    env = example_env(request.param, redis_for(request), 9, FLASK_CHAT_DEMO_DELAY="0.002")
    with gunicorn_server(env=env) as server:
        yield server


# -- one chat id, several POSTs at once ------------------------------------------------------


def test_concurrent_posts_for_one_chat_all_end_and_release_their_slots(
        quick_example: Server) -> None:
    """A double submit, a retry and a second tab post the same chat id at once: each
    later POST replaces the reply before it, possibly before that reply ever ran. Every
    one of the streams still ends (``finish`` or ``abort``, then ``[DONE]``) and nothing
    stays counted as running."""
    stranded = tries = 0
    while tries < TRIES and stranded < STOP_AFTER:
        body = ui_body(f"race-{tries}", f"double submit number {tries}")
        tries += 1
        post = partial(stream_to_end, quick_example.url + "/api/chat", "POST", body=body,
                       headers=JSON, wait=WAIT)
        ends = together([post] * 3)
        assert [end.status for end in ends] == [200] * 3
        stranded += not all(ui_ended_properly(end) for end in ends)
    running = running_settles(quick_example)
    assert (stranded, running) == (0, 0), (
        f"{stranded} of {tries} tries left a stream without an end; "
        f"chat.running stays {running}")


# -- several stops at once -------------------------------------------------------------------


def stop_native(base: str, n: int) -> bool:
    """A native reply stopped by ``STOPS`` DELETEs at once: did it end as cancelled?"""
    end = stream_to_end(f"{base}/chat/stream?message=stop+me+{n}", wait=WAIT,
                        until=b'"content"',
                        then=stops(STOPS, lambda h: f"{base}/chat/stream/{h['x-stream-id']}"))
    return end.ended and native_close(end.body) == "cancelled"


def stop_ai_sdk(base: str, n: int) -> bool:
    """The same for an AI SDK reply (DELETE /<chat_id>/stream): an ``abort``?"""
    chat = f"stop-{n}"
    end = stream_to_end(base + "/api/chat", "POST", body=ui_body(chat, "stop me"),
                        headers=JSON, wait=WAIT, until=b'"text-delta"',
                        then=stops(STOPS, lambda _h: f"{base}/api/chat/{chat}/stream"))
    return ui_ended_properly(end) and end.chunks()[-2] == ABORTED


@pytest.mark.parametrize("stop", [stop_native, stop_ai_sdk], ids=["native", "ai_sdk"])
def test_simultaneous_stops_end_the_reply_once_and_release_its_slot(
        example: Server, stop) -> None:
    """Several DELETEs for one running reply at the same instant (two tabs pressing
    Stop, a retried DELETE): the later ones land while the first one's cancel writes the
    close entry. The stream ends as cancelled and the generation stops counting, every
    time."""
    leaked = unended = tries = 0
    while tries < TRIES and leaked + unended < STOP_AFTER:
        unended += not stop(example.url, tries)
        tries += 1
        if running_settles(example, target=leaked, timeout=3.0) > leaked:
            leaked += 1  # it stays counted for good: the next tries count from there
    assert (leaked, unended) == (0, 0), (
        f"of {tries} tries, {leaked} left their generation counted as running and "
        f"{unended} streams did not end as cancelled")


# -- a replaced reply and the chat's alias (Redis, two workers) ----------------------------


REPLACE_ROUNDS = max(1, TRIES * 4 // 3)  # per thread
REPLACE_THREADS = 4


@pytest.fixture
def two_workers(redis: Server) -> Iterator[Server]:
    env = example_env("redis", redis, 10, FLASK_CHAT_DEMO_DELAY="0.05", WEB_CONCURRENCY="2")
    with gunicorn_server(env=env) as server:
        yield server


def test_the_chat_keeps_pointing_at_the_reply_that_replaced_another(two_workers: Server) -> None:
    """A new POST for a chat replaces its running reply A with B. When A's end is
    recorded, the chat must still point at B, whichever worker runs which: a resume gets
    B (200) and a DELETE stops B (204), never 204 and 404 while B streams on."""
    base = two_workers.url

    def rounds(thread: int) -> list[str]:
        lost: list[str] = []
        for n in range(REPLACE_ROUNDS):
            chat = f"replace-{thread}-{n}"
            with ai_post(base, chat, "the first reply") as first, \
                    ai_post(base, chat, "the reply that replaces it"):
                read_to_end(first, time.monotonic() + WAIT)  # A ended (aborted)
                with httpx.stream("GET", f"{base}/api/chat/{chat}/stream",
                                  timeout=WAIT) as resumed:
                    resumed_status = resumed.status_code  # the head is enough
                stopped = httpx.delete(f"{base}/api/chat/{chat}/stream", timeout=WAIT)
                if (resumed_status, stopped.status_code) != (200, 204):
                    lost.append(f"{chat}: resume {resumed_status}, stop {stopped.status_code}")
            if len(lost) >= STOP_AFTER:
                break
        return lost

    parts = together([partial(rounds, t) for t in range(REPLACE_THREADS)], timeout=110)
    lost = [x for part in parts for x in part]
    assert not lost, f"{len(lost)} replaced chats lost their reply: {lost}"


def ai_post(base: str, chat: str, text: str) -> RawResponse:
    """A started AI SDK reply, read up to its first text delta."""
    resp = open_stream(base + "/api/chat", "POST", body=ui_body(chat, text), headers=JSON,
                       timeout=WAIT)
    assert resp.status == 200
    resp.read_until(b'"text-delta"')
    return resp
