"""Redis Streams as append-only logs: the one place that talks to Redis for both the channel
broker (``brokers/redis.py``) and the chat store (``chat/store/redis.py``).

* :class:`RedisLog` appends (``XADD``), replays (``XRANGE`` paged until the stream's end,
  however much ``MAXLEN ~`` kept) and checks continuation points; its :class:`Reader`
  (``reader.py``) follows keys live.
* **Gap detection.** Trimming removes the oldest entries, so a replay or a reader that
  continues from id ``L`` may have missed something exactly when ``L`` itself is gone
  (trimmed, or the stream was recreated, e.g. by a Redis restart without persistence).
  (``XINFO STREAM``'s ``max-deleted-entry-id`` would be more precise, but Redis 7 does not
  move it when trimming.) Each key's codec turns a gap into what its clients understand
  (``event: reset`` for channels, a ``close`` with ``finish_reason: "error"`` for chat), so
  nothing is lost in silence.
* **Connections.** Commands share one bounded, blocking pool per URL and process (idle
  connections are closed every ``IDLE_SECONDS``); the reader holds one connection while it
  has keys. Under gevent a native thread (a threadpool publishing) gets a client of its
  own: gevent's sockets belong to the thread whose hub made them.

The ``redis`` package is imported in this package only, so it is needed only with a Redis
URL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import BrokerError
from ..runtime import native_thread_ident, sockets_are_per_thread
from .errors import mapped_errors
from .ids import ZERO, Position, parse_id, text
from .reader import BLOCK_MS, Reader

__all__ = ["ZERO", "Position", "RedisLog", "Replay", "parse_id", "text"]

PAGE = 1000  # entries per XRANGE page of a replay
MAX_PAGES = 1000  # a replay that has not reached the end after this many pages gives up
COMMAND_CONNECTIONS = 32  # per URL and process, shared by appends, replays and checks
IDLE_SECONDS = 60.0  # free command connections are closed this often

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
        self._main: Any = self._command_client()
        self._home_thread = native_thread_ident()
        self._thread_clients: dict[int, Any] = {}  # native threads' own clients (gevent)
        self._thread_lock = threading.Lock()
        self.reader = Reader(self)
        self._users = 0
        self._swept = time.monotonic()

    def _command_client(self) -> Any:
        # Any: redis-py's own hints change between releases
        pool = redis.BlockingConnectionPool.from_url(
            self.url, max_connections=COMMAND_CONNECTIONS, timeout=self.timeout,
            socket_connect_timeout=self.connect_timeout, socket_timeout=self.timeout,
            health_check_interval=30,
        )
        return redis.Redis(connection_pool=pool)

    @property
    def client(self) -> Any:
        """The command client for the calling thread: the shared pool, or under gevent,
        for a native thread, a client of that thread's own (a connection made by one
        thread's hub cannot be used from another: ``greenlet.error``)."""
        ident = native_thread_ident()
        if ident == self._home_thread or not sockets_are_per_thread():
            return self._main
        client = self._thread_clients.get(ident)
        if client is None:
            with self._thread_lock:
                client = self._thread_clients.setdefault(ident, self._command_client())
        return client

    def release(self) -> None:
        with self._shared_lock:
            self._users -= 1
            if self._users > 0:
                return
            for key, value in list(self._shared.items()):
                if value is self:
                    del self._shared[key]
        self.reader.stop()
        self._main.close()
        for client in list(self._thread_clients.values()):
            client.close()

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
            self._main.connection_pool.disconnect(inuse_connections=False)

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
