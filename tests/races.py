"""Helpers for race tests: fire requests at the same instant, read streams to their end
within a deadline, and wait (bounded) for a server's counters to settle.

A stranded stream (one that never ends) must fail a test, not hang it: every read here
has a deadline, and a stream that is still open when it passes is reported as such.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from tests.rawsse import RawResponse, open_stream
from tests.servers import Server
from tests.sse_parser import parse

T = TypeVar("T")

# Race tests repeat a try TRIES times and stop early once STOP_AFTER tries have failed
# (each failed try costs a full deadline). Raise them to measure how often a race is lost:
# FSS_RACE_TRIES=30 FSS_RACE_STOP_AFTER=30 pytest tests/test_chat_races.py -o timeout=600
TRIES = int(os.environ.get("FSS_RACE_TRIES", "20"))
STOP_AFTER = int(os.environ.get("FSS_RACE_STOP_AFTER", "3"))

JSON = {"Content-Type": "application/json"}


@dataclass
class StreamEnd:
    """What a stream delivered before it ended or the deadline passed."""

    status: int
    headers: dict[str, str]
    body: bytes
    ended: bool  # the server ended the response (last chunk / EOF) before the deadline

    def chunks(self) -> list[Any]:
        """The ``data:`` payloads, JSON-decoded (``[DONE]`` as is)."""
        return [e.data if e.data == "[DONE]" else json.loads(e.data)
                for e in parse(self.body).events]


def read_to_end(resp: RawResponse, deadline: float) -> tuple[bytes, bool]:
    """Body bytes until the response ends (True) or ``deadline`` (monotonic) passes
    (False: the stream was still open)."""
    body = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(body), False
        resp.sock.settimeout(left)
        try:
            chunk = resp.read_chunk()
        except TimeoutError:
            return bytes(body), False
        except (EOFError, OSError):  # the connection ended, if not cleanly
            return bytes(body), True
        if not chunk:
            return bytes(body), True
        body += chunk


def stream_to_end(url: str, method: str = "GET", *, body: bytes = b"",
                  headers: dict[str, str] | None = None, wait: float = 10.0,
                  until: bytes | None = None,
                  then: Callable[[dict[str, str]], object] | None = None) -> StreamEnd:
    """Open a raw stream, read it to its end within ``wait`` seconds. With ``until``,
    first read up to that marker and call ``then(response_headers)`` (e.g. to cancel),
    then read on."""
    deadline = time.monotonic() + wait
    headers = {"Connection": "close", **(headers or {})}  # a refusal's body ends at EOF
    with open_stream(url, method, headers=headers, body=body, timeout=wait) as resp:
        head = b""
        if until is not None and resp.status == 200:
            head = _read_marker(resp, until, deadline)
            if then is not None:
                then(resp.headers)
        rest, ended = read_to_end(resp, deadline)
        return StreamEnd(resp.status, resp.headers, head + rest, ended)


def _read_marker(resp: RawResponse, marker: bytes, deadline: float) -> bytes:
    body = b""
    while marker not in body:
        resp.sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = resp.read_chunk()
        if not chunk:
            break
        body += chunk
    return body


def example_env(store: str, redis: Server | None, db: int, **extra: str) -> dict[str, str]:
    """The example app's environment: one worker, a fast demo backend, the given store."""
    env = {"FLASK_CHAT_DEMO_DELAY": "0.01", "WEB_CONCURRENCY": "1", **extra}
    if store == "redis":
        assert redis is not None
        env["FLASK_SSE_BROKER_URL"] = f"redis://127.0.0.1:{redis.port}/{db}"
    return env


def redis_for(request: Any) -> Server | None:
    """The session's redis-server for a fixture parametrized ``"memory"``/``"redis"``."""
    return request.getfixturevalue("redis") if request.param == "redis" else None


def together(calls: Sequence[Callable[[], T]], timeout: float = 60.0) -> list[T]:
    """Run ``calls`` in threads released by one barrier, so they hit the server at the
    same instant; their results in order (an exception is re-raised)."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait(timeout)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        return [f.result(timeout) for f in futures]


def burst(url: str, requests: Sequence[bytes], timeout: float = 10.0) -> list[int]:
    """Send each raw HTTP/1.1 request (``Connection: close``) on its own connection, all
    connected first and then written back to back from one thread, so the server reads
    them within microseconds of each other; their status codes, in order."""
    parts = urlsplit(url)
    socks = [socket.create_connection((parts.hostname, parts.port), timeout=timeout)
             for _ in requests]
    try:
        for sock, request in zip(socks, requests, strict=True):
            sock.sendall(request)
        statuses = []
        for sock in socks:
            head = b""
            while b"\r\n" not in head:
                data = sock.recv(4096)
                if not data:
                    raise EOFError(f"closed before the status line: {head!r}")
                head += data
            statuses.append(int(head.split(b" ", 2)[1]))
        return statuses
    finally:
        for sock in socks:
            sock.close()


def raw_request(url: str, method: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> bytes:
    """The bytes of one HTTP/1.1 request for ``url`` that closes its connection."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close",
             f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def stops(count: int, url_for: Callable[[dict[str, str]], str]
          ) -> Callable[[dict[str, str]], list[int]]:
    """A ``then`` for :func:`stream_to_end`: ``count`` DELETEs of ``url_for(headers)``
    fired at once (see :func:`burst`)."""
    def fire(headers: dict[str, str]) -> list[int]:
        url = url_for(headers)
        return burst(url, [raw_request(url, "DELETE")] * count)

    return fire


def chat_counts(server: Server) -> dict[str, int]:
    """``sse.stats()["chat"]`` of the example app's ``/healthz`` (one worker)."""
    return httpx.get(server.url + "/healthz", timeout=10).json()["chat"]  # type: ignore[no-any-return]


def wait_until(check: Callable[[], T], done: Callable[[T], bool],
               timeout: float = 10.0, every: float = 0.1) -> T:
    """Poll ``check()`` until ``done(value)`` or ``timeout``; returns the last value (the
    caller asserts on it). For state a server exposes only by being asked."""
    deadline = time.monotonic() + timeout
    value = check()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(every)  # polling a counter that has no event to await
        value = check()
    return value


def running_settles(server: Server, target: int = 0, timeout: float = 10.0) -> int:
    """``chat.running`` once it is ``target`` or after ``timeout``."""
    return wait_until(lambda: chat_counts(server)["running"], lambda n: n <= target,
                      timeout)


def ui_body(chat_id: str, text: str) -> bytes:
    """What ``DefaultChatTransport`` posts for a one-message chat."""
    return json.dumps({
        "id": chat_id, "trigger": "submit-message", "messageId": None,
        "messages": [{"id": "u1", "role": "user",
                      "parts": [{"type": "text", "text": text}]}],
    }).encode()


def openai_body(text: str) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": text}],
                       "stream": True}).encode()


def native_close(body: bytes) -> str | None:
    """The ``finish_reason`` of a native chat stream's last event, if it is the close."""
    events = parse(body).events
    if not events or events[-1].type != "close":
        return None
    return json.loads(events[-1].data)["finish_reason"]  # type: ignore[no-any-return]


def ui_ended_properly(end: StreamEnd) -> bool:
    """An AI SDK stream that ended with ``finish`` or ``abort`` and then ``[DONE]``."""
    if not end.ended or end.status != 200:
        return False
    chunks = end.chunks()
    return (len(chunks) >= 2 and chunks[-1] == "[DONE]"
            and isinstance(chunks[-2], dict) and chunks[-2].get("type") in ("finish", "abort"))
