"""``memory://``: one process, history in a ring buffer per channel.

Ids look like ``<boot>.<channel>-<n>``: ``n`` counts up per channel, ``boot`` marks this
broker's lifetime and ``channel`` the channel's own log, so an id from before a restart, or
from another channel, is recognised as unknown (the client gets a reset) instead of being
silently matched against events that reuse its number.

Publishing may happen on any thread (a request greenlet, a native threadpool thread, a C
callback). An id is assigned and its event queued for fan-out under one lock, and only one
flush hands the queue over at a time, so every subscriber gets events in id order. Under
gevent the fan-out always runs in the subscribers' event loop: events published there within
``FANOUT_DELAY`` share one hand-over (one write per subscriber); from another thread the
loop is woken through its thread-safe callback.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any

from .. import runtime
from ..metrics import Counters
from ..runtime import EventLoop, Sink, native_lock
from ..wire.event import Event, encode_message
from ..wire.numbers import ascii_int
from .base import Broker, Subscription, reset_event
from .presence import Presence

__all__ = ["MemoryBroker"]

FANOUT_DELAY = 0.001  # seconds events may wait to share a write; far below any heartbeat
FANOUT_MAX_BYTES = 64 * 1024  # a batch this big goes out without waiting


class _Channel:
    __slots__ = (
        "counters",
        "history",
        "last_seq",
        "lock",
        "loop",
        "pending",
        "pending_bytes",
        "prefix",
        "subscribers",
    )

    def __init__(self, history_size: int, prefix: str, lock: Any, counters: Counters) -> None:
        self.counters = counters  # the broker's
        self.history: deque[bytes] = deque(maxlen=history_size)
        self.last_seq = 0  # seq of history[-1]; history holds last_seq-len+1 .. last_seq
        self.prefix = prefix  # of this channel's ids: "<boot>.<channel serial>"
        self.lock = lock  # the broker's
        self.subscribers: set[Subscription] = set()
        # The event loop the subscribers' streams run in (gevent), else None (threads).
        self.loop: EventLoop | None = None
        # Events waiting for the fan-out, in id order; None: no flush scheduled.
        self.pending: list[bytes] | None = None
        self.pending_bytes = 0

    def flush(self) -> None:
        """Hand the pending batch to every subscriber (never blocks). The lock is held
        through the hand-over so that two flushes (threads) cannot overtake each other."""
        with self.lock:
            self.flush_locked()

    def flush_locked(self) -> None:
        chunks, self.pending, self.pending_bytes = self.pending, None, 0
        if not chunks:
            return
        subscribers = list(self.subscribers)
        if len(chunks) == 1:
            for sub in subscribers:
                sub.deliver(chunks[0])
            return
        start, size = 0, 0
        for end, chunk in enumerate(chunks, 1):  # bounded pieces: one write each
            size += len(chunk)
            if size >= FANOUT_MAX_BYTES or end == len(chunks):
                payload = b"".join(chunks[start:end])
                for sub in subscribers:
                    sub.deliver(payload, end - start)
                start, size = end, 0


class MemoryBroker(Broker):
    def __init__(self, history_size: int = 1000, counters: Counters | None = None) -> None:
        self.counters = Counters() if counters is None else counters
        self.presence = Presence()  # one process: the local counts are the counts
        self._history_size = history_size
        self._boot = format(time.time_ns() // 1000, "x")
        self._serial = itertools.count(1)
        self._channels: dict[str, _Channel] = {}
        # Publish and subscribe may run on different OS threads even under gevent: a lock
        # of the OS threads, held only for sections that never yield.
        self._lock = native_lock()

    def _channel(self, name: str) -> _Channel:
        ch = self._channels.get(name)
        if ch is None:
            prefix = f"{self._boot}.{next(self._serial):x}"
            ch = self._channels[name] = _Channel(
                self._history_size, prefix, self._lock, self.counters
            )
        return ch

    def publish(
        self, channel: str, data: Any, event: str | None = None, retry: int | None = None
    ) -> str:
        with self._lock:
            ch = self._channel(channel)
            event_id = f"{ch.prefix}-{ch.last_seq + 1}"
            # encoded (so validated) before the id is taken: a refused event leaves none
            chunk = (encode_message(data, event, event_id) if retry is None else
                     Event(data, event=event, id=event_id, retry=retry).encode())
            ch.last_seq += 1
            self.counters.published += 1
            if ch.history.maxlen:
                ch.history.append(chunk)
            if not ch.subscribers:
                return event_id
            loop = ch.loop
            first = ch.pending is None
            if loop is None:  # threads: fan out now, in id order (the lock is held)
                if first:
                    ch.pending = [chunk]
                else:
                    ch.pending.append(chunk)  # type: ignore[union-attr]
                ch.flush_locked()
                return event_id
            if first:
                ch.pending = [chunk]
            else:
                ch.pending.append(chunk)  # type: ignore[union-attr]
            ch.pending_bytes += len(chunk)
            if not loop.in_thread():
                if first:  # another OS thread: wake the subscribers' loop to flush
                    loop.call_soon_threadsafe(ch.flush)
            elif ch.pending_bytes >= FANOUT_MAX_BYTES:
                ch.flush_locked()  # a big burst goes out now, in bounded pieces
            elif first:
                loop.call_later(FANOUT_DELAY, ch.flush)
        return event_id

    def subscribe(
        self, channel: str, sink: Sink, last_event_id: str | None = None,
        newest: int | None = None,
    ) -> Subscription:
        loop = runtime.current().event_loop()
        with self._lock:
            ch = self._channel(channel)
            if ch.loop is None:
                ch.loop = loop
            # The pending batch is already in the history the replay reads: send it to
            # the current subscribers now, so the new one cannot get it twice.
            ch.flush_locked()
            prelude = b""
            origin = None
            if last_event_id is not None:
                self.counters.resumed += 1
                prelude = self._replay(ch, last_event_id)
            elif newest:
                kept = list(itertools.islice(reversed(ch.history), newest))
                prelude = b"".join(reversed(kept))
                origin = f"{ch.prefix}-{ch.last_seq - len(kept)}"
            sub = Subscription(channel, sink, self._unsubscribe, prelude, self.counters)
            sub.position = f"{ch.prefix}-{ch.last_seq}"
            sub.origin = origin
            ch.subscribers.add(sub)
        self.presence.join(channel, sink)
        return sub

    def _replay(self, ch: _Channel, last_event_id: str) -> bytes:
        prefix, _, seq_text = last_event_id.rpartition("-")
        seq = ascii_int(seq_text, 19)
        first_seq = ch.last_seq - len(ch.history) + 1
        if seq == 0 and prefix.partition(".")[0] == self._boot:
            # before the channel's first event (a position handed out before anything was
            # published; the channel may have been dropped and made again since, while
            # still empty): everything kept follows it
            prefix = ch.prefix
        if prefix != ch.prefix or seq is None or seq > ch.last_seq:
            why = "unknown event id"
        elif seq < first_seq - 1:
            why = "event id older than the history"
        else:
            return b"".join(list(ch.history)[seq - first_seq + 1 :])
        self.counters.resets += 1
        return reset_event(last_event_id, why) + b"".join(ch.history)

    def _unsubscribe(self, sub: Subscription) -> None:
        self.presence.leave(sub.channel, sub.sink)
        with self._lock:
            ch = self._channels.get(sub.channel)
            if ch is None:
                return
            ch.subscribers.discard(sub)
            if not ch.subscribers:
                ch.loop = None  # the next subscriber's loop serves the channel
            if not ch.subscribers and ch.last_seq == 0:
                # never published to: nothing to keep (a position `<boot>.<serial>-0` it
                # handed out stays valid: see _replay)
                del self._channels[sub.channel]

    def subscriber_counts(self) -> dict[str, int]:
        with self._lock:
            return {
                name: len(ch.subscribers) for name, ch in self._channels.items() if ch.subscribers
            }
