"""An app for the direct-write stress test (issue 13), run under real gunicorn.

Events of random sizes (1 byte to 256 KiB) with random pauses, from a generator view and
from a server-side publish loop, so writes from the producer side (direct) and from the
writer greenlet (queued, partial-write tails) interleave. The payloads are derived from a
seed, so the client can rebuild exactly what it must receive. ``/stats`` counts how the
direct path was taken (the counting wrapper is installed here, in the test app only).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, request

from flask_sse_stream import SSE, sse_stream
from flask_sse_stream.stream.direct import DirectWriter

COUNTS = {"direct": 0, "partial": 0, "refused": 0, "finally": 0}
_direct_write = DirectWriter.write


def _counting_direct_write(self: Any, chunk: bytes) -> bool:
    taken: bool = _direct_write(self, chunk)
    if not taken:
        COUNTS["refused"] += 1
    elif self.tail is not None:
        COUNTS["partial"] += 1
    else:
        COUNTS["direct"] += 1
    return taken


DirectWriter.write = _counting_direct_write  # type: ignore[method-assign]

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def iter_payloads(seed: int, n: int) -> Iterator[str]:
    """The ``n`` event payloads of ``seed``: mostly small, some large (up to 256 KiB)."""
    rnd = random.Random(seed)
    for i in range(n):
        size = rnd.choice((1, 10, 100, 1000, 20_000, 100_000, 262_144))
        size = rnd.randint(1, size)
        fill = ALPHABET[rnd.randrange(len(ALPHABET))]
        yield f"{seed}:{i}:" + fill * size


def payloads(seed: int, n: int) -> list[str]:
    return list(iter_payloads(seed, n))


def pause(rnd: random.Random) -> None:
    """No pause, a bare yield to the hub, a short sleep, or one past a heartbeat."""
    kind = rnd.random()
    if kind < 0.4:
        return
    if kind < 0.7:
        time.sleep(0)
    elif kind < 0.95:
        time.sleep(rnd.uniform(0.0005, 0.005))
    else:
        time.sleep(rnd.uniform(0.06, 0.12))  # past the 0.05 s heartbeat


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SSE_HEARTBEAT_INTERVAL"] = 0.05
    app.config["SSE_SUBSCRIBER_QUEUE"] = 100_000  # the slow reader must not be dropped
    app.config["SSE_DIRECT_WRITE"] = os.environ.get("TEST_DIRECT_WRITE", "1") != "0"
    sse = SSE(app)

    @app.get("/mixed")
    @sse_stream
    def mixed() -> Any:
        seed = int(request.args["seed"])
        n = int(request.args["n"])
        rnd = random.Random(seed * 7 + 1)
        try:
            for data in iter_payloads(seed, n):
                pause(rnd)
                yield data
        finally:
            COUNTS["finally"] += 1

    @app.get("/hang")
    @sse_stream
    def hang() -> Any:
        try:
            yield "started"
            time.sleep(3600)
            yield "never"
        finally:
            COUNTS["finally"] += 1

    @app.post("/burst")
    def burst() -> dict[str, Any]:
        seed = int(request.args["seed"])
        rnd = random.Random(seed * 7 + 1)
        for data in iter_payloads(seed, int(request.args["n"])):
            pause(rnd)
            sse.publish(data, channel="stress")
        return {"ok": True}

    @app.get("/flood")
    @sse_stream
    def flood() -> Any:
        # a burst: every event yielded without waiting in between
        yield from (f"flood:{i}" for i in range(int(request.args["n"])))

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return {**COUNTS, **sse.stats()}

    return app


class HoldOneBack:
    """A WSGI middleware that passes each chunk on only when the next one arrives (as a
    buffering or compressing middleware does): a chunk written past it, straight to the
    socket, would overtake the one it holds."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        body = self.app(environ, start_response)
        try:
            held = None
            for chunk in body:
                if held is not None:
                    yield held
                held = chunk
            if held is not None:
                yield held
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


def create_wrapped_app() -> Flask:
    """The same app behind :class:`HoldOneBack`."""
    app = create_app()
    app.wsgi_app = HoldOneBack(app.wsgi_app)  # type: ignore[method-assign]
    return app
