"""``memory://``: one process, history in a ring buffer per channel.

Ids look like ``<boot>-<n>``: ``n`` counts up per channel and ``boot`` marks this broker's
lifetime, so an id from before a restart is recognised as unknown (the client gets a reset)
instead of being silently matched against new events that reuse its number.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from gevent import get_hub

from ..concurrency import current as current_concurrency
from ..event import Event
from ..mailbox import Mailbox
from .base import Broker, Subscription, reset_event

__all__ = ["MemoryBroker"]

FANOUT_DELAY = 0.001  # seconds events may wait to share a write; far below any heartbeat
FANOUT_MAX_BYTES = 64 * 1024  # a batch this big goes out without waiting


def _fire(timer: Any, channel: _Channel) -> None:
    timer.close()
    channel.flush()


class _Channel:
    __slots__ = ("history", "last_seq", "pending", "pending_bytes", "subscribers")

    def __init__(self, history_size: int) -> None:
        self.history: deque[bytes] = deque(maxlen=history_size)
        self.last_seq = 0  # seq of history[-1]; history holds last_seq-len+1 .. last_seq
        self.subscribers: set[Subscription] = set()
        # Under gevent, events published within FANOUT_DELAY go out together: one
        # hand-over (and so one write) per subscriber for the batch, not one per event.
        self.pending: list[bytes] | None = None  # None: no flush scheduled
        self.pending_bytes = 0

    def flush(self) -> None:
        """Hand the pending batch to every subscriber (runs in the hub: never blocks)."""
        chunks, self.pending, self.pending_bytes = self.pending, None, 0
        if not chunks:
            return
        payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        for sub in list(self.subscribers):
            sub.deliver(payload)


class MemoryBroker(Broker):
    def __init__(self, history_size: int = 1000) -> None:
        self._history_size = history_size
        self._boot = format(time.time_ns() // 1000, "x")
        self._channels: dict[str, _Channel] = {}
        self._lock = threading.Lock()  # publish and subscribe may run on different threads

    def publish(
        self, channel: str, data: Any, event: str | None = None, retry: int | None = None
    ) -> str:
        with self._lock:
            ch = self._channels.get(channel)
            if ch is None:
                ch = self._channels[channel] = _Channel(self._history_size)
            ch.last_seq += 1
            event_id = f"{self._boot}-{ch.last_seq}"
            chunk = Event(data, event=event, id=event_id, retry=retry).encode()
            if ch.history.maxlen:
                ch.history.append(chunk)
            if not ch.subscribers:
                return event_id
            if current_concurrency().name == "gevent":
                if ch.pending is None:
                    ch.pending = [chunk]
                    timer = get_hub().loop.timer(FANOUT_DELAY)
                    timer.start(_fire, timer, ch)
                else:
                    ch.pending.append(chunk)
                ch.pending_bytes += len(chunk)
                if ch.pending_bytes >= FANOUT_MAX_BYTES:
                    ch.flush()  # a big burst goes out now, in bounded pieces
                return event_id
            # threads: fan out at once, still holding the lock, so events reach every
            # subscriber in id order even when several threads publish at once (deliver
            # never blocks: a full queue cuts the subscriber off)
            for sub in list(ch.subscribers):
                sub.deliver(chunk)
        return event_id

    def subscribe(
        self, channel: str, mailbox: Mailbox, last_event_id: str | None = None
    ) -> Subscription:
        with self._lock:
            ch = self._channels.get(channel)
            if ch is None:
                ch = self._channels[channel] = _Channel(self._history_size)
            # The pending batch is already in the history the replay reads: send it to
            # the current subscribers now, so the new one cannot get it twice.
            ch.flush()
            prelude = b"" if last_event_id is None else self._replay(ch, last_event_id)
            sub = Subscription(channel, mailbox, self._unsubscribe, prelude)
            sub.cursor = f"{self._boot}-{ch.last_seq}"
            ch.subscribers.add(sub)
        return sub

    def _replay(self, ch: _Channel, last_event_id: str) -> bytes:
        boot, _, seq_text = last_event_id.partition("-")
        seq = int(seq_text) if seq_text.isdigit() and len(seq_text) < 20 else -1
        first_seq = ch.last_seq - len(ch.history) + 1
        if boot != self._boot or seq < 0 or seq > ch.last_seq:
            return reset_event(last_event_id, "unknown event id") + b"".join(ch.history)
        if seq < first_seq - 1:
            return reset_event(last_event_id, "event id older than the history") + b"".join(
                ch.history
            )
        return b"".join(list(ch.history)[seq - first_seq + 1 :])

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            ch = self._channels.get(sub.channel)
            if ch is None:
                return
            ch.subscribers.discard(sub)
            if not ch.subscribers and ch.last_seq == 0:
                del self._channels[sub.channel]  # never published to: nothing to keep

    def subscriber_counts(self) -> dict[str, int]:
        with self._lock:
            return {
                name: len(ch.subscribers) for name, ch in self._channels.items() if ch.subscribers
            }
