"""The one reader of a process: a single ``XREAD BLOCK`` loop over every key with local
followers (channels and chat generations alike), on one connection.

Keys come and go as followers do (a new key wakes the blocked read with
``CLIENT UNBLOCK``). One read returns batches across keys; while a burst keeps coming the
reader reads again every millisecond (a few rounds), then each key's entries, encoded
once, go to each follower as one chunk: one write per burst. A read is checked for a gap
only when it could hide one (as many entries as the stream's ``MAXLEN``, or a full
``COUNT``, or after an outage): a shorter read proves the stream still holds entries
before its start.

**The seam** between a follower's replay and the live entries is handled here once: the
follower joins first with live entries held back, replays, then gets the held entries
past its replay's end; while the reader is still behind that end, entries up to it are
skipped.

**Errors.** The reader never dies while followers wait: it backs off, and after
``LOST_AFTER`` seconds of failure it ends its followers' streams with a reconnect hint
(they replay once Redis is back). A key that is not a stream (``WRONGTYPE``) ends only
its own followers.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

import redis

from .. import runtime
from ..errors import BrokerError
from ..metrics import Counters
from ..runtime import CloseReason, Concurrency, Sink, hand_off
from .backoff import Backoff
from .errors import ERRORS
from .ids import ZERO, Position, parse_id, text

if TYPE_CHECKING:
    from .log import RedisLog

__all__ = ["BLOCK_MS", "Codec", "Feed", "Follower", "Reader"]

log = logging.getLogger("flask_sse_stream.redis")

BLOCK_MS = 2000  # one XREAD's wait; a new key wakes it earlier (CLIENT UNBLOCK)
READ_COUNT = 512  # entries per key per XREAD
LOST_AFTER = 10.0  # seconds of failing reads before the followers are sent to reconnect
COALESCE = 0.001  # while entries keep coming, read again after this long...
GATHER_ROUNDS = 10  # ...at most this many times before handing them over...
GATHER_BYTES = 64 * 1024  # ...or until this much is waiting...
QUIET_ROUNDS = 3  # ...or until this many rounds in a row found nothing new

Item = tuple[Position, bytes, bool]  # an entry's position, its encoded bytes, whether final


class Codec(Protocol):
    """How one key's entries become what its followers are sent."""

    def entry(self, entry_id: str, fields: dict[Any, Any]) -> tuple[bytes, bool]:
        """The encoded entry and whether it is the log's last (the followers end)."""

    def gap(self, last_id: str) -> tuple[bytes, bool]:
        """What followers get in place of entries trimmed before they were read."""


class Follower:
    """One follower of one key: where the reader hands its entries.

    ``held`` is a list while the follower's replay runs (live entries wait there);
    afterwards ``floor`` is the last replayed position while the reader is behind it.
    A multi-key subscription can own one follower per key, all on the same sink.
    ``counters`` (a channel subscriber's; None for chat followers) counts its hand-overs.
    """

    __slots__ = ("counters", "feed", "floor", "held", "position", "sink")

    def __init__(self, sink: Sink, *, replaying: bool,
                 counters: Counters | None = None) -> None:
        self.sink = sink
        self.counters = counters
        # the id after which this cursor gets the key's entries: where the feed stood when
        # it joined, then the end of its replay (a stream of several channels needs it)
        self.position: str | None = None
        self.feed: Feed | None = None
        self.held: list[tuple[Position, bytes, bool]] | None = [] if replaying else None
        self.floor: Position | None = None

    def hand(self, payload: bytes, final: bool, count: int = 1) -> None:
        """Queue ``payload`` (``count`` entries) for the follower; after the log's final
        entry its stream ends."""
        if hand_off(self.sink, payload, self.counters, count) and final:
            self.sink.close(CloseReason.FINISHED)


def _hand_items(cursor: Follower, items: list[tuple[Position, bytes, bool]]) -> None:
    if items:
        chunks = [chunk for _p, chunk, _f in items]
        payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        cursor.hand(payload, items[-1][2], len(chunks))


class Feed:
    """A key read by this process's reader, with its local cursors."""

    __slots__ = ("check", "codec", "cursors", "error", "key", "last_id", "live", "position",
                 "ready", "snapshot", "started", "trim_hint")

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
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.check = False  # verify the continuation point at the next batch


