"""What a broker does: publish to a channel, fan it out, replay from ``Last-Event-ID``."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..event import Event
from ..mailbox import CloseReason, Mailbox
from ..metrics import Counters

__all__ = [
    "Broker",
    "BrokerError",
    "Subscription",
    "parse_decimal",
    "reset_event",
    "valid_channel",
]

_CHANNEL = re.compile(r"[A-Za-z0-9_\-.:]{1,128}")


def parse_decimal(text: str, max_digits: int) -> int | None:
    """``text`` as a non-negative int if it is 1 to ``max_digits`` ASCII digits, else None.
    (``str.isdigit`` alone accepts "²", Arabic-Indic and fullwidth digits, which ``int``
    then rejects or reads: ids from a header must be plain ASCII.)"""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def valid_channel(name: str) -> bool:
    """1 to 128 characters from ``A-Z a-z 0-9 _ - . :``."""
    return _CHANNEL.fullmatch(name) is not None


class BrokerError(RuntimeError):
    """The broker cannot be reached or refused the operation (e.g. Redis is down)."""


def reset_event(last_event_id: str, why: str) -> bytes:
    """``event: reset``: the client's position is gone, so it missed events."""
    data = json.dumps({"reason": why, "last_event_id": last_event_id[:256]})
    return Event(data, event="reset").encode()


class Subscription:
    """One stream's place in a channel. ``prelude`` holds what it must send before live
    events (a reset, then the replayed history), already encoded. ``position`` is the id
    of the last event the prelude covers, or of the channel's last event when the
    subscription began (None: the channel has none): resuming from it misses nothing,
    even if this subscription never gets an event (multi-channel streams need it)."""

    __slots__ = ("_unsubscribe", "channel", "counters", "mailbox", "position", "prelude")

    def __init__(
        self,
        channel: str,
        mailbox: Mailbox,
        unsubscribe: Callable[[Subscription], None],
        prelude: bytes = b"",
        counters: Counters | None = None,
    ) -> None:
        self.channel = channel
        self.mailbox = mailbox
        self.prelude = prelude
        self.position: str | None = None
        self.counters = counters
        self._unsubscribe = unsubscribe

    def deliver(self, chunk: bytes, count: int = 1) -> None:
        """Hand ``count`` encoded events over as one chunk; a subscriber whose queue is
        full is cut off (it can reconnect and replay) instead of growing memory without
        bound. The broker counted the hand-over as ``delivered`` for every subscriber
        already (one add per batch): a refusal takes it back."""
        if not self.mailbox.offer(chunk):
            counters = self.counters
            if counters is not None:
                counters.delivered -= count
                if self.mailbox.reason is None:  # full, not closed already: an overflow
                    counters.overflow_disconnects += 1
            self.mailbox.close(CloseReason.OVERFLOW)

    def close(self) -> None:
        self._unsubscribe(self)


class Broker(ABC):
    """A channel pub/sub with bounded per-channel history.

    Implementations encode each event once and hand the same bytes to every local
    subscriber, and keep ``counters`` (see :mod:`..metrics`) up to date.
    """

    counters: Counters

    @abstractmethod
    def publish(
        self, channel: str, data: Any, event: str | None = None, retry: int | None = None
    ) -> str:
        """Send to every subscriber of ``channel`` everywhere; returns the event's id."""

    @abstractmethod
    def subscribe(
        self, channel: str, mailbox: Mailbox, last_event_id: str | None = None
    ) -> Subscription:
        """Register ``mailbox`` for live events of ``channel``; the returned subscription's
        prelude holds the events after ``last_event_id`` (or a reset). Nothing published
        after the replay's end is missed or doubled."""

    @abstractmethod
    def subscriber_counts(self) -> dict[str, int]:
        """Local subscribers per channel in this process."""

    def close(self) -> None:
        """Release connections and background readers."""
        return None
