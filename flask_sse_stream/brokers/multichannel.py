"""Several channels on one stream, resumable with one ``Last-Event-ID``.

Events of different channels have no common order (on Redis they come from different
streams, published from different hosts), so a single event id cannot say where a client
is in all of them. Instead every event of a multi-channel stream carries a *cursor*: the
position of each channel of the stream, the event's own channel first::

    id: prices@1718000000123-0,news@1718000000042-3

The client tells an event's channel from the part before the first ``@`` and sends the
whole id back as ``Last-Event-ID``; every channel then resumes exactly after its own
position (a ``reset`` naming the channel where that position has expired). Channel names
cannot contain ``@`` or ``,``, and broker ids cannot contain ``,``.

How it stays exact: an id must describe everything written *before* it on the wire. Each
channel's subscription feeds a :class:`ChannelTap`, which rewrites the id line of every
event it passes to the stream's one mailbox. While the subscriptions are being made (and
their replays read), live events are held back; then the replays are rewritten and
queued in order, then the held events, and only then do the taps go live. From there on
an event is rewritten when it is queued, and the queue is the wire order.

Presence events (``brokers/presence.py``) have no id of their own; here they get the
stream's cursor as it stands, so ``Last-Event-ID`` stays exact across them and the part
before the first ``@`` names their channel, as for every event of the stream.

Single-channel streams do not come here: their bytes are shared by every subscriber
(encoded once) and carry the broker's own ids. The id format is ``wire/cursor.py``.
"""

from __future__ import annotations

import json
import threading

from ..metrics import Counters
from ..runtime import CloseReason, Sink, hand_off
from ..wire.cursor import format_cursor
from ..wire.event import compact_json

__all__ = ["MAX_CHANNELS", "MAX_NAMES_LENGTH", "ChannelMerge", "ChannelTap"]

MAX_CHANNELS = 32
MAX_NAMES_LENGTH = 1024  # all channel names of one stream together: bounds the id's size


class ChannelMerge:
    """The positions of one multi-channel stream, and the rewriting of its events into
    the stream's one sink."""

    def __init__(
        self, sink: Sink, counters: Counters | None = None, limit: int | None = None
    ) -> None:
        self.sink = sink
        self.counters = counters  # for an overflow of the held events (see start)
        self.limit = limit  # events held while subscribing, as the mailbox's own bound
        self.positions: dict[str, str] = {}
        self.live = False
        self._held: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()  # taps of different channels may run on threads

    def tap(self, channel: str) -> ChannelTap:
        return ChannelTap(self, channel)

    def rewrite(self, channel: str, chunk: bytes) -> bytes:
        """Give every event in ``chunk`` (one channel's encoded events) a cursor id and
        name its channel in a reset; advance the cursor."""
        out = []
        for event in chunk.split(b"\n\n"):
            if not event:
                continue
            lines = event.split(b"\n")
            if lines[0] == b"event: presence" and not any(
                line.startswith(b"id: ") for line in lines
            ):
                # not history: it leaves every position as it is, and carries the cursor
                # so that its id names its channel first like every other event's
                if channel in self.positions:
                    lines.insert(1, b"id: " + format_cursor(channel, self.positions).encode())
                out.append(b"\n".join(lines) + b"\n\n")
                continue
            for i, line in enumerate(lines):
                if line.startswith(b"id: "):
                    self.positions[channel] = line[4:].decode("utf-8")
                    lines[i] = b"id: " + format_cursor(channel, self.positions).encode()
                    break
                if line.startswith(b"data:"):
                    if lines[0] == b"event: reset":  # the broker's reset (it has no id)
                        _name_channel_in_reset(lines, i, channel)
                    break
            out.append(b"\n".join(lines) + b"\n\n")
        return b"".join(out)

    def start(
        self,
        preludes: list[tuple[str, bytes, str | None]],
        resumed_from: dict[str, str | None],
    ) -> bytes:
        """All subscriptions are made: rewrite the replays in order, queue what arrived
        meanwhile, go live. ``preludes`` holds each channel's replay and its
        subscription's cursor; ``resumed_from`` the positions the client sent. Returns
        the rewritten prelude."""
        with self._lock:
            # Before a channel's replay is written, the client is where it said it was
            # (or, new to the channel, at the subscription's start: its replay is empty).
            for channel, _chunk, start in preludes:
                position = resumed_from.get(channel) or start
                if position is not None:
                    self.positions[channel] = position
            parts = []
            for channel, chunk, end in preludes:
                if chunk:
                    parts.append(self.rewrite(channel, chunk))
                if end is not None:
                    self.positions[channel] = end  # also past a reset with nothing after
            held, self._held = self._held, []
            self.live = True
            if held:
                # counted as delivered when they were held: no second count here
                payload = b"".join(self.rewrite(channel, chunk) for channel, chunk in held)
                hand_off(self.sink, payload, self.counters, count=0)
        return b"".join(parts)

    def offer(self, channel: str, chunk: bytes) -> bool:
        with self._lock:
            if not self.live:
                if self.limit is not None and len(self._held) >= self.limit:
                    return False  # as a full mailbox: the broker cuts the stream off
                self._held.append((channel, chunk))
                return True
            return self.sink.offer(self.rewrite(channel, chunk))


def _name_channel_in_reset(lines: list[bytes], i: int, channel: str) -> None:
    """Add ``"channel"`` to a reset's JSON data (line ``i``), so the client knows which."""
    try:
        data = json.loads(lines[i][6:])
    except ValueError:
        return
    if isinstance(data, dict):
        data["channel"] = channel
        lines[i] = b"data: " + compact_json(data).encode("utf-8", "replace")


class ChannelTap:
    """What a broker sees as one channel's subscriber: a write-only sink that forwards
    into the stream's one sink through its :class:`ChannelMerge`. Closing a tap
    (overflow, broker lost) ends the stream."""

    __slots__ = ("_reason", "channel", "merge")

    def __init__(self, merge: ChannelMerge, channel: str) -> None:
        self.merge = merge
        self.channel = channel
        self._reason: CloseReason | None = None

    @property
    def reason(self) -> CloseReason | None:
        return self._reason or self.merge.sink.reason

    def offer(self, chunk: bytes) -> bool:
        if self.reason is not None:
            # the stream is ending: refused, and the broker's close that follows is no
            # second overflow (this tap reads as closed already)
            return False
        return self.merge.offer(self.channel, chunk)

    def close(self, reason: CloseReason) -> None:
        if self._reason is None:
            self._reason = reason
        self.merge.sink.close(reason)