class Reader:
    """The one ``XREAD BLOCK`` loop of a process over every key with local followers."""

    def __init__(self, owner: RedisLog) -> None:
        self.log = owner
        self.feeds: dict[str, Feed] = {}
        self.lock = threading.Lock()
        self.running = False
        self.blocked = False  # an XREAD over the current keys is (about to be) waiting
        self.reading = 0  # counts the reads, so a wake-up targets one of them
        self.woken = -1
        self.client_id: int | None = None
        self._client: Any = None
        self._stopped = False

    # -- followers -----------------------------------------------------------------------

    def join(self, key: str, cursor: Follower, codec: Callable[[], Codec],
             trim_hint: int | None = None) -> Feed:
        """Add ``cursor`` to ``key``'s feed, starting one (at the stream's current end) if
        this process does not read the key yet. Raises BrokerError."""
        with self.lock:
            feed = self.feeds.get(key)
            creating = feed is None
            if feed is None:
                feed = self.feeds[key] = Feed(key, codec(), trim_hint)
            cursor.feed = feed
            cursor.position = feed.last_id  # (a new feed: set below, before it is read)
            feed.cursors.add(cursor)
            if cursor.held is None:
                feed.live.add(cursor)
                feed.snapshot = None
        if not creating:
            if not feed.started.wait(self.log.timeout) or feed.error is not None:
                self.leave(cursor)
                raise BrokerError(f"redis unavailable: {feed.error or 'timeout'}")
            return feed
        try:
            feed.last_id = cursor.position = self.log.end_id(key)
        except BrokerError as exc:
            with self.lock:
                feed.error = exc
                if self.feeds.get(key) is feed:
                    del self.feeds[key]
            feed.started.set()
            raise
        feed.position = parse_id(feed.last_id) or ZERO
        with self.lock:
            feed.ready = True
            start = not self.running and not self._stopped
            if start:
                self.running = True
        feed.started.set()
        if start:
            runtime.current().spawn(self._run, contextvars.Context())
        else:
            self._wake()
        return feed

    def go_live(self, cursor: Follower, end: str | None) -> None:
        """End ``cursor``'s replay, which read up to ``end`` (None: read nothing)."""
        floor = None if end is None else parse_id(end)
        with self.lock:
            feed = cursor.feed
            held, cursor.held = cursor.held or [], None
            if feed is None or cursor not in feed.cursors:
                return
            _hand_items(cursor, [i for i in held if floor is None or i[0] > floor])
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
            if not feed.cursors and self.feeds.get(feed.key) is feed:
                del self.feeds[feed.key]  # the reader drops the key at its next read

    def end_key(self, key: str, reason: CloseReason, chunk: bytes = b"") -> None:
        """Stop reading ``key`` and end its followers' streams (after ``chunk``)."""
        with self.lock:
            feed = self.feeds.pop(key, None)
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
            feeds, self.feeds = list(self.feeds.values()), {}
        for feed in feeds:
            self._end(feed, CloseReason.BROKER_LOST)
        self._wake()

    def _wake(self) -> None:
        """Make a blocked XREAD return, so it starts over with the new keys."""
        with self.lock:
            if not self.blocked or self.woken == self.reading or self.client_id is None:
                return
            self.woken = round_ = self.reading
            client_id = self.client_id
        sleep = runtime.current().sleep
        for _ in range(50):  # the XREAD may not have reached Redis yet: try again shortly
            try:
                if self.log.client.client_unblock(client_id):
                    return
            except ERRORS:
                return  # the BLOCK timeout is the fallback
            with self.lock:
                if not self.blocked or self.reading != round_:
                    return
            sleep(0.002)

    # -- the loop ------------------------------------------------------------------------

    def _run(self) -> None:
        concurrency = runtime.current()
        backoff = Backoff()
        failing_since: float | None = None
        try:
            while True:
                with self.lock:
                    streams = {k: f.last_id for k, f in self.feeds.items() if f.ready}
                    if not self.feeds or self._stopped:
                        self.running = False
                        return
                    self.reading += 1
                    self.blocked = bool(streams)
                try:
                    if self._client is None:
                        self._client = self.log.reader_client()
                        self.client_id = self._client.client_id()
                    response = None
                    if streams:
                        response = self._client.xread(streams, count=READ_COUNT, block=BLOCK_MS)
                    else:
                        concurrency.sleep(0.01)  # keys are being started
                    with self.lock:
                        self.blocked = False
                    if response:
                        self._gather(response, concurrency)
                except ERRORS as exc:
                    with self.lock:
                        self.blocked = False
                    failing_since = failing_since or time.monotonic()
                    if self._failed(exc, streams, failing_since, backoff):
                        failing_since = None  # those that join now get their own wait
                    continue
                except Exception:  # a bug must not leave followers waiting in silence
                    log.exception("redis reader failed; its followers reconnect")
                    self._end_all(CloseReason.BROKER_LOST)
                    runtime.current().sleep(backoff.next_delay())
                    continue
                if failing_since is not None:
                    failing_since = None
                    backoff.reset()
                    log.warning("redis reader: reading again")
                self.log.sweep_idle()
        except BaseException:  # killed (e.g. GreenletExit): a later join starts another
            with self.lock:
                self.running = self.blocked = False
            raise
        finally:
            self._close_client()

    def _close_client(self) -> None:
        client, self._client, self.client_id = self._client, None, None
        if client is not None:
            with suppress(*ERRORS):
                client.close()

    def _failed(self, exc: BaseException, streams: dict[str, str], since: float,
                backoff: Backoff) -> bool:
        """Handle a failed read; True if the followers were sent away."""
        self._close_client()
        if isinstance(exc, redis.ResponseError) and "WRONGTYPE" in str(exc):
            if not self._drop_wrong_types(streams):
                runtime.current().sleep(backoff.next_delay())
            return False
        with self.lock:
            for feed in self.feeds.values():
                feed.check = True  # after an outage, verify each key's continuation
        ended = time.monotonic() - since >= LOST_AFTER
        if ended:
            log.warning("redis reader: %s for %.0fs; ending its streams (they reconnect)",
                        exc, LOST_AFTER)
            self._end_all(CloseReason.BROKER_LOST)
        else:
            log.warning("redis reader: %s; retrying", exc)
        runtime.current().sleep(backoff.next_delay())
        return ended

    def _end_all(self, reason: CloseReason) -> None:
        with self.lock:
            feeds, self.feeds = list(self.feeds.values()), {}
        for feed in feeds:
            self._end(feed, reason)

    def _drop_wrong_types(self, streams: dict[str, str]) -> int:
        """A key that is not a stream fails the whole XREAD: end only its followers.
        Returns how many keys were dropped."""
        try:
            with self.log.client.pipeline(transaction=False) as pipe:
                for key in streams:
                    pipe.type(key)
                kinds = pipe.execute()
        except ERRORS as exc:
            log.warning("redis reader: cannot check key types: %s", exc)
            return 0
        dropped = 0
        for key, kind in zip(streams, kinds, strict=False):
            if text(kind) not in ("stream", "none"):
                log.warning("redis reader: %r is a %s, not a stream", key, text(kind))
                self.end_key(key, CloseReason.BROKER_LOST)
                dropped += 1
        return dropped

    def _gather(self, response: Any, concurrency: Concurrency) -> None:
        """Dispatch a read, and while entries keep coming (a burst), read again after
        COALESCE, up to GATHER_ROUNDS times: each live follower then gets the burst as one
        hand-over (one write) instead of one per read. Rounds, not a deadline: when the
        process is busy writing the previous batch, a publisher adds about one entry per
        round whatever the round lasts, and a deadline would then hand over one entry at
        a time. An entry after a quiet spell waits QUIET_ROUNDS * COALESCE."""
        pending: dict[Feed, list[tuple[tuple[Follower, ...], list[Item]]]] = {}
        try:
            size = self._dispatch(response, pending)
            quiet = 0
            for _ in range(GATHER_ROUNDS):
                if size >= GATHER_BYTES or quiet >= QUIET_ROUNDS:
                    break
                concurrency.sleep(COALESCE)
                with self.lock:
                    streams = {f.key: f.last_id for f in pending if self.feeds.get(f.key) is f}
                if not streams:
                    break
                more = self._client.xread(streams, count=READ_COUNT)
                quiet = 0 if more else quiet + 1
                if more:
                    size += self._dispatch(more, pending)
        finally:
            for groups in pending.values():
                _flush(groups)

    def _dispatch(self, response: Any,
                  pending: dict[Feed, list[tuple[tuple[Follower, ...], list[Item]]]]) -> int:
        """Check for gaps and deliver one read; live followers' items go to ``pending``.
        Returns the bytes added there."""
        batches = []
        checks: dict[str, str] = {}
        for raw_key, entries in response:
            key = text(raw_key)
            feed = self.feeds.get(key)
            if feed is None or not entries:
                continue
            hint = feed.trim_hint
            if feed.check or len(entries) >= READ_COUNT or (hint is not None
                                                           and len(entries) >= hint):
                checks[key] = feed.last_id
            batches.append((feed, entries))
        gaps = self.log.gaps(checks) if checks else set()
        size = 0
        for feed, entries in batches:
            feed.check = False
            size += self._deliver(feed, entries, feed.key in gaps, pending)
        return size

    def _deliver(self, feed: Feed, entries: list[Any], gap: bool,
                 pending: dict[Feed, list[tuple[tuple[Follower, ...], list[Item]]]]) -> int:
        codec = feed.codec
        items: list[Item] = []
        if gap:
            first = parse_id(text(entries[0][0])) or ZERO
            chunk, final = codec.gap(feed.last_id)
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
            if self.feeds.get(feed.key) is not feed:
                return 0  # its last follower left meanwhile
            feed.last_id, feed.position = last_id, parse_id(last_id) or ZERO
            if not items:
                return 0
            if gap:  # the gap's reset goes to each follower (counted for channels)
                for cursor in feed.cursors:
                    if cursor.counters is not None:
                        cursor.counters.resets += 1
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
                _hand_items(cursor, [i for i in items if floor is None or i[0] > floor])
                if floor is None or feed.position >= floor:
                    cursor.floor = None
                    feed.live.add(cursor)
                    feed.snapshot = None
            if items[-1][2]:
                del self.feeds[feed.key]
        if live:
            groups = pending.setdefault(feed, [])
            if groups and groups[-1][0] is live:
                groups[-1][1].extend(items)
            else:
                groups.append((live, items))
        return sum(len(chunk) for _p, chunk, _f in items)


def _flush(groups: list[tuple[tuple[Follower, ...], list[Item]]]) -> None:
    """Hand each group of items to its live followers, one chunk per follower."""
    for live, items in groups:
        chunks = [chunk for _p, chunk, _f in items]
        payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        final = items[-1][2]
        count = len(items)
        for cursor in live:
            cursor.hand(payload, final, count)
