"""The bounded hand-off between whatever produces events and the response writing them.

A producer (a view's generator running in its own greenlet, or a broker fanning a channel
out) puts already-encoded ``bytes``; the response takes them, coalescing everything that is
queued into one write. Closing a mailbox (client gone, shutdown, slow consumer) wakes the
reader at once.

Under gevent a mailbox is a plain list plus at most one waiting greenlet (``GeventMailbox``):
about 200 bytes, where a ``gevent.queue.Queue`` and its three deques take 2.6 KiB — per open
stream, that is most of the budget. With threads it wraps ``queue.Queue``
(``ThreadMailbox``).

A closed mailbox refuses every further chunk (memory stays bounded however many deliveries
follow), and its ``owner`` (the response writing it) hears of the close at once: on an
overflow it cuts the connection, since its writer is stuck in a write to that client.
"""

from __future__ import annotations

import contextlib
import enum
import queue
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

from .concurrency import Concurrency, Waiter, wait, wake

__all__ = ["END", "CloseReason", "Mailbox", "new_mailbox"]

END = b""  # put by a producer that has finished; never a real chunk (events are non-empty)


class CloseReason(enum.Enum):
    FINISHED = "finished"
    DISCONNECTED = "disconnected"  # the client went away
    SHUTDOWN = "shutdown"  # the server is stopping: tell the client to come back
    EXPIRED = "expired"  # SSE_MAX_STREAM_SECONDS reached: reconnect (to any worker)
    OVERFLOW = "overflow"  # the client reads slower than events arrive
    BROKER_LOST = "broker_lost"  # the broker can no longer feed this stream


class Owner(Protocol):
    def mailbox_closed(self, reason: CloseReason) -> None:
        """Called once, by the first close (from any producer; must not block)."""


class Mailbox(ABC):
    """A bounded queue of encoded chunks with an out-of-band close."""

    __slots__ = ("owner", "reason")

    def __init__(self) -> None:
        self.reason: CloseReason | None = None
        self.owner: Owner | None = None

    def _closing(self, reason: CloseReason) -> bool:
        """Record the first close (True) and tell the owner; False if already closed."""
        if self.reason is not None:
            return False
        self.reason = reason
        owner = self.owner
        if owner is not None:
            owner.mailbox_closed(reason)
        return True

    @abstractmethod
    def offer(self, chunk: bytes) -> bool:
        """Put without blocking (fan-out); False if the queue is full or closed."""

    @abstractmethod
    def put(self, chunk: bytes, timeout: float | None = None) -> bool:
        """Put, waiting while the queue is full (back-pressure on a generator); False on
        timeout or once the mailbox is closed."""

    @abstractmethod
    def close(self, reason: CloseReason) -> None:
        """Mark closed (the first reason wins) and wake the reader."""

    @abstractmethod
    def take(self, timeout: float | None) -> list[bytes] | None:
        """Everything queued (waiting up to ``timeout`` for the first chunk), or None if
        nothing came. An ``END`` at the end of the result means the producer finished."""

    @abstractmethod
    def drain(self) -> list[bytes]:
        """What is queued now, without waiting (used when closing)."""


def new_mailbox(concurrency: Concurrency, maxsize: int) -> Mailbox:
    if concurrency.cooperative:
        return GeventMailbox(maxsize)
    return ThreadMailbox(maxsize)


class GeventMailbox(Mailbox):
    """One slot, ``_waiter``, serves the reader blocked in ``take()`` and the producer
    blocked in ``put()``: they never wait at once (the reader waits only while the list is
    empty, the producer only while it is full), and both treat a wake-up as "look again".

    So "the slot is taken and nothing is queued" means exactly "the reader is parked in
    ``take()`` and nothing is being or waits to be written": then an ``offer`` may hand the
    chunk to ``direct`` (set by a response that can write it itself without blocking)
    instead of queueing it and waking the reader. Every wake-up and every timeout clears
    the slot, so a reader on its way back, or busy writing, never counts as parked."""

    __slots__ = ("_items", "_maxsize", "_waiter", "direct")

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self._items: list[bytes] = []
        self._maxsize = maxsize
        self._waiter: Any = None  # the Waiter of the one greenlet blocked on this mailbox
        # Writes a chunk now, in the caller; False if it cannot (then it is queued).
        self.direct: Callable[[bytes], bool] | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            wake(waiter)

    def offer(self, chunk: bytes) -> bool:
        items = self._items
        if len(items) >= self._maxsize or self.reason is not None:
            return False
        if not items and self._waiter is not None and chunk:  # END never goes direct
            direct = self.direct
            if direct is not None and direct(chunk):
                return True
        items.append(chunk)
        self._wake()  # a waiting reader (no producer waits while there is room)
        return True

    def put(self, chunk: bytes, timeout: float | None = None) -> bool:
        while self.reason is None:
            if self.offer(chunk):
                return True
            waiter = self._waiter = Waiter()
            if not wait(waiter, timeout):
                if self._waiter is waiter:
                    self._waiter = None
                return False
        return False

    def wake_reader(self) -> None:
        """Wake a reader parked in ``take()`` (it returns None if nothing was queued)."""
        self._wake()

    def close(self, reason: CloseReason) -> None:
        if self._closing(reason):
            self._items.append(END)  # past the bound on purpose: a close always gets through
        self._wake()

    def take(self, timeout: float | None) -> list[bytes] | None:
        if not self._items:
            if timeout == 0:
                return None
            waiter = self._waiter = Waiter()
            if not wait(waiter, timeout):
                if self._waiter is waiter:
                    self._waiter = None
                return None
            if not self._items:
                return None  # woken with nothing to take (drained meanwhile)
        chunks, self._items = self._items, []
        self._wake()  # a producer waiting for room
        if END in chunks:
            del chunks[chunks.index(END) + 1 :]
        return chunks

    def drain(self) -> list[bytes]:
        chunks, self._items = self._items, []
        return [c for c in chunks if c]


class ThreadMailbox(Mailbox):
    __slots__ = ("_empty", "_full", "_queue")

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize)
        self._empty = queue.Empty
        self._full = queue.Full

    def offer(self, chunk: bytes) -> bool:
        if self.reason is not None:
            return False
        try:
            self._queue.put_nowait(chunk)
        except self._full:
            return False
        return True

    def put(self, chunk: bytes, timeout: float | None = None) -> bool:
        if self.reason is not None:
            return False
        try:
            self._queue.put(chunk, timeout=timeout)
        except self._full:
            return False
        return True

    def close(self, reason: CloseReason) -> None:
        """A reader that is not waiting (the queue is full, so it is busy writing) sees
        ``reason`` before its next wait."""
        if self._closing(reason):
            with contextlib.suppress(self._full):
                self._queue.put_nowait(END)

    def take(self, timeout: float | None) -> list[bytes] | None:
        queue = self._queue
        try:
            first = queue.get(timeout=timeout)
        except self._empty:
            return None
        chunks = [first]
        if first is END:
            return chunks
        # coalesce what else is queued into the same write
        while queue.qsize():
            chunk = queue.get_nowait()
            chunks.append(chunk)
            if chunk is END:
                return chunks
        return chunks

    def drain(self) -> list[bytes]:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._queue.get_nowait()
            except self._empty:
                return chunks
            if chunk:
                chunks.append(chunk)
