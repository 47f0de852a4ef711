"""The caps on running chat replies hold after a thousand racing starts and stops on
the three protocols (a real gunicorn gevent worker, memory store and Redis): every stream
ends properly or is refused with a 429, ``chat.running`` (the example app's ``/healthz``)
goes back to 0, every start is counted once, and a new reply starts afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial

import pytest

from tests.fake_openai import FakeOpenAI
from tests.races import (
    JSON,
    StreamEnd,
    chat_counts,
    example_env,
    native_close,
    openai_body,
    redis_for,
    running_settles,
    stops,
    stream_to_end,
    together,
    ui_body,
    ui_ended_properly,
)
from tests.rawsse import open_stream
from tests.servers import Server, gunicorn_server

pytestmark = pytest.mark.slow

WAIT = 6.0  # seconds a stream gets to end; a reply here takes a few hundredths

STARTS = int(os.environ.get("FSS_RACE_STARTS", "1000"))
CLIENTS = 24  # threads firing them
CAP = 48  # CHAT_MAX_GENERATIONS: some starts meet it, which is part of the race


@pytest.fixture(params=["memory", "redis"])
def capped(request: pytest.FixtureRequest) -> Iterator[Server]:
    """The example app in front of a fake upstream with short replies (eight pieces), so
    a thousand replies fit in seconds; a grace period of one second."""
    with FakeOpenAI(pieces=[f"piece {n} " for n in range(8)], delay=0.005) as fake:
        env = example_env(request.param, redis_for(request), 11, FLASK_CHAT_BACKEND="openai",
                          FLASK_OPENAI_BASE_URL=fake.base_url, FLASK_OPENAI_API_KEY="sk-test",
                          FLASK_CHAT_GRACE_SECONDS="1", FLASK_CHAT_MAX_GENERATIONS=str(CAP))
        with gunicorn_server(env=env) as server:
            yield server


def test_caps_hold_after_many_racing_starts_and_stops(capped: Server) -> None:
    """A thousand starts on the three protocols from many clients at once: AI SDK POSTs
    replacing each other's replies in a few shared chats, replies stopped by two DELETEs
    at once, clients that drop an OpenAI stream. Each start is a stream that ends
    properly (``finish``/``abort`` + ``[DONE]``, a ``close`` event, the OpenAI
    ``[DONE]``) or a 429; afterwards nothing is counted as running, every start was
    counted once, and a new reply starts."""
    base = capped.url
    before = chat_counts(capped)["started"]
    def client(c: int) -> list[str]:
        return [racing_start(base, i) for i in range(c, STARTS, CLIENTS)]

    parts = together([partial(client, c) for c in range(CLIENTS)], timeout=100)
    outcomes = [o for part in parts for o in part]
    bad = [o for o in outcomes if o not in ("ended", "refused", "dropped")]
    running = running_settles(capped, timeout=15.0)
    assert (bad[:3], running) == ([], 0), (
        f"{len(bad)} of {len(outcomes)} starts did not end properly; "
        f"chat.running stays {running}")
    assert chat_counts(capped)["started"] - before == sum(o != "refused" for o in outcomes)
    end = stream_to_end(base + "/chat/stream?message=after+the+storm", wait=WAIT)
    assert end.status == 200 and native_close(end.body) == "stop"


def racing_start(base: str, i: int) -> str:
    """One start of kind ``i % 6``: "ended", "refused" (429), "dropped" (the client went
    away on purpose), or what went wrong."""
    kind = i % 6
    if kind in (0, 1):  # replace: a few chats shared by every client
        return ui_outcome(stream_to_end(base + "/api/chat", "POST", headers=JSON,
                                        body=ui_body(f"pool-{i % 5}", "hi"), wait=WAIT))
    if kind == 2:  # an AI SDK reply stopped twice at once
        chat = f"stopped-{i}"
        return ui_outcome(stream_to_end(
            base + "/api/chat", "POST", body=ui_body(chat, "stop"), headers=JSON, wait=WAIT,
            until=b'"text-delta"', then=stops(2, lambda _h: f"{base}/api/chat/{chat}/stream")))
    if kind == 3:  # a native reply stopped twice at once
        end = stream_to_end(f"{base}/chat/stream?message=stop+{i}", wait=WAIT,
                            until=b'"content"',
                            then=stops(2, lambda h: f"{base}/chat/stream/{h['x-stream-id']}"))
        if end.status == 429:
            return "refused"
        return "ended" if end.ended and native_close(end.body) else f"native: {end.body[-200:]!r}"
    if kind == 4:  # a client that drops an OpenAI stream after its first chunk
        with open_stream(base + "/v1/chat/completions", "POST", body=openai_body(f"hi {i}"),
                         headers=JSON, timeout=WAIT) as resp:
            if resp.status == 429:
                return "refused"
            resp.read_until(b"chat.completion.chunk")
        return "dropped"
    end = stream_to_end(base + "/v1/chat/completions", "POST", body=openai_body(f"hi {i}"),
                        headers=JSON, wait=WAIT)
    if end.status == 429:
        return "refused"
    done = end.ended and end.body.rstrip().endswith(b"data: [DONE]")
    return "ended" if done else f"openai: {end.body[-200:]!r}"


def ui_outcome(end: StreamEnd) -> str:
    if end.status == 429:
        return "refused"
    return "ended" if ui_ended_properly(end) else f"ai sdk: {end.status} {end.body[-200:]!r}"
