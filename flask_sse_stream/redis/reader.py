"""The one reader of a process: every key with local followers (channels and chat
generations alike), read on a constant number of connections whatever the number of
keys, followers or streams. How it reads depends on the topology (``blocking.py``: one
``XREAD BLOCK`` over every key, for one server or Sentinel; ``doorbells.py``: one
doorbell connection per primary of a Redis Cluster); what it does with what it read is
here, once.

One read returns batches across keys; while a burst keeps coming the reader reads again
every millisecond (a few rounds), then each key's entries, encoded once, go to each
follower as one chunk: one write per burst. A read is checked for a gap only when it
could hide one (as many entries as the stream's ``MAXLEN``, or a full ``COUNT``, or
after an outage): a shorter read proves the stream still holds entries before its start.

**The seam** between a follower's replay and the live entries is handled here once: the
follower joins first with live entries held back, replays, then gets the held entries
past its replay's end; while the reader is still behind that end, entries up to it are
skipped.

**Outages.** After a lost connection every feed is unsettled until its position was
checked on the server now serving it (``recovery.py``): a position that server does not
hold gives the followers the codec's gap at once. The reader never dies while followers
wait: it backs off, and after ``LOST_AFTER`` seconds of failure it ends its followers'
streams with a reconnect hint (they replay once Redis is back). A key that is not a
stream (``WRONGTYPE``) ends only its own followers.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import runtime
from ..errors import BrokerError
from ..runtime import CloseReason, Concurrency
from .feeds import GAP_POSITION, Codec, Feed, Follower, Item, Read, flush, hand_items
from .ids import ZERO, parse_id, text

if TYPE_CHECKING:
    from .log import RedisLog

__all__ = ["BLOCK_MS", "LOST_AFTER", "READ_COUNT", "Codec", "Feed", "Follower", "Reader"]

log = logging.getLogger("flask_sse_stream.redis")

BLOCK_MS = 2000  # one XREAD's wait; a new key wakes it earlier (CLIENT UNBLOCK)
READ_COUNT = 512  # entries per key per XREAD
LOST_AFTER = 10.0  # seconds of failing reads before the followers are sent to reconnect
COALESCE = 0.001  # while entries keep coming, read again after this long...
GATHER_ROUNDS = 10  # ...at most this many times before handing them over...
GATHER_BYTES = 64 * 1024  # ...or until this much is waiting...
QUIET_ROUNDS = 3  # ...or until this many rounds in a row found nothing new

Pending = dict[Feed, list[tuple[tuple[Follower, ...], list[Item]]]]


class Reader:
    """Feeds and their followers; subclasses read (see the module docstring)."""

    def __init__(self, owner: RedisLog) -> None:
        self.log = owner
        self.feeds: dict[str, Feed] = {}
        self.lock = threading.Lock()
        self.running = False
        self._stopped = False

    # -- what a topology's reader defines ------------------------------------------------

    def _subscribe(self, feed: Feed) -> None:
        """Before a new feed reads its start: make sure new entries will be seen (a
        cluster's doorbell). Raises BrokerError."""

    def _started(self, feed: Feed) -> None:
        """A new feed is ready: read it (start the loop, or wake it)."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        """Stop reading (after :meth:`stop` ended every feed)."""

    # -- followers -----------------------------------------------------------------------

    def join(self, key: str, cursor: Follower, codec: Callable[[], Codec],
             trim_hint: int | None = None) -> Feed:
        """Add ``cursor`` to ``key``'s feed, starting one (at the stream's current end) if
        this process does not read the key yet. Waits while the feed's position is
        being checked after an outage. Raises BrokerError."""
        deadline = time.monotonic() + self.log.timeout
        while True:
            with self.lock:
                feed = self.feeds.get(key)
                if feed is None:
                    feed = self.feeds[key] = Feed(key, codec(), trim_hint)
                    self._attach(feed, cursor)
                    break
                if feed.ready and feed.settled.is_set():
                    self._attach(feed, cursor)
                    return feed
            left = deadline - time.monotonic()
            if left <= 0 or feed.error is not None:
                raise BrokerError(f"redis unavailable: {feed.error or 'timeout'}")
            feed.settled.wait(left)
        try:
            self._subscribe(feed)
            end, fields = self.log.end_entry(key)
        except BrokerError as exc:
            with self.lock:
                feed.error = exc
                self._drop(feed)
            raise
        feed.codec.start(fields)
        with self.lock:
            feed.last_id = cursor.position = end
            feed.position = parse_id(end) or ZERO
            feed.ready = True
        feed.settled.set()
        self._started(feed)
        return feed

    @staticmethod
    def _attach(feed: Feed, cursor: Follower) -> None:
        cursor.feed = feed
        cursor.position = feed.last_id
        feed.cursors.add(cursor)
        if cursor.held is None:
            feed.live.add(cursor)
            feed.snapshot = None

    def _drop(self, feed: Feed) -> None:
        """Forget ``feed`` (under the lock); those waiting to join it look again."""
        if self.feeds.get(feed.key) is feed:
            del self.feeds[feed.key]
        feed.settled.set()

    def go_live(self, cursor: Follower, end: str | None) -> None:
        """End ``cursor``'s replay, which read up to ``end`` (None: read nothing)."""
        floor = None if end is None else parse_id(end)
        with self.lock:
            feed = cursor.feed
            held, cursor.held = cursor.held or [], None
            rewound, cursor.rewound = cursor.rewound, None
            if feed is None or cursor not in feed.cursors:
                return
            cut = len(held) if rewound is None else rewound
            # after a rewind the entries come from a new history: none was replayed
            hand_items(cursor, [i for i in held[:cut] if floor is None or i[0] > floor]
                       + held[cut:])
            if rewound is not None:
                floor = None
            if floor is None or feed.position >= floor:
                feed.live.add(cursor)
                feed.snapshot = None
            else:
                cursor.floor = floor

    def leave(self, cursor: Follower) -> None:
        with self.lock:
            feed = cursor.feed
            if feed is None:
                return
            feed.cursors.discard(cursor)
            feed.live.discard(cursor)
            feed.snapshot = None
            if not feed.cursors:
                self._drop(feed)  # the reader stops reading the key at its next read

    def end_key(self, key: str, reason: CloseReason, chunk: bytes = b"") -> None:
        """Stop reading ``key`` and end its followers' streams (after ``chunk``)."""
        with self.lock:
            feed = self.feeds.get(key)
            if feed is not None:
                self._drop(feed)
        if feed is not None:
            self._end(feed, reason, chunk)

    @staticmethod
    def _end(feed: Feed, reason: CloseReason, chunk: bytes = b"") -> None:
        for cursor in list(feed.cursors):
            if chunk:
                cursor.sink.offer(chunk)
            cursor.sink.close(reason)
        feed.cursors.clear()
        feed.live.clear()
        feed.snapshot = None

    def _end_all(self, reason: CloseReason, keys: set[str] | None = None) -> None:
        """End the followers of ``keys`` (all if None)."""
        with self.lock:
            feeds = [f for k, f in self.feeds.items() if keys is None or k in keys]
            for feed in feeds:
                self._drop(feed)
        for feed in feeds:
            self._end(feed, reason)

    def followed_keys(self) -> list[str]:
        with self.lock:
            return list(self.feeds)

    def follower_counts(self, prefix: str, codec: type) -> dict[str, int]:
        """Followers per key (``prefix`` stripped) of the keys read with ``codec``."""
        with self.lock:
            return {
                key[len(prefix):]: len(feed.cursors)
                for key, feed in self.feeds.items()
                if isinstance(feed.codec, codec) and key.startswith(prefix) and feed.cursors
            }

    def stop(self) -> None:
        with self.lock:
            self._stopped = True
        self._end_all(CloseReason.BROKER_LOST)
        self._shutdown()

    # -- after an outage -----------------------------------------------------------------

    def unsettle(self, keys: set[str] | None = None) -> None:
        """The connection serving ``keys`` (all if None) was lost: hold new followers
        back and check each continuation point at its next batch."""
        with self.lock:
            for key, feed in self.feeds.items():
                if keys is None or key in keys:
                    feed.check = True
                    feed.settled.clear()

    def positions(self, keys: set[str] | None = None) -> dict[str, str]:
        """The feeds' last ids (those of ``keys``, all if None) worth checking."""
        with self.lock:
            return {k: f.last_id for k, f in self.feeds.items()
                    if f.ready and f.last_id != "0-0" and (keys is None or k in keys)}

    def settle(self, lost: dict[str, bool], keys: set[str] | None = None) -> None:
        """The positions were checked: give each feed in ``lost`` its gap now (rewinding
        to ``0-0`` where its stream went backwards), then let followers join again."""
        for key, rewind in lost.items():
            self._recover(key, rewind)
        with self.lock:
            for key, feed in self.feeds.items():
                if feed.ready and (keys is None or key in keys):
                    feed.settled.set()

    def _recover(self, key: str, rewind: bool) -> None:
        with self.lock:
            feed = self.feeds.get(key)
        if feed is None:
            return
        log.warning("redis reader: %r does not hold %s any more%s", key, feed.last_id,
                    "; its ids went backwards: reading it from the start" if rewind else "")
        chunk, final = feed.codec.gap(feed.last_id)
        item = (GAP_POSITION, chunk, final)
        with self.lock:
            if self.feeds.get(key) is not feed:
                return
            if rewind:
                feed.last_id, feed.position = "0-0", ZERO
            self._count_resets(feed)
            live = feed.snapshot = tuple(feed.live)
            for cursor in feed.cursors - feed.live:
                if cursor.held is not None:
                    if rewind and cursor.rewound is None:
                        cursor.rewound = len(cursor.held)
                    cursor.held.append(item)
                    continue
                hand_items(cursor, [item])
                if rewind:
                    cursor.floor = None
                    feed.live.add(cursor)
                    feed.snapshot = None
            if final:
                self._drop(feed)
        for cursor in live:
            cursor.hand(chunk, final)

    @staticmethod
    def _count_resets(feed: Feed) -> None:
        for cursor in feed.cursors:  # the gap goes to each follower (counted for channels)
            if cursor.counters is not None:
                cursor.counters.resets += 1

    # -- delivering what was read --------------------------------------------------------

    def gather(self, first: Read, read_more: Callable[[Pending], Read | None],
                concurrency: Concurrency, *, client: Any) -> None:
        """Dispatch a read, and while entries keep coming (a burst), read again after
        COALESCE, up to GATHER_ROUNDS times: each live follower then gets the burst as one
        hand-over (one write) instead of one per read. Rounds, not a deadline: when the
        process is busy writing the previous batch, a publisher adds about one entry per
        round whatever the round lasts, and a deadline would then hand over one entry at
        a time. An entry after a quiet spell waits QUIET_ROUNDS * COALESCE.
        ``read_more(pending)`` reads again (None: nothing left to read); ``client``
        checks for gaps on the server that was read."""
        pending: Pending = {}
        try:
            size = self._dispatch(first, pending, client)
            quiet = 0
            for _ in range(GATHER_ROUNDS):
                if size >= GATHER_BYTES or quiet >= QUIET_ROUNDS:
                    break
                concurrency.sleep(COALESCE)
                more = read_more(pending)
                if more is None:
                    break
                found = any(entries for _k, _s, entries in more)
                quiet = 0 if found else quiet + 1
                if found:
                    size += self._dispatch(more, pending, client)
        finally:
            for groups in pending.values():
                flush(groups)

    def _dispatch(self, read: Read, pending: Pending, client: Any) -> int:
        """Check for gaps and deliver one read; live followers' items go to ``pending``.
        Returns the bytes added there. Raises redis errors (from the gap check)."""
        batches = []
        checks: dict[str, str] = {}
        for key, since, entries in read:
            feed = self.feeds.get(key)
            if feed is None or not entries or feed.last_id != since:
                continue
            hint = feed.trim_hint
            if feed.check or len(entries) >= READ_COUNT or (hint is not None
                                                           and len(entries) >= hint):
                checks[key] = since
            batches.append((feed, since, entries))
        gaps = self.log.gaps(checks, client) if checks else set()
        size = 0
        for feed, since, entries in batches:
            feed.check = False
            size += self._deliver(feed, since, entries, feed.key in gaps, pending)
        return size

    def _deliver(self, feed: Feed, since: str, entries: list[Any], gap: bool,
                 pending: Pending) -> int:
        codec = feed.codec
        items: list[Item] = []
        if gap:
            first = parse_id(text(entries[0][0])) or ZERO
            chunk, final = codec.gap(since)
            items.append((first, chunk, final))
        for raw_id, fields in entries:
            if items and items[-1][2]:
                break  # after a final entry there is nothing more to send
            entry_id = text(raw_id)
            chunk, final = codec.entry(entry_id, fields)
            if chunk:
                items.append((parse_id(entry_id) or ZERO, chunk, final))
        last_id = text(entries[-1][0])
        with self.lock:
            if self.feeds.get(feed.key) is not feed or feed.last_id != since:
                return 0  # its last follower left meanwhile, or it was read elsewhere
            feed.last_id, feed.position = last_id, parse_id(last_id) or ZERO
            if not items:
                return 0
            if gap:
                self._count_resets(feed)
            # the live ones before this batch: a cursor that catches up below already got
            # its part of the batch, and must not get the rest twice
            live = feed.snapshot
            if live is None:
                live = feed.snapshot = tuple(feed.live)
            for cursor in feed.cursors - feed.live:  # replaying, or behind its replay
                if cursor.held is not None:
                    cursor.held += items
                    continue
                floor = cursor.floor
                hand_items(cursor, [i for i in items if floor is None or i[0] > floor])
                if floor is None or feed.position >= floor:
                    cursor.floor = None
                    feed.live.add(cursor)
                    feed.snapshot = None
            if items[-1][2]:
                self._drop(feed)
        if live:
            groups = pending.setdefault(feed, [])
            if groups and groups[-1][0] is live:
                groups[-1][1].extend(items)
            else:
                groups.append((live, items))
        return sum(len(chunk) for _p, chunk, _f in items)

    # -- shared by the loops -------------------------------------------------------------

    def _start_loop(self, run: Callable[[], None]) -> bool:
        """Start the read loop ``run`` unless it runs already (or the reader stopped);
        True if it was started now."""
        with self.lock:
            start = not self.running and not self._stopped
            if start:
                self.running = True
        if start:
            self._spawn(run)
        return start

    @staticmethod
    def _spawn(target: Callable[[], None]) -> None:
        runtime.current().spawn(target, contextvars.Context())
