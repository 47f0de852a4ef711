"""The bounded hand-off between whatever produces events and the response writing them.

A producer (a view's generator running in its own greenlet, or a broker fanning a channel
out) puts already-encoded ``bytes``; the response takes them, coalescing everything that is
queued into one write. Closing a mailbox (client gone, shutdown, slow consumer) wakes the
reader at once.
"""

from __future__ import annotations

import contextlib
import enum
from typing import Any

from .concurrency import Concurrency

__all__ = ["END", "CloseReason", "Mailbox"]

END = b""  # put by a producer that has finished; never a real chunk (events are non-empty)


class CloseReason(enum.Enum):
    FINISHED = "finished"
    DISCONNECTED = "disconnected"  # the client went away
    SHUTDOWN = "shutdown"  # the server is stopping: tell the client to come back
    EXPIRED = "expired"  # SSE_MAX_STREAM_SECONDS reached: reconnect (to any worker)
    OVERFLOW = "overflow"  # the client reads slower than events arrive
    BROKER_LOST = "broker_lost"  # the broker can no longer feed this stream


class Mailbox:
    """A bounded queue of encoded chunks with an out-of-band close."""

    __slots__ = ("_empty", "_full", "_queue", "reason")

    def __init__(self, concurrency: Concurrency, maxsize: int) -> None:
        self._queue: Any = concurrency.Queue(maxsize)
        self._empty = concurrency.Empty
        self._full = concurrency.Full
        self.reason: CloseReason | None = None

    def offer(self, chunk: bytes) -> bool:
        """Put without blocking (fan-out); False if the queue is full."""
        try:
            self._queue.put_nowait(chunk)
        except self._full:
            return False
        return True

    def put(self, chunk: bytes, timeout: float | None = None) -> bool:
        """Put, waiting while the queue is full (back-pressure on a generator); False on
        timeout."""
        try:
            self._queue.put(chunk, timeout=timeout)
        except self._full:
            return False
        return True

    def close(self, reason: CloseReason) -> None:
        """Mark closed and wake a waiting reader. A reader that is not waiting (the queue
        is full, so it is busy writing) sees ``reason`` before its next wait."""
        if self.reason is None:
            self.reason = reason
        with contextlib.suppress(self._full):
            self._queue.put_nowait(END)

    def take(self, timeout: float | None) -> list[bytes] | None:
        """Everything queued (waiting up to ``timeout`` for the first chunk), or None if
        nothing came. An ``END`` in the result means the producer finished."""
        queue = self._queue
        try:
            first = queue.get(timeout=timeout)
        except self._empty:
            return None
        chunks = [first]
        if first is END:
            return chunks
        # coalesce what else is queued into the same write (qsize first: an Empty
        # exception per wake-up costs more than the check)
        qsize = queue.qsize
        get = queue.get_nowait
        while qsize():
            chunk = get()
            chunks.append(chunk)
            if chunk is END:
                return chunks
        return chunks

    def drain(self) -> list[bytes]:
        """What is queued now, without waiting (used when closing for shutdown)."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._queue.get_nowait()
            except self._empty:
                return chunks
            if chunk:
                chunks.append(chunk)
