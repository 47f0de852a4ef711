"""What a process's reader follows: a :class:`Feed` per Redis key with local followers,
a :class:`Follower` per (stream, key), and each key's :class:`Codec` (how its entries
become what followers are sent). Shared by every reader, whatever the topology.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from ..metrics import Counters
from ..runtime import CloseReason, Sink, hand_off
from .ids import ZERO, Position

__all__ = ["GAP_POSITION", "Codec", "Feed", "Follower", "Item", "Read", "flush", "hand_items"]

Item = tuple[Position, bytes, bool]  # an entry's position, its encoded bytes, whether final
# one read: (key, the id it was read after, the entries); the same for every topology
Read = list[tuple[str, str, list[Any]]]
# where a recovery's gap sorts: after any position, so no replay's floor filters it out
GAP_POSITION: Position = (1 << 64, 0)


class Codec(Protocol):
    """How one key's entries become what its followers are sent."""

    def start(self, fields: dict[Any, Any] | None) -> None:
        """The feed starts after the entry with ``fields`` (None: the stream is empty)."""

    def entry(self, entry_id: str, fields: dict[Any, Any]) -> tuple[bytes, bool]:
        """The encoded entry and whether it is the log's last (the followers end)."""

    def gap(self, last_id: str) -> tuple[bytes, bool]:
        """What followers get in place of entries lost before they were read."""


class Follower:
    """One follower of one key: where the reader hands its entries.

    ``held`` is a list while the follower's replay runs (live entries wait there);
    afterwards ``floor`` is the last replayed position while the reader is behind it.
    ``rewound`` is the index in ``held`` from which entries come from a stream that
    went backwards during the replay (they pass any floor). A multi-key subscription
    can own one follower per key, all on the same sink. ``counters`` (a channel
    subscriber's; None for chat followers) counts its hand-overs.
    """

    __slots__ = ("counters", "feed", "floor", "held", "position", "rewound", "sink")

    def __init__(self, sink: Sink, *, replaying: bool,
                 counters: Counters | None = None) -> None:
        self.sink = sink
        self.counters = counters
        # the id after which this cursor gets the key's entries: where the feed stood when
        # it joined, then the end of its replay (a stream of several channels needs it)
        self.position: str | None = None
        self.feed: Feed | None = None
        self.held: list[Item] | None = [] if replaying else None
        self.floor: Position | None = None
        self.rewound: int | None = None

    def hand(self, payload: bytes, final: bool, count: int = 1) -> None:
        """Queue ``payload`` (``count`` entries) for the follower; after the log's final
        entry its stream ends."""
        if hand_off(self.sink, payload, self.counters, count) and final:
            self.sink.close(CloseReason.FINISHED)


def hand_items(cursor: Follower, items: list[Item]) -> None:
    """Hand ``items`` to one follower as one chunk."""
    if items:
        chunks = [chunk for _p, chunk, _f in items]
        payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        cursor.hand(payload, items[-1][2], len(chunks))


def flush(groups: list[tuple[tuple[Follower, ...], list[Item]]]) -> None:
    """Hand each group of items to its live followers, one chunk per follower."""
    for live, items in groups:
        chunks = [chunk for _p, chunk, _f in items]
        payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        final = items[-1][2]
        count = len(items)
        for cursor in live:
            cursor.hand(payload, final, count)


class Feed:
    """A key read by this process's reader, with its local cursors.

    ``settled`` is set while the feed's position is known to be right: cleared when the
    reader lost its connection (a failover or a restart may have replaced the history),
    set again once the position was checked on the server now serving the key. A
    cursor joins an existing feed only while it is settled, so its start is exact.
    """

    __slots__ = ("check", "codec", "confirmed", "cursors", "error", "key", "last_id", "live",
                 "position", "ready", "settled", "snapshot", "trim_hint")

    def __init__(self, key: str, codec: Codec, trim_hint: int | None) -> None:
        self.key = key
        self.codec = codec
        self.trim_hint = trim_hint  # the stream's MAXLEN: a batch this long may hide a gap
        self.last_id = "0-0"
        self.position = ZERO
        self.live: set[Follower] = set()
        self.snapshot: tuple[Follower, ...] | None = None  # tuple(live), rebuilt on change
        self.cursors: set[Follower] = set()  # all of them (live and catching up)
        self.ready = False
        self.settled = threading.Event()
        self.confirmed = threading.Event()  # its doorbell is subscribed (a cluster)
        self.error: BaseException | None = None
        self.check = False  # verify the continuation point at the next batch
