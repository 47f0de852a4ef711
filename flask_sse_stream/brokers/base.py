"""What a broker does: publish to a channel, fan it out, replay from ``Last-Event-ID``."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..errors import BrokerError
from ..metrics import Counters
from ..runtime import Sink, hand_off
from ..wire.event import compact_json, encode_message
from .presence import Presence

__all__ = ["Broker", "BrokerError", "Subscription", "reset_event", "valid_channel"]

_CHANNEL = re.compile(r"[A-Za-z0-9_\-.:]{1,128}")


def valid_channel(name: str) -> bool:
    """1 to 128 characters from ``A-Z a-z 0-9 _ - . :``."""
    return _CHANNEL.fullmatch(name) is not None


def reset_event(last_event_id: str, why: str) -> bytes:
    """``event: reset``: the client's position is gone, so it missed events."""
    return encode_message(
        compact_json({"reason": why, "last_event_id": last_event_id[:256]}), event="reset"
    )


class Subscription:
    """One stream's place in a channel. ``prelude`` holds what it must send before live
    events (a reset, then the replayed history), already encoded. ``position`` is the id
    of the last event the prelude covers, or of the channel's last event when the
    subscription began (None: the channel has none): resuming from it misses nothing,
    even if this subscription never gets an event (multi-channel streams need it).
    ``origin`` is where the client stands before the prelude when it did not say
    (``?last=N``: the id before the first of the newest N), else None."""

    __slots__ = ("_unsubscribe", "channel", "counters", "origin", "position", "prelude", "sink")

    def __init__(
        self,
        channel: str,
        sink: Sink,
        unsubscribe: Callable[[Subscription], None],
        prelude: bytes = b"",
        counters: Counters | None = None,
    ) -> None:
        self.channel = channel
        self.sink = sink
        self.prelude = prelude
        self.position: str | None = None
        self.origin: str | None = None
        self.counters = counters
        self._unsubscribe = unsubscribe

    def deliver(self, chunk: bytes, count: int = 1) -> None:
        """Hand ``count`` encoded events over as one chunk (see ``runtime.hand_off``)."""
        hand_off(self.sink, chunk, self.counters, count)

    def close(self) -> None:
        self._unsubscribe(self)


class Broker(ABC):
    """A channel pub/sub with bounded per-channel history.

    Implementations encode each event once and hand the same bytes to every local
    subscriber, keep ``counters`` (see ``metrics.py``) up to date, and tell ``presence``
    of every subscription made and closed.
    """

    counters: Counters
    presence: Presence

    @abstractmethod
    def publish(
        self, channel: str, data: Any, event: str | None = None, retry: int | None = None
    ) -> str:
        """Send to every subscriber of ``channel`` everywhere; returns the event's id."""

    @abstractmethod
    def subscribe(
        self, channel: str, sink: Sink, last_event_id: str | None = None,
        newest: int | None = None,
    ) -> Subscription:
        """Register ``sink`` for live events of ``channel``; the returned subscription's
        prelude holds the events after ``last_event_id`` (or a reset), or without one the
        channel's ``newest`` events (``?last=N``). Nothing published after the prelude's
        end is missed or doubled."""

    @abstractmethod
    def subscriber_counts(self) -> dict[str, int]:
        """Local subscribers per channel in this process."""

    def presence_count(self, channel: str) -> int:
        """The streams subscribed to ``channel`` in every process sharing the broker."""
        return self.presence.count(channel)

    def close(self) -> None:
        """Release connections and background readers."""
        return None
