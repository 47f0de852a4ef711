"""Redis Streams as append-only logs: the one place that talks to Redis for both the channel
broker (``brokers/redis.py``) and the chat store (``chat/redis_store.py``).

* :class:`RedisLog` appends (``XADD``), replays (``XRANGE`` paged until the stream's end,
  however much ``MAXLEN ~`` kept) and follows keys live through its :class:`Reader`.
* **Gap detection.** Trimming removes the oldest entries, so a replay or a reader that
  continues from id ``L`` may have missed something exactly when ``L`` itself is gone
  (trimmed, or the stream was recreated, e.g. by a Redis restart without persistence).
  (``XINFO STREAM``'s ``max-deleted-entry-id`` would be more precise, but Redis 7 does not
  move it when trimming.) Each key's codec turns a gap into what its clients understand
  (``event: reset`` for channels, a ``close`` with ``finish_reason: "error"`` for chat), so
  nothing is lost in silence.
* **One reader per process for every key.** A single ``XREAD BLOCK`` over all keys with
  local followers, on one connection; keys come and go as followers do (a new key wakes
  the blocked read with ``CLIENT UNBLOCK``). One read returns batches across keys; while a
  burst keeps coming the reader reads again every millisecond (a few rounds), then each
  key's entries, encoded once, go to each follower as one chunk: one write per burst.
  A read is checked for a gap only when it could hide one (as many entries as the
  stream's ``MAXLEN``, or a full ``COUNT``, or after an outage): a shorter read proves the
  stream still holds entries before its start.
* **The seam** between a follower's replay and the live entries is handled here once: the
  follower joins first with live entries held back, replays, then gets the held entries
  past its replay's end; while the reader is still behind that end, entries up to it are
  skipped.
* **Errors.** Every Redis error becomes :class:`BrokerError` in :func:`broker_error`; the
  reader never dies while followers wait: it backs off (:class:`Backoff`), and after
  ``LOST_AFTER`` seconds of failure it ends its followers' streams with a reconnect hint
  (they replay once Redis is back). A key that is not a stream (``WRONGTYPE``) ends only
  its own followers.
* **Connections.** Commands share one bounded, blocking pool per URL and process (idle
  connections are closed every ``IDLE_SECONDS``); the reader holds one connection while it
  has keys and closes it when it has none. Keys are grouped by nothing yet; a Redis Cluster
  version would run one reader per node over the keys that hash there.

The ``redis`` package is imported here only, so it is needed only with a Redis URL.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..concurrency import Concurrency
from ..concurrency import current as current_concurrency
from ..mailbox import CloseReason, Mailbox
from ..metrics import Counters
from .base import BrokerError

__all__ = [
    "ERRORS",
    "Backoff",
    "Codec",
    "Cursor",
    "RedisLog",
    "Replay",
    "broker_error",
    "parse_id",
    "text",
]

log = logging.getLogger("flask_sse_stream.redis")

ERRORS = (redis.RedisError, OSError)
BLOCK_MS = 2000  # one XREAD's wait; a new key wakes it earlier (CLIENT UNBLOCK)
READ_COUNT = 512  # entries per key per XREAD
PAGE = 1000  # entries per XRANGE page of a replay
MAX_PAGES = 1000  # a replay that has not reached the end after this many pages gives up
COMMAND_CONNECTIONS = 32  # per URL and process, shared by appends, replays and checks
LOST_AFTER = 10.0  # seconds of failing reads before the followers are sent to reconnect
IDLE_SECONDS = 60.0  # free command connections are closed this often
COALESCE = 0.001  # while entries keep coming, read again after this long...
GATHER_ROUNDS = 10  # ...at most this many times before handing them over...
GATHER_BYTES = 64 * 1024  # ...or until this much is waiting...
QUIET_ROUNDS = 3  # ...or until this many rounds in a row found nothing new

Position = tuple[int, int]
ZERO: Position = (0, 0)
Item = tuple[Position, bytes, bool]  # an entry's position, its encoded bytes, whether final


def parse_id(entry_id: str) -> Position | None:
    ms, _, seq = entry_id.partition("-")
    # isascii: str.isdigit() also takes "²" or "០", which int() refuses (a 500)
    if not (ms.isascii() and seq.isascii() and ms.isdigit() and seq.isdigit()
            and len(ms) < 20 and len(seq) < 20):
        return None
    return int(ms), int(seq)


def text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def broker_error(exc: BaseException) -> BrokerError:
    """The one translation of a Redis failure into what callers handle."""
    if isinstance(exc, redis.ResponseError):
        return BrokerError(f"redis refused the command: {exc}")
    return BrokerError(f"redis unavailable: {exc}")


@contextmanager
def mapped_errors() -> Iterator[None]:
    try:
        yield
    except ERRORS as exc:
        raise broker_error(exc) from exc


class Backoff:
    """Doubling waits (through the runtime seam) between retries of a background loop."""

    def __init__(self, concurrency: Concurrency, first: float = 0.1, limit: float = 2.0):
        self._sleep = concurrency.sleep
        self._first = self._next = first
        self._limit = limit

    def reset(self) -> None:
        self._next = self._first

    def wait(self) -> float:
        delay = self._next
        self._next = min(delay * 2, self._limit)
        self._sleep(delay)
        return delay


class Codec(Protocol):
    """How one key's entries become what its followers are sent."""

    def entry(self, entry_id: str, fields: dict[Any, Any]) -> tuple[bytes, bool]:
        """The encoded entry and whether it is the log's last (the followers end)."""

    def gap(self, last_id: str) -> tuple[bytes, bool]:
        """What followers get in place of entries trimmed before they were read."""


