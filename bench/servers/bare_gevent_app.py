"""The ceiling: a minimal WSGI SSE app on gunicorn's gevent worker.

A plain set of gevent queues; each publish pre-encodes the event once and puts the same
bytes in every subscriber's queue. Heartbeats while idle; a disconnect is only noticed
when a write fails (there is nothing else watching the socket).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import gevent
from common import CHANNEL, HEARTBEAT, Schedule, float_arg, int_arg, stamp
from gevent.queue import Empty, Queue

subscribers: set[Queue] = set()
state = {"open_streams": 0}
SSE_HEADERS = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache, no-store, no-transform"),
    ("X-Accel-Buffering", "no"),
]
StartResponse = Callable[..., Any]


def _stream() -> Iterator[bytes]:
    q: Queue = Queue()
    subscribers.add(q)
    state["open_streams"] += 1
    try:
        yield b": open\n"
        while True:
            try:
                item = q.get(timeout=HEARTBEAT)
            except Empty:
                yield b": hb\n"
                continue
            yield item
    finally:
        subscribers.discard(q)
        state["open_streams"] -= 1


def _chat(tokens: int, rate: float) -> Iterator[bytes]:
    state["open_streams"] += 1
    try:
        yield b": open\n"
        sched = Schedule(1.0 / rate)
        for i in range(1, tokens + 1):
            delay = sched.delay(i)
            if delay > 0:
                gevent.sleep(delay)
            yield f"data: {stamp(i, sched.due(i))}\n\n".encode()
    finally:
        state["open_streams"] -= 1


def _publish(args: dict[str, list[str]], body: bytes) -> dict[str, Any]:
    count = int_arg(args, "count", 1, 1_000_000)
    sched = Schedule(float_arg(args, "interval", 0.0, 60.0))
    warm = "warm" in args
    for i in range(count):
        data = body.decode() if body else stamp(-1 if warm else i)
        payload = "".join(f"data: {line}\n" for line in data.splitlines()) + "\n"
        raw = payload.encode()
        for q in tuple(subscribers):
            q.put_nowait(raw)
        delay = sched.delay(i + 1)
        gevent.sleep(delay if delay > 0 else 0)
    return {"published": count, "subscribers": len(subscribers)}


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes] | list[bytes]:
    path = environ.get("PATH_INFO", "/")
    args = parse_qs(environ.get("QUERY_STRING", ""))
    method = environ.get("REQUEST_METHOD", "GET")
    if path == "/stream" and method == "GET":
        start_response("200 OK", SSE_HEADERS)
        return _stream()
    if path == "/chat" and method == "GET":
        start_response("200 OK", SSE_HEADERS)
        return _chat(
            int_arg(args, "tokens", 20, 100_000), float_arg(args, "rate", 20.0, 1e4) or 20.0
        )
    if path == "/publish" and method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        out = _publish(args, body)
    elif path == "/stats":
        out = {"open_streams": state["open_streams"], "subscribers": {CHANNEL: len(subscribers)}}
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    raw = json.dumps(out).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(raw)))]
    )
    return [raw]
