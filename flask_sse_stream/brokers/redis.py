"""``redis://``: channels as Redis Streams, shared by every worker and host.

* ``publish`` is one ``XADD ... MAXLEN ~ SSE_HISTORY_SIZE``: Redis assigns the id, and the
  stream is the history that replay reads (``XRANGE``), on any host.
* Each process runs one reader per channel that has local subscribers: a single blocking
  ``XREAD`` loop on one connection, whatever the number of clients. It encodes each entry
  once and hands the same bytes to every local subscriber.
* A subscriber that resumes from ``Last-Event-ID`` joins the reader first (live entries are
  held back), then reads the history after its id, then gets the held-back entries newer
  than the history's end; while the reader is still behind that end, live entries up to it
  are skipped: no gap and no duplicate at the seam.
* If Redis goes away the readers keep their subscribers (heartbeats continue) and retry
  with back-off, continuing from the last id they delivered; ``publish`` raises
  ``BrokerError``.

The ``redis`` package is imported here only, so it is needed only with this broker.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from typing import Any

import redis

from ..concurrency import current as current_concurrency
from ..event import Event, data_text
from ..mailbox import Mailbox
from .base import Broker, BrokerError, Subscription, reset_event

__all__ = ["RedisBroker"]

log = logging.getLogger("flask_sse_stream.redis")

BLOCK_MS = 5000  # how long one XREAD waits; also bounds how long an idle reader lingers
READ_COUNT = 512  # entries per XREAD
MAX_BACKOFF = 2.0
COMMAND_CONNECTIONS = 32  # per process and broker, shared by publishes and replays

_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


def _parse_id(entry_id: str) -> tuple[int, int] | None:
    ms, _, seq = entry_id.partition("-")
    if not (ms.isdigit() and seq.isdigit() and len(ms) < 20 and len(seq) < 20):
        return None
    return int(ms), int(seq)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _encode_entry(entry_id: str, fields: dict[Any, Any]) -> bytes:
    get = fields.get
    data = get(b"d")
    event = get(b"e")
    retry = get(b"r")
    return Event(
        None if data is None else _text(data),
        event=None if event is None else _text(event),
        id=entry_id,
        retry=None if retry is None else int(retry),
    ).encode()


def command_client(url: str, *, connect_timeout: float = 2.0, timeout: float = 5.0) -> Any:
    """A client for short commands. Its pool is bounded and *blocking*: a burst of
    requests waits for a free connection instead of failing with "Too many connections"
    (redis-py's default pool refuses past 100)."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=COMMAND_CONNECTIONS, timeout=timeout,
        socket_connect_timeout=connect_timeout, socket_timeout=timeout,
    )
    # Any: redis-py's own hints change between releases (and with decode_responses)
    return redis.Redis(connection_pool=pool)


def blocking_client(url: str, *, connect_timeout: float = 2.0,
                    timeout: float | None = None) -> Any:
    """A client for long blocking reads (XREAD BLOCK, pub/sub): each reader holds one
    connection for as long as it runs, one per channel (or generation) read here."""
    pool = redis.ConnectionPool.from_url(
        url, max_connections=2**31, socket_connect_timeout=connect_timeout,
        socket_timeout=timeout, socket_keepalive=True,
    )
    return redis.Redis(connection_pool=pool)


class _RedisSubscription(Subscription):
    __slots__ = ("floor", "held", "reader")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reader: _ChannelReader | None = None
        # While its replay runs, live entries wait here as (position, bytes).
        self.held: list[tuple[tuple[int, int], bytes]] | None = None
        # The last replayed position: the reader may still be behind it, so live entries
        # up to it were sent already and are skipped.
        self.floor: tuple[int, int] | None = None


