"""Helpers for the fast tier: streams read in process with Flask's test client.

The test process is never monkey-patched, so the library runs in thread mode: a view's
generator runs in a thread and the writer waits on a ``queue.Queue``. With a short
``SSE_HEARTBEAT_INTERVAL`` every read returns within one heartbeat, which bounds every loop
here (a stream that stops producing still yields ``: ping`` lines).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any, cast

from flask import Flask
from werkzeug.test import TestResponse

from tests.sse_parser import ParsedEvent, parse

HEARTBEAT = 0.05  # seconds: what the fast-tier apps use, so reads never block for long
OPENINGS = (b": ok\n", b"retry: ")


class StreamReader:
    """Reads a streamed test-client response (``buffered=False``) chunk by chunk."""

    def __init__(self, response: TestResponse) -> None:
        self.response = response
        self.body = b""
        self.chunks: list[bytes] = []
        self.ended = False
        # a streamed SSE body is always bytes
        self._iter: Iterator[bytes] = iter(cast("Iterable[bytes]", response.response))

    def _next_chunk(self) -> bytes:
        try:
            chunk = next(self._iter)
        except StopIteration:
            self.ended = True
            return b""
        self.chunks.append(chunk)
        self.body += chunk
        return chunk

    def events(self, count: int, timeout: float = 5.0) -> list[ParsedEvent]:
        """Read until ``count`` events have arrived in total (or the stream ends)."""
        deadline = time.monotonic() + timeout
        while len(parse(self.body).events) < count and not self.ended:
            assert time.monotonic() < deadline, f"only {parse(self.body).events} after {timeout}s"
            self._next_chunk()
        return parse(self.body).events

    def read_to_end(self, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while not self.ended:
            assert time.monotonic() < deadline, f"stream still open after {timeout}s"
            self._next_chunk()
        return self.body

    def read_chunks(self, count: int) -> bytes:
        """The first ``count`` writes (fewer if the stream ends)."""
        while len(self.chunks) < count and not self.ended:
            self._next_chunk()
        return self.body

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stream(app: Flask, path: str, method: str = "GET", **kwargs: Any) -> StreamReader:
    """Open a streamed request; asserts it is a 200 event stream."""
    response = app.test_client().open(path, method=method, buffered=False, **kwargs)
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "text/event-stream"
    return StreamReader(response)


def data(events: list[ParsedEvent]) -> list[Any]:
    return [json.loads(e.data) for e in events if e.type == "message"]


def check_answer(response: TestResponse, *, read_all: bool = False) -> bytes:
    """The fuzz invariant: a 4xx is a JSON ``{"error": "..."}``, a 204 is empty, a 200 is
    an event stream that opens properly and parses; never a 5xx. Returns the body read."""
    try:
        status = response.status_code
        if status != 200:
            body = response.get_data()
            assert status < 500, body
            if status == 204:
                assert body == b""
                return b""
            assert 400 <= status < 500, (status, body)
            assert response.mimetype == "application/json", (status, body)
            error = json.loads(body)["error"]
            assert isinstance(error, str) and error
            return b""
        assert response.mimetype == "text/event-stream"
        reader = StreamReader(response)
        body = reader.read_to_end(timeout=10.0) if read_all else reader.read_chunks(1)
        assert body.startswith(OPENINGS), body[:200]
        body.decode("utf-8")  # output is UTF-8 (strict: raises on anything else)
        assert b"\r" not in body  # LF line endings only: no injected line break
        return body
    finally:
        response.close()
