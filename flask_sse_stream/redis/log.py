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
* **Connections.** One :class:`~.connection.Topology` per URL and process: the command
  clients (bounded, blocking pools; per node in a cluster; idle connections are closed
  every ``IDLE_SECONDS``) and the reader's own connections (one for a single server or
  Sentinel, one doorbell connection per primary of a cluster). Under gevent a native
  thread (a threadpool publishing) gets a topology of its own: gevent's sockets belong to
  the thread whose hub made them.
* **Appending in a cluster** rings the key's doorbell (``bells.py``: one script, on the
  key's node's own client, that carries the entry to the key's readers).
* **WAIT.** ``append(..., wait=(n, seconds))`` makes an append fail (``BrokerError``)
  unless ``n`` replicas acknowledged it: only then does a failover keep it.

The ``redis`` package is imported in this package only, so it is needed only with a Redis
URL.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from ..errors import BrokerError
from ..runtime import native_thread_ident, sockets_are_per_thread
from .bells import append_args, ring
from .connection import Topology, open_topology
from .errors import ERRORS, mapped_errors
from .ids import ZERO, Position, parse_id, text
from .reader import Reader

__all__ = ["ZERO", "Position", "RedisLog", "Replay", "parse_id", "text"]

PAGE = 1000  # entries per XRANGE page of a replay
MAX_PAGES = 1000  # a replay that has not reached the end after this many pages gives up
COMMAND_CONNECTIONS = 32  # per URL, node and process: appends, replays and checks
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
    """Streams on one Redis deployment (one per URL and process: see :meth:`open`)."""

    _shared: dict[tuple[str, float, float], RedisLog] = {}
    _shared_lock = threading.Lock()

    @classmethod
    def open(cls, url: str, *, connect_timeout: float = 2.0, timeout: float = 5.0) -> RedisLog:
        """The process's log for ``url`` (shared by the broker and the chat store, so one
        reader serves both); call :meth:`release` when done with it. Raises
        ``ValueError`` for a bad URL."""
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
        self.topology = self._open_topology()
        self.bells = self.topology.kind == "cluster"  # a cluster's readers need doorbells
        self._home_thread = native_thread_ident()
        self._thread_topologies: dict[int, Topology] = {}  # native threads' own (gevent)
        self._thread_lock = threading.Lock()
        self.reader = self._make_reader()
        self._users = 0
        self._swept = time.monotonic()

    def _open_topology(self) -> Topology:
        return open_topology(self.url, connect_timeout=self.connect_timeout,
                             timeout=self.timeout, max_connections=COMMAND_CONNECTIONS)

    def _make_reader(self) -> Reader:
        if self.bells:
            from .doorbells import DoorbellReader

            return DoorbellReader(self)
        from .blocking import BlockingReader

        return BlockingReader(self)

    def topology_for_thread(self) -> Topology:
        """The topology for the calling thread: the shared one, or under gevent, for a
        native thread, one of that thread's own (a connection made by one thread's hub
        cannot be used from another: ``greenlet.error``)."""
        ident = native_thread_ident()
        if ident == self._home_thread or not sockets_are_per_thread():
            return self.topology
        topology = self._thread_topologies.get(ident)
        if topology is None:
            with self._thread_lock:
                topology = self._thread_topologies.get(ident)
                if topology is None:
                    topology = self._thread_topologies[ident] = self._open_topology()
        return topology

    @property
    def client(self) -> Any:
        """The command client for the calling thread (a cluster client in a cluster: it
        routes every keyed command). Raises redis errors (a cluster client reads its
        slot map when made)."""
        return self.topology_for_thread().commands

    def release(self) -> None:
        with self._shared_lock:
            self._users -= 1
            if self._users > 0:
                return
            for key, value in list(self._shared.items()):
                if value is self:
                    del self._shared[key]
        self.reader.stop()
        self.topology.close()
        for topology in list(self._thread_topologies.values()):
            topology.close()

    def listener(self, channel: str) -> Any:
        """A redis-py ``PubSub`` on a connection of its own, for one long subscription
        to ``channel`` (no read timeout, no hidden retries). In a cluster a ``PUBLISH``
        reaches every node, so the channel's node serves as well as any. Raises redis
        errors."""
        topology = self.topology
        return topology.node_pubsub(topology.node_of(channel))

    def sweep_idle(self) -> None:
        """Close the free command connections now and then (they reconnect on use)."""
        now = time.monotonic()
        if now - self._swept >= IDLE_SECONDS:
            self._swept = now
            self.topology.sweep_idle()

    # -- commands ------------------------------------------------------------------------

    def append(self, key: str, fields: dict[str, Any], *, maxlen: int | None = None,
               expire: int | None = None, wait: tuple[int, float] | None = None) -> str:
        """XADD (trimmed to about ``maxlen``; expiring after ``expire`` s); the new id.
        With ``wait=(replicas, seconds)`` the append must reach that many replicas in
        that time, or it raises ``BrokerError`` (the entry may be read nonetheless)."""
        self.sweep_idle()
        with mapped_errors():
            if self.bells:
                entry_id, acked = self._ring(key, fields, maxlen, expire, wait)
            elif expire is None and wait is None:
                return text(self.client.xadd(key, fields, maxlen=maxlen, approximate=True))
            else:
                # WAIT counts what *this connection* wrote: one pipeline
                with self.client.pipeline(transaction=False) as pipe:
                    pipe.xadd(key, fields, maxlen=maxlen, approximate=True)
                    if expire is not None:
                        pipe.expire(key, expire)
                    if wait is not None:
                        pipe.wait(wait[0], max(1, int(wait[1] * 1000)))
                    results = pipe.execute()
                entry_id, acked = results[0], results[-1] if wait is not None else None
        if wait is not None and int(acked) < wait[0]:
            raise BrokerError(
                f"redis: the event was written but only {int(acked)} of {wait[0]} "
                f"replicas acknowledged it within {wait[1]:g}s (a failover may lose it)")
        return text(entry_id)

    def _ring(self, key: str, fields: dict[str, Any], maxlen: int | None,
              expire: int | None, wait: tuple[int, float] | None) -> tuple[Any, Any]:
        """A cluster's append (``bells.py``), on the key's node's own client: half the
        cluster client's cost, and the connection ``WAIT`` must use. Returns the id and
        the replicas that acknowledged it (None without ``wait``). A node that says the
        slot moved refused the write: the slot map is reloaded and the append retried
        once; a lost connection reloads the map for the next append, and raises."""
        topology = self.topology_for_thread()
        args = append_args(fields, maxlen, expire)
        for attempt in (1, 2):
            client = topology.node_commands(topology.node_of(key))
            if client is None:  # its node is no primary now
                topology.refresh()
                continue
            try:
                return ring(client, key, args, wait)
            except (redis.exceptions.MovedError, redis.exceptions.AskError):
                if attempt == 2:
                    raise
                topology.refresh()
            except (redis.ConnectionError, redis.TimeoutError):
                with contextlib.suppress(*ERRORS):
                    topology.refresh()
                raise
        raise redis.exceptions.ClusterDownError(f"no primary serves {key!r}")

    def end_entry(self, key: str) -> tuple[str, dict[Any, Any] | None]:
        """The id ("0-0" if empty or missing) and fields of the stream's last entry."""
        with mapped_errors():
            last = self.client.xrevrange(key, count=1)
        return (text(last[0][0]), last[0][1]) if last else ("0-0", None)

    def end_id(self, key: str) -> str:
        """The id of the stream's last entry ("0-0" if empty or missing)."""
        return self.end_entry(key)[0]

    def key_types(self, keys: list[str]) -> dict[str, str]:
        """``TYPE`` of each key, pipelined. Raises redis errors."""
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.type(key)
            kinds = pipe.execute()
        return {key: text(kind) for key, kind in zip(keys, kinds, strict=False)}

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

    def gaps(self, points: dict[str, str], client: Any = None) -> set[str]:
        """The keys whose continuation point (key -> last id read) was trimmed away (or
        whose stream was recreated) since: entries after it may be lost. ``client``: the
        server to ask (the one the reader read from; default the command client).

        Conservative: a point trimmed just after the read that went past it counts too
        (the reader was a whole history behind anyway).
        """
        keys = list(points)
        with (client or self.client).pipeline(transaction=False) as pipe:
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