class _ChannelReader:
    """The one XREAD loop of this process for one channel."""

    def __init__(self, broker: RedisBroker, channel: str) -> None:
        self.broker = broker
        self.channel = channel
        self.key = broker.key(channel)
        self.last_id = "0-0"
        self.position: tuple[int, int] = (0, 0)
        self.live: set[_RedisSubscription] = set()  # get every entry as it comes
        self.catching_up: set[_RedisSubscription] = set()  # held back, or behind a floor
        self._snapshot: tuple[_RedisSubscription, ...] | None = ()
        self.running = True
        # Set once the starting request found the stream's end (or failed): a burst of
        # first subscribers waits for one XREVRANGE instead of sending one each.
        self.started = threading.Event()
        self.error: BaseException | None = None

    def __len__(self) -> int:
        return len(self.live) + len(self.catching_up)

    def add(self, sub: _RedisSubscription) -> None:
        """Join (caller holds the broker lock)."""
        sub.reader = self
        if sub.held is not None:
            self.catching_up.add(sub)
        else:
            self.live.add(sub)
            self._snapshot = None

    def remove(self, sub: _RedisSubscription) -> None:
        """Leave (caller holds the broker lock)."""
        self.catching_up.discard(sub)
        if sub in self.live:
            self.live.discard(sub)
            self._snapshot = None

    def go_live(self, sub: _RedisSubscription, held: list[tuple[tuple[int, int], bytes]]
                ) -> None:
        """End ``sub``'s replay (caller holds the broker lock): hand over the held entries
        past its floor; it stays behind the floor until the reader passes it."""
        floor = sub.floor
        for position, chunk in held:
            if floor is None or position > floor:
                sub.deliver(chunk)
        if floor is None or self.position >= floor:
            sub.floor = None
            self.catching_up.discard(sub)
            self.live.add(sub)
            self._snapshot = None

    def run(self) -> None:
        broker = self.broker
        backoff = 0.1
        try:
            while self.running:
                try:
                    response = broker.reader_client.xread(
                        {self.key: self.last_id}, count=READ_COUNT, block=BLOCK_MS
                    )
                    backoff = 0.1
                except _ERRORS as exc:
                    log.warning("redis reader for %r: %s; retrying in %.1fs",
                                self.channel, exc, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                for _key, entries in response or ():
                    self.dispatch(entries)
                # checked after a read, not before: the first subscriber joins right
                # after the reader is started
                with broker.lock:
                    if not len(self):  # nobody left: retire
                        self.running = False
        finally:
            with broker.lock:
                if broker.readers.get(self.channel) is self:
                    del broker.readers[self.channel]

    def dispatch(self, entries: list[tuple[Any, dict[Any, Any]]]) -> None:
        lock = self.broker.lock
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            position = _parse_id(entry_id) or (0, 0)
            chunk = _encode_entry(entry_id, fields)  # once, for every subscriber
            with lock:
                self.last_id, self.position = entry_id, position
                live = self._snapshot
                if live is None:
                    live = self._snapshot = tuple(self.live)
                for sub in tuple(self.catching_up) if self.catching_up else ():
                    if sub.held is not None:
                        sub.held.append((position, chunk))
                    elif sub.floor is None or position > sub.floor:
                        sub.deliver(chunk)
                        sub.floor = None
                        self.catching_up.discard(sub)
                        self.live.add(sub)
                        self._snapshot = None
            for sub in live:
                sub.deliver(chunk)


class RedisBroker(Broker):
    def __init__(
        self,
        url: str,
        *,
        history_size: int = 1000,
        key_prefix: str = "sse:",
        connect_timeout: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        self.history_size = history_size
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.client = command_client(url, connect_timeout=connect_timeout, timeout=timeout)
        self.reader_client = blocking_client(
            url, connect_timeout=connect_timeout, timeout=BLOCK_MS / 1000 + timeout
        )
        self.readers: dict[str, _ChannelReader] = {}
        self.lock = threading.Lock()

    def key(self, channel: str) -> str:
        return self.key_prefix + channel

    def publish(
        self, channel: str, data: Any, event: str | None = None, retry: int | None = None
    ) -> str:
        Event(None, event=event, retry=retry)  # validates the fields before they are stored
        fields: dict[str, str | int] = {}
        if data is not None:
            fields["d"] = data_text(data)
        if event is not None:
            fields["e"] = event
        if retry is not None:
            fields["r"] = retry
        if not fields:
            fields["_"] = ""  # an entry needs a field; this one encodes to an id-only event
        try:
            entry_id = self.client.xadd(
                self.key(channel), fields, maxlen=max(self.history_size, 1), approximate=True
            )
        except _ERRORS as exc:
            raise BrokerError(f"redis unavailable: {exc}") from exc
        return _text(entry_id)

    def _reader_for(self, channel: str) -> _ChannelReader:
        """The channel's running reader, started (from the stream's current end) if none."""
        with self.lock:
            reader = self.readers.get(channel)
            starting = reader is None or not reader.running
            if starting:
                reader = self.readers[channel] = _ChannelReader(self, channel)
        assert reader is not None
        if not starting:
            if not reader.started.wait(self.timeout) or reader.error is not None:
                raise BrokerError(f"redis unavailable: {reader.error or 'timeout'}")
            return reader
        try:
            last = self.client.xrevrange(self.key(channel), count=1)
        except _ERRORS as exc:
            reader.error, reader.running = exc, False
            with self.lock:
                if self.readers.get(channel) is reader:
                    del self.readers[channel]
            reader.started.set()
            raise BrokerError(f"redis unavailable: {exc}") from exc
        if last:
            reader.last_id = _text(last[0][0])
        reader.started.set()
        current_concurrency().spawn(reader.run, contextvars.Context())
        return reader

    def subscribe(
        self, channel: str, mailbox: Mailbox, last_event_id: str | None = None
    ) -> Subscription:
        reader = self._reader_for(channel)
        sub = _RedisSubscription(channel, mailbox, self._unsubscribe)
        if last_event_id is not None:
            sub.held = []
        with self.lock:
            reader.add(sub)
            if last_event_id is None:
                # every entry after the reader's last one reaches this subscription
                sub.cursor = reader.last_id
        if last_event_id is None:
            return sub
        try:
            sub.prelude, sub.floor = self._replay(channel, last_event_id)
        except BaseException:
            self._unsubscribe(sub)
            raise
        sub.cursor = "{}-{}".format(*(sub.floor or (0, 0)))
        with self.lock:
            held, sub.held = sub.held or [], None
            reader.go_live(sub, held)
        return sub

    def _replay(self, channel: str, last_event_id: str) -> tuple[bytes, tuple[int, int] | None]:
        """The prelude after ``last_event_id`` and the id of its last event."""
        position = _parse_id(last_event_id)
        start = last_event_id if position is not None else "-"
        try:
            entries = self._entries_from(channel, start)
            # "0-0" is the position before a stream's first entry (the cursor of a
            # channel that was empty): exact as long as nothing was ever trimmed
            from_start = position == (0, 0) and (
                not entries or self._never_trimmed(channel, len(entries))
            )
            if position is not None and not entries and not from_start:
                # past the stream's end: an id this stream never gave (another server's,
                # or one from the future). Its floor would hold live entries back until
                # the stream's ids pass it; start over like an unknown id instead.
                position, entries = None, self._entries_from(channel, "-")
        except _ERRORS as exc:
            raise BrokerError(f"redis unavailable: {exc}") from exc
        prelude = b""
        if position is None:
            prelude = reset_event(last_event_id, "unknown event id")
        elif entries and _text(entries[0][0]) == last_event_id:
            entries = entries[1:]
        elif not from_start:
            prelude = reset_event(last_event_id, "event id older than the history")
        chunks = [_encode_entry(_text(raw_id), fields) for raw_id, fields in entries]
        last_sent = _parse_id(_text(entries[-1][0])) if entries else position
        return prelude + b"".join(chunks), last_sent

    def _entries_from(self, channel: str, start: str) -> list[tuple[Any, dict[Any, Any]]]:
        """Every entry from ``start`` on, in pages: approximate trimming keeps more than
        ``history_size`` entries, and a replay that stopped at one page would skip the
        rest while its floor lets the subscription go live past them."""
        page_size = self.history_size + 1
        entries: list[tuple[Any, dict[Any, Any]]] = []
        while True:
            page = self.client.xrange(self.key(channel), min=start, max="+", count=page_size)
            entries += page
            if len(page) < page_size:
                return entries
            start = "(" + _text(page[-1][0])

    def _never_trimmed(self, channel: str, count: int) -> bool:
        try:
            info = self.client.xinfo_stream(self.key(channel))
        except redis.ResponseError:  # no such key, or a server without entries-added
            return False
        return bool(info.get("entries-added") == count)

    def _unsubscribe(self, sub: Subscription) -> None:
        assert isinstance(sub, _RedisSubscription)
        with self.lock:
            if sub.reader is not None:
                sub.reader.remove(sub)

    def subscriber_counts(self) -> dict[str, int]:
        with self.lock:
            return {name: len(r) for name, r in self.readers.items() if len(r)}

    def close(self) -> None:
        with self.lock:
            for reader in self.readers.values():
                reader.running = False
        self.client.close()
        self.reader_client.close()