class Cursor:
    """One follower of one key: where the reader hands its entries.

    ``held`` is a list while the follower's replay runs (live entries wait there);
    afterwards ``floor`` is the last replayed position while the reader is behind it.
    A multi-key subscription can own one cursor per key, all on the same mailbox.
    ``counters`` (a channel subscriber's; None for chat followers) counts its hand-overs.
    """

    __slots__ = ("counters", "feed", "floor", "held", "mailbox", "position")

    def __init__(self, mailbox: Mailbox, *, replaying: bool,
                 counters: Counters | None = None) -> None:
        self.mailbox = mailbox
        self.counters = counters
        # the id after which this cursor gets the key's entries: where the feed stood when
        # it joined, then the end of its replay (a stream of several channels needs it)
        self.position: str | None = None
        self.feed: Feed | None = None
        self.held: list[tuple[Position, bytes, bool]] | None = [] if replaying else None
        self.floor: Position | None = None

    def hand(self, payload: bytes, final: bool, count: int = 1) -> None:
        """Queue ``payload`` (``count`` entries) for the follower."""
        # counted before the offer, so whoever sees the event sees it counted
        counters = self.counters
        if counters is not None:
            counters.delivered += count
        if not self.mailbox.offer(payload):
            if counters is not None:
                counters.delivered -= count
                if self.mailbox.reason is None:  # full, not closed already: an overflow
                    counters.overflow_disconnects += 1
            self.mailbox.close(CloseReason.OVERFLOW)  # it reconnects and replays
            return
        if final:
            self.mailbox.close(CloseReason.FINISHED)


def _hand_items(cursor: Cursor, items: list[tuple[Position, bytes, bool]]) -> None:
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
        self.live: set[Cursor] = set()
        self.snapshot: tuple[Cursor, ...] | None = None  # tuple(live), rebuilt on change
        self.cursors: set[Cursor] = set()  # all of them (live and catching up)
        self.ready = False
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.check = False  # verify the continuation point at the next batch


@dataclass
class Replay:
    """What a replay read: the entries after the start (all that is kept after a reset),
    the id it ended at, and why it is not an exact continuation (None if it is)."""

    entries: list[tuple[str, dict[Any, Any]]]
    end: str | None
    reset: str | None


