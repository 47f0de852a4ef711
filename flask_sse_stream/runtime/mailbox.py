"""The bounded hand-off between whatever produces events and the response writing them.

A producer (a view's generator in its own greenlet, a broker fanning a channel out, a chat
log) hands already-encoded ``bytes`` to a :class:`Sink`; the response reads them from its
:class:`Mailbox`, joining everything queued into one write. Closing (client gone,
shutdown, slow consumer) wakes the reader at once, and a closed sink refuses every further
chunk, so memory stays bounded however many deliveries follow.

:func:`hand_off` is the one rule for giving a chunk to a subscriber: offer it without
blocking, count it, and cut a subscriber whose queue is full (it reconnects and replays)
rather than let it grow memory without bound.

The two implementations (gevent and threads) live with their runtime, in ``gevent.py``
and ``threads.py``; :meth:`Concurrency.new_mailbox` picks one.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol

__all__ = ["END", "CloseReason", "DeliveryCounters", "Mailbox", "Owner", "Sink", "hand_off"]

END = b""  # put by a producer that has finished; never a real chunk (events are non-empty)


class CloseReason(enum.Enum):
    FINISHED = "finished"
    DISCONNECTED = "disconnected"  # the client went away
    SHUTDOWN = "shutdown"  # the server is stopping: tell the client to come back
    EXPIRED = "expired"  # SSE_MAX_STREAM_SECONDS reached: reconnect (to any worker)
    OVERFLOW = "overflow"  # the client reads slower than events arrive
    BROKER_LOST = "broker_lost"  # the broker can no longer feed this stream


class Sink(Protocol):
    """Where chunks are handed without blocking: a mailbox, or something that forwards
    into one (a channel's tap on a multi-channel stream, a protocol's framer)."""

    @property
    def reason(self) -> CloseReason | None:
        """Why the sink was closed, or None while it is open."""

    def offer(self, chunk: bytes) -> bool:
        """Queue ``chunk`` without blocking; False if the queue is full or closed."""

    def close(self, reason: CloseReason) -> None:
        """Close it (the first reason wins) and wake its reader."""


class DeliveryCounters(Protocol):
    """The counters :func:`hand_off` keeps (``metrics.Counters`` has them)."""

    delivered: int
    overflow_disconnects: int


def hand_off(
    sink: Sink, chunk: bytes, counters: DeliveryCounters | None = None, count: int = 1
) -> bool:
    """Give ``chunk`` (``count`` events) to one subscriber; False if it was refused.

    A full queue cuts the subscriber off (``OVERFLOW``: it reconnects and replays) instead
    of growing memory without bound; a closed one just refuses. With ``counters``, an
    accepted hand-over counts ``count`` deliveries (before the offer, so whoever sees the
    event sees it counted) and a refusal by a full queue one overflow disconnect.
    """
    if counters is not None:
        counters.delivered += count
    if sink.offer(chunk):
        return True
    if counters is not None:
        counters.delivered -= count
        if sink.reason is None:  # full, not already closed: an overflow
            counters.overflow_disconnects += 1
    sink.close(CloseReason.OVERFLOW)
    return False


class Owner(Protocol):
    def mailbox_closed(self, reason: CloseReason) -> None:
        """Called once, by the first close (from any producer; must not block)."""


class Mailbox(ABC):
    """A bounded queue of encoded chunks with an out-of-band close: a :class:`Sink` that
    one response reads.

    ``direct``, when set by a response that can write a chunk itself without blocking
    (gevent only, see ``stream/direct.py``), is offered each chunk that arrives while the
    reader is parked with nothing queued; it returns False to have the chunk queued.
    """

    __slots__ = ("direct", "owner", "reason")

    def __init__(self) -> None:
        self.reason: CloseReason | None = None
        self.owner: Owner | None = None
        self.direct: Callable[[bytes], bool] | None = None

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

    def wake_reader(self) -> None:
        """Wake a reader parked in ``take()`` (it returns None if nothing was queued)."""
        return None
