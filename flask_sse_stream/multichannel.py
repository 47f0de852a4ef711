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

Single-channel streams do not come here: their bytes are shared by every subscriber
(encoded once) and carry the broker's own ids, as before.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable

from .event import compact_json
from .mailbox import CloseReason, Mailbox
from .metrics import Counters

__all__ = ["MAX_CHANNELS", "ChannelTap", "Cursor", "format_cursor", "parse_cursor"]

MAX_CHANNELS = 32
MAX_NAMES_LENGTH = 1024  # all channel names of one stream together: bounds the id's size


def parse_cursor(value: str | None, channels: Iterable[str]) -> dict[str, str | None]:
    """Each channel's position from a client's ``Last-Event-ID``.

    A cursor gives the positions it names (other channels: None, i.e. live from now,
    as for a channel added to the stream later). A plain id (from a single-channel
    stream), or a value naming none of the channels (junk, or another stream's cursor),
    is handed to every channel: each checks it and answers with a reset if it does not
    know it, so the client is told rather than silently taken live from now."""
    names = list(channels)
    if value is None:
        return dict.fromkeys(names)
    if "@" not in value:
        return dict.fromkeys(names, value)
    positions: dict[str, str | None] = dict.fromkeys(names)
    for part in value.split(","):
        name, sep, position = part.partition("@")
        if sep and position and name in positions and positions[name] is None:
            positions[name] = position
    if all(position is None for position in positions.values()):
        return dict.fromkeys(names, value)
    return positions


def format_cursor(first: str, positions: dict[str, str]) -> str:
    """The id of an event of channel ``first``: its position first, then the others'."""
    parts = [f"{first}@{positions[first]}"]
    parts += [f"{name}@{pos}" for name, pos in positions.items() if name != first]
    return ",".join(parts)


class Cursor:
    """The positions of one multi-channel stream, and the rewriting of its events."""

    def __init__(
        self, mailbox: Mailbox, counters: Counters | None = None, limit: int | None = None
    ) -> None:
        self.mailbox = mailbox
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
            for channel, chunk in held:
                if not self.mailbox.offer(self.rewrite(channel, chunk)):
                    if self.counters is not None and self.mailbox.reason is None:
                        self.counters.overflow_disconnects += 1
                    self.mailbox.close(CloseReason.OVERFLOW)
                    break
        return b"".join(parts)

    def offer(self, channel: str, chunk: bytes) -> bool:
        with self._lock:
            if not self.live:
                if self.limit is not None and len(self._held) >= self.limit:
                    return False  # as a full mailbox: the broker cuts the stream off
                self._held.append((channel, chunk))
                return True
            return self.mailbox.offer(self.rewrite(channel, chunk))


def _name_channel_in_reset(lines: list[bytes], i: int, channel: str) -> None:
    """Add ``"channel"`` to a reset's JSON data (line ``i``), so the client knows which."""
    try:
        data = json.loads(lines[i][6:])
    except ValueError:
        return
    if isinstance(data, dict):
        data["channel"] = channel
        lines[i] = b"data: " + compact_json(data).encode("utf-8", "replace")


class ChannelTap(Mailbox):
    """What a broker sees as one channel's subscriber: forwards into the stream's mailbox
    through its :class:`Cursor`. Closing a tap (overflow, broker lost) ends the stream."""

    __slots__ = ("channel", "cursor")

    def __init__(self, cursor: Cursor, channel: str) -> None:
        super().__init__()
        self.cursor = cursor
        self.channel = channel

    def offer(self, chunk: bytes) -> bool:
        reason = self.cursor.mailbox.reason
        if reason is not None:
            # the stream is ending: refused (not counted as delivered), and this tap is
            # closed with it, so the broker's close that follows is no second overflow
            self.reason = self.reason or reason
            return False
        return self.cursor.offer(self.channel, chunk)

    def put(self, chunk: bytes, timeout: float | None = None) -> bool:
        return self.offer(chunk)

    def close(self, reason: CloseReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.cursor.mailbox.close(reason)

    def take(self, timeout: float | None) -> list[bytes] | None:
        raise NotImplementedError("a tap is written to, never read")

    def drain(self) -> list[bytes]:
        return []