def _after(a: str, b: str) -> bool:
    return (parse_id(a) or ZERO) > (parse_id(b) or ZERO)


class RedisLog:
    """Streams on one Redis (one per URL and process: see :meth:`open`)."""

    _shared: dict[tuple[str, float, float], RedisLog] = {}
    _shared_lock = threading.Lock()

    @classmethod
    def open(cls, url: str, *, connect_timeout: float = 2.0, timeout: float = 5.0) -> RedisLog:
        """The process's log for ``url`` (shared by the broker and the chat store, so one
        reader serves both); call :meth:`release` when done with it."""
        with cls._shared_lock:
            key = (url, connect_timeout, timeout)
            found = cls._shared.get(key)
            if found is None:
                found = cls._shared[key] = cls(url, connect_timeout=connect_timeout,
                                               timeout=timeout)
            found._users += 1
            return found

    def __init__(self, url: str, *, connect_timeout: float = 2.0, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=COMMAND_CONNECTIONS, timeout=timeout,
            socket_connect_timeout=connect_timeout, socket_timeout=timeout,
            health_check_interval=30,
        )
        # Any: redis-py's own hints change between releases
        self.client: Any = redis.Redis(connection_pool=pool)
        self.reader = Reader(self)
        self._users = 0
        self._swept = time.monotonic()

    def release(self) -> None:
        with self._shared_lock:
            self._users -= 1
            if self._users > 0:
                return
            for key, value in list(self._shared.items()):
                if value is self:
                    del self._shared[key]
        self.reader.stop()
        self.client.close()

    def reader_client(self) -> Any:
        """A connection of its own for the reader's blocking reads (no hidden retries:
        the reader's back-off decides)."""
        return redis.Redis.from_url(
            self.url, single_connection_client=True, socket_keepalive=True,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=BLOCK_MS / 1000 + self.timeout, retry=Retry(NoBackoff(), 0),
        )

    def pubsub_client(self) -> Any:
        """A client for one long pub/sub subscription (no read timeout)."""
        return redis.Redis.from_url(
            self.url, socket_keepalive=True, socket_connect_timeout=self.connect_timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def sweep_idle(self) -> None:
        """Close the free command connections now and then (they reconnect on use)."""
        now = time.monotonic()
        if now - self._swept >= IDLE_SECONDS:
            self._swept = now
            self.client.connection_pool.disconnect(inuse_connections=False)

    # -- commands ------------------------------------------------------------------------

    def append(self, key: str, fields: dict[str, Any], *, maxlen: int | None = None,
               expire: int | None = None) -> str:
        """XADD (trimmed to about ``maxlen``; expiring after ``expire`` s); the new id."""
        self.sweep_idle()
        with mapped_errors():
            if expire is None:
                entry_id = self.client.xadd(key, fields, maxlen=maxlen, approximate=True)
            else:
                with self.client.pipeline(transaction=False) as pipe:
                    pipe.xadd(key, fields, maxlen=maxlen, approximate=True)
                    pipe.expire(key, expire)
                    entry_id = pipe.execute()[0]
        return text(entry_id)

    def end_id(self, key: str) -> str:
        """The id of the stream's last entry ("0-0" if empty or missing)."""
        with mapped_errors():
            last = self.client.xrevrange(key, count=1)
        return text(last[0][0]) if last else "0-0"

    def replay(self, key: str, after: str | None) -> Replay:
        """The entries after ``after`` (all kept ones if None), paged to the stream's end.

        Every page starts *at* the id it continues from (inclusive), so a continuation
        point trimmed away, before the first page or between two, is seen: the result
        then says ``reset`` and holds what is still kept, instead of stopping short or
        skipping in silence.
        """
        reset: str | None = None
        if after is not None and parse_id(after) is None:
            reset, after = "unknown event id", None
        elif after == "0-0":  # before the first entry: exact unless any was ever removed
            if self.gaps({key: after}):
                reset = "event id older than the history"
            after = None
        entries: list[tuple[str, dict[Any, Any]]] = []
        start = after  # None: from the stream's start
        for _ in range(MAX_PAGES):
            with mapped_errors():
                page = self.client.xrange(key, min=start or "-", max="+", count=PAGE)
            full = len(page) >= PAGE
            page = [(text(raw_id), fields) for raw_id, fields in page]
            if start is not None:
                if page and page[0][0] == start:
                    page = page[1:]
                elif reset is None:
                    reset = self._why_not_kept(key, start, first_page=start == after)
            entries += page
            if not full:
                if reset == "unknown event id" and not entries and after is not None:
                    # past the stream's end (another server's id, a clock ahead): what
                    # the stream keeps, as for any unknown id
                    whole = self.replay(key, None)
                    return Replay(whole.entries, whole.end, reset)
                end = entries[-1][0] if entries else (None if reset else after)
                return Replay(entries, end, reset)
            start = entries[-1][0]
        raise BrokerError("redis: the replay did not reach the stream's end")

    def _why_not_kept(self, key: str, start: str, *, first_page: bool) -> str:
        if not first_page:
            return "events were trimmed during the replay"
        with mapped_errors():
            first = self.client.xrange(key, count=1)
        if first and _after(text(first[0][0]), start):
            return "event id older than the history"
        return "unknown event id"

    def gaps(self, points: dict[str, str]) -> set[str]:
        """The keys whose continuation point (key -> last id read) was trimmed away (or
        whose stream was recreated) since: entries after it may be lost.

        Conservative: a point trimmed just after the read that went past it counts too
        (the reader was a whole history behind anyway).
        """
        keys = list(points)
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                if points[key] == "0-0":
                    pipe.xinfo_stream(key)
                else:
                    pipe.xrange(key, min=points[key], max=points[key], count=1)
            results = pipe.execute(raise_on_error=False)
        found = set()
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, redis.ResponseError) and "no such key" in str(result):
                continue  # a stream started at 0-0 that is gone again
            if isinstance(result, BaseException):
                raise result
            if points[key] == "0-0":  # read from the start: was anything ever removed?
                if int(result.get("entries-added", 0)) > int(result.get("length", 0)):
                    found.add(key)
            elif not result:
                found.add(key)
        return found


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

    def join(self, key: str, cursor: Cursor, codec: Callable[[], Codec],
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
            current_concurrency().spawn(self._run, contextvars.Context())
        else:
            self._wake()
        return feed

    def go_live(self, cursor: Cursor, end: str | None) -> None:
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

    def leave(self, cursor: Cursor) -> None:
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
                cursor.mailbox.offer(chunk)
            cursor.mailbox.close(reason)
        feed.cursors.clear()
        feed.live.clear()
        feed.snapshot = None

    def followed_keys(self) -> list[str]:
        with self.lock:
            return list(self.feeds)

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
        sleep = current_concurrency().sleep
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
        concurrency = current_concurrency()
        backoff = Backoff(concurrency)
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
                    backoff.wait()
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
                backoff.wait()
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
        backoff.wait()
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
        pending: dict[Feed, list[tuple[tuple[Cursor, ...], list[Item]]]] = {}
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
                  pending: dict[Feed, list[tuple[tuple[Cursor, ...], list[Item]]]]) -> int:
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
                 pending: dict[Feed, list[tuple[tuple[Cursor, ...], list[Item]]]]) -> int:
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


def _flush(groups: list[tuple[tuple[Cursor, ...], list[Item]]]) -> None:
    """Hand each group of items to its live followers, one chunk per follower."""
    for live, items in groups:
        chunks = [chunk for _p, chunk, _f in items]
        payload = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        final = items[-1][2]
        count = len(items)
        for cursor in live:
            cursor.hand(payload, final, count)
