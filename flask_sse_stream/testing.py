"""Testing helper: read the events of a streaming response from Flask's test client.

An endless stream never ends by itself, so a test cannot just read ``response.data``.
``read_events`` reads the body in a helper thread, stops after ``count`` events (or when
``timeout`` seconds pass with nothing new, or when the stream ends) and then closes the
response, so the view's generator is closed (its ``finally:`` runs) and the stream's
subscription is released::

    from flask_sse_stream.testing import read_events

    def test_countdown(app):
        response = app.test_client().get("/countdown", buffered=False)
        events = read_events(response, count=3)
        assert [e.data for e in events] == ['{"n":10}', '{"n":9}', '{"n":8}']

Works in a plain pytest process (no gevent monkey-patching): the test client runs the
view in the calling thread and the generator in a thread of its own.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

from .wire.event import Event
from .wire.parse import EventParser

__all__ = ["read_events"]

_DONE = object()


def _pump(body: Iterable[bytes], out: queue.Queue[Any], stop: threading.Event) -> None:
    try:
        for chunk in body:
            out.put(chunk)
            if stop.is_set():
                break
    except BaseException as exc:  # handed to the test's thread, raised there
        out.put(exc)
    finally:
        out.put(_DONE)


def read_events(response: Any, count: int | None = None, timeout: float = 5.0) -> list[Event]:
    """The events of ``response`` (``client.get(..., buffered=False)``), parsed by the
    WHATWG rules (comments and heartbeats skipped; ``event``, ``id``, ``retry`` kept).

    Reads until ``count`` events came, or, with ``count=None``, until the stream ends or
    ``timeout`` seconds pass without a new event. ``timeout`` also bounds each wait when a
    ``count`` is given: fewer events than asked come back rather than a hang. The response
    is closed before returning, whatever happened. A response that is not
    ``text/event-stream`` (say a 401 JSON error) raises ``ValueError`` naming its status,
    rather than reading as "no events".
    """
    if count is not None and count < 0:
        raise ValueError("count must be >= 0")
    _check_event_stream(response)
    events: list[Event] = []
    chunks: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(
        target=_pump, args=(response.response, chunks, stop), daemon=True, name="read_events"
    )
    try:
        if count != 0:
            reader.start()
            _collect(chunks, events, count, timeout)
    finally:
        _close(response, reader, stop, timeout)
    return events if count is None else events[:count]


def _check_event_stream(response: Any) -> None:
    if response.mimetype != "text/event-stream":
        # e.g. a 401 JSON error: an empty list would let a test pass for the wrong reason
        body = response.get_data()[:200] if response.status_code != 200 else b""
        response.close()
        raise ValueError(
            f"not an event stream: {response.status} {response.content_type!r} {body!r}"
        )


def _collect(chunks: queue.Queue[Any], events: list[Event], count: int | None,
             timeout: float) -> None:
    """Parse what the reader thread hands over until ``count`` events, the end, or
    ``timeout`` seconds with nothing new."""
    parser = EventParser()
    deadline = time.monotonic() + timeout
    while count is None or len(events) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            item = chunks.get(timeout=remaining)
        except queue.Empty:
            return
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            raise item
        new = parser.feed(item)
        if new:
            events.extend(new)
            deadline = time.monotonic() + timeout  # the timeout is "nothing new"


def _close(response: Any, reader: threading.Thread, stop: threading.Event,
           timeout: float) -> None:
    # In this thread (the one that pushed the request context): closing ends the stream,
    # which wakes the reader thread if it is blocked on the next chunk.
    stop.set()
    try:
        response.close()
    except ValueError:
        # A plain generator (not @sse_stream) is running in the reader thread, and Python
        # cannot close a running generator: the reader stops after its next chunk, then
        # it can be closed (its finally: runs).
        reader.join(timeout)
        response.close()
    if reader.is_alive():
        reader.join(timeout)
