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

from ..event import Event
from ..mailbox import Mailbox
from .base import Broker, Subscription, reset_event

__all__ = ["MemoryBroker"]


class _Channel:
    __slots__ = ("history", "last_seq", "subscribers")

    def __init__(self, history_size: int) -> None:
        self.history: deque[bytes] = deque(maxlen=history_size)
        self.last_seq = 0  # seq of history[-1]; history holds last_seq-len+1 .. last_seq
        self.subscribers: set[Subscription] = set()


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
            subscribers = list(ch.subscribers) if ch.subscribers else ()
        for sub in subscribers:
            sub.deliver(chunk)
        return event_id

    def subscribe(
        self, channel: str, mailbox: Mailbox, last_event_id: str | None = None
    ) -> Subscription:
        with self._lock:
            ch = self._channels.get(channel)
            if ch is None:
                ch = self._channels[channel] = _Channel(self._history_size)
            prelude = b"" if last_event_id is None else self._replay(ch, last_event_id)
            sub = Subscription(channel, mailbox, self._unsubscribe, prelude)
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
