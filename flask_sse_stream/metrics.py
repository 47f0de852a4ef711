"""Cumulative counters of one app's channels in this process, for ``sse.stats()``.

The extension owns one :class:`Counters` per app and hands it to its broker; the brokers
add to it where the thing happens (no Flask here, nothing per delivery but an integer add).

What each counts (since the process started):

- ``published``: events this process published through the broker (``sse.publish``; a
  ``flask sse publish`` counts in its own process, not in the servers').
- ``delivered``: live events handed to local subscribers' queues, one per event per
  subscriber (a batch of 5 events handed to 3 subscribers counts 15). History replayed
  from ``Last-Event-ID`` is written ahead of the queue and is not counted. On Redis a
  reset for a reader gap travels with the live events and is counted among them.
- ``resumed``: channel subscriptions that came with a position (``Last-Event-ID``); a
  stream of several channels counts each channel whose position the cursor names.
- ``resets``: ``event: reset`` messages sent: one per channel subscription whose position
  was unknown or expired, and on Redis one per local follower of a channel when the
  reader finds events were trimmed before it read them.
- ``overflow_disconnects``: streams cut because their queue (``SSE_SUBSCRIBER_QUEUE``)
  overflowed (a stream of several channels counts once).
- ``chat``: ``{"started": ..., "running": ...}``: generations the app's chat blueprints
  started in this process, and those running now (a generation whose client dropped
  runs on through the grace period); zeros without a chat blueprint.

No locks: an increment is a plain ``+=`` on an int. Under gevent it is exact (greenlets
switch only at I/O, never inside one); with OS threads two racing increments can lose one
in a rare interleaving, which is fine for monitoring (these are not accounting numbers).
"""

from __future__ import annotations

__all__ = ["CHAT_CAPS_KEY", "COUNTER_NAMES", "Counters"]

COUNTER_NAMES = ("published", "delivered", "resumed", "resets", "overflow_disconnects")
# where the chat blueprints keep their running generations (and how many they started);
# named here so that ``sse.stats()`` can read them without importing the chat package
CHAT_CAPS_KEY = "flask_sse_stream.chat.caps"


class Counters:
    """A few ints, in slots (an add is one attribute store)."""

    __slots__ = ("delivered", "overflow_disconnects", "published", "resets", "resumed")

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.resumed = 0
        self.resets = 0
        self.overflow_disconnects = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTER_NAMES}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.as_dict().items())
        return f"Counters({fields})"
